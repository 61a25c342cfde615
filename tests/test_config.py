from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweep import config
from sweep.errors import ConfigError

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_shipped_study_files_validate(path: Path) -> None:
    cfg = config.load(path)
    assert cfg.name == path.stem
    assert 0 < cfg.search.lambda_low < cfg.search.lambda_high


def test_defaults_are_the_seed_trial() -> None:
    cfg = config.validate({"name": "x"}, source="t")
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.penalty) == (0.01, 64, 5, "l2")
    assert cfg.model.hidden == 128
    assert (cfg.search.lambda_low, cfg.search.lambda_high) == (1e-5, 1e-2)


def test_overrides_are_typed_and_validated() -> None:
    raw = config.apply_overrides({"name": "x"}, ["train.epochs=3", "search.sampler=gp", "train.decay_bias=false"])
    cfg = config.validate(raw, source="t")
    assert (cfg.train.epochs, cfg.search.sampler, cfg.train.decay_bias) == (3, "gp", False)
    with pytest.raises(ConfigError, match=r"^--set: search.n_trials: Input should be greater than or equal to 1"):
        config.validate(config.apply_overrides({"name": "x"}, ["search.n_trials=0"]), source="--set")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "train": {"epoch": 3}}, "t: unknown key 'train.epoch'; see the README's study file reference"),
        ({"name": "x", "extra": {}}, "t: unknown section 'extra'; see the README's study file reference"),
        ({"name": "x", "extra": 1}, "t: unknown key 'extra'; see the README's study file reference"),
        ({"name": "x", "search": {"lambda_low": 0}},
         "t: search.lambda_low: Input should be greater than 0 (given: 0); see the README's study file reference"),
        ({"name": "x", "search": {"lambda_low": 1e-2, "lambda_high": 1e-3}},
         "t: search: lambda_low must be below lambda_high, got 0.01 >= 0.001; see the README's study file reference"),
        ({"name": "x", "search": {"sampler": "cmaes"}},
         "t: search.sampler: Input should be 'tpe', 'gp', 'random', 'qmc', 'grid' or 'marglik' (given: 'cmaes'); "
         "see the README's study file reference"),
        ({"name": "x", "train": {"device": "tpu"}},
         "t: train: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'; see the README's study file reference"),
    ],
)
def test_invalid_configs_give_one_line(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.validate(raw, source="t")
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[train\n")
    with pytest.raises(ConfigError, match=r"bad.toml: malformed TOML: .*line 2.*; fix the file's syntax$"):
        config.load(bad)
    with pytest.raises(ConfigError, match=r"not found; give the path of a .toml file"):
        config.load(tmp_path / "missing.toml")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match=r"^--set expects section.key=value, got 'train.epochs'"):
        config.apply_overrides({}, ["train.epochs"])


def test_diff_names_changed_keys() -> None:
    a = config.validate({"name": "x"}, source="t")
    b = config.validate({"name": "x", "train": {"epochs": 7}, "search": {"seed": 3}}, source="t")
    assert config.diff(a, b) == ["search.seed", "train.epochs"]
    assert config.from_json(a.to_json()) == a


def test_data_subset_is_a_fraction_or_a_whole_count_and_absent_in_older_configs() -> None:
    assert config.validate({"name": "x"}, source="t").data.subset is None  # the whole training set, as before
    assert config.validate({"name": "x", "data": {"subset": 0.1}}, source="t").data.subset == 0.1
    assert config.validate({"name": "x", "data": {"subset": 6000}}, source="t").data.subset == 6000
    for bad, words in [(0, "greater than 0"), (1.5, "a fraction in (0, 1) or a whole count")]:
        with pytest.raises(ConfigError, match=re.escape(words)) as info:
            config.validate({"name": "x", "data": {"subset": bad}}, source="t")
        assert "\n" not in str(info.value)
