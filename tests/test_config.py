from __future__ import annotations

import json
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


def test_the_metric_defaults_to_the_losss_and_a_stored_config_without_the_new_keys_reads_as_before() -> None:
    assert config.validate({"name": "x"}, source="t").metric == "accuracy"
    regression = {"name": "x", "data": {"factory": "a.b:c"}, "train": {"loss": "mse"}}
    assert config.validate(regression, source="t").metric == "rmse"
    old = config.validate({"name": "x"}, source="t").model_dump(mode="json")
    for section, key in (("train", "loss"), ("train", "label_smoothing"), ("train", "class_weights"), ("search", "metric")):
        del old[section][key]
    assert config.from_json(__import__("json").dumps(old)) == config.validate({"name": "x"}, source="t")


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"loss": "mse"}, "data": {"factory": "a.b:c"}, "search": {"metric": "accuracy"}},
     "search.metric = 'accuracy' scores class labels but train.loss = 'mse' trains on real-valued targets; "
     "choose one of rmse, mae, r2"),
    ({"search": {"metric": "r2"}}, "choose one of accuracy, balanced-accuracy, macro-f1, log-loss, auroc"),
    ({"train": {"loss": "mse"}}, "needs real-valued targets, and data.dataset = 'mnist-sample' holds class labels"),
    ({"train": {"loss": "mse", "label_smoothing": 0.1}, "data": {"factory": "a.b:c"}}, "takes neither"),
    ({"train": {"class_weights": [1.0, -1.0]}}, "one weight >= 0 per class"),
    ({"train": {"loss": "hinge"}}, "train.loss"),
    ({"search": {"metric": "auroc", "validation": "evidence"}}, "the Laplace evidence"),
])
def test_losses_and_metrics_are_checked_in_one_line(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^t: ") as err:
        config.validate({"name": "x", **raw}, source="t")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"optimizer": "adamw"}, "t: train: optimizer 'adamw' decays weights by lr*lambda outside the gradient "
         "(decoupled), penalty 'l2' adds lambda*w to the gradient (coupled, Adam's weight_decay): set penalty = "
         "'l2-decoupled' for AdamW, or optimizer = 'adam' for Adam + L2; see the README's study file reference"),
        ({"optimizer": "adam", "momentum": 0.9}, "t: train: momentum = 0.9 does nothing with optimizer 'adam'; it "
         "applies to rmsprop, sgd: remove it or choose one of those; see the README's study file reference"),
        ({"betas": [0.9, 0.99]}, "t: train: betas = (0.9, 0.99) does nothing with optimizer 'sgd'; it applies to "
         "adam, adamax, adamw, nadam, radam: remove it or choose one of those; see the README's study file reference"),
        ({"warmup_epochs": 1}, "t: train: warmup_epochs = 1.0 does nothing with schedule 'constant'; it applies to "
         "warmup-cosine: remove it or choose one of those; see the README's study file reference"),
        ({"schedule": "step"}, "t: train: schedule 'step' needs step_size (epochs between two cuts of the learning "
         "rate), got none; see the README's study file reference"),
        ({"nesterov": True}, "t: train: nesterov = true needs momentum > 0, got momentum = 0; set momentum (e.g. 0.9); "
         "see the README's study file reference"),
        ({"schedule": "warmup-cosine", "warmup_epochs": 5}, "t: train: warmup_epochs must be below epochs (5), got "
         "5.0; see the README's study file reference"),
        ({"optimizer": "lbfgs"}, "t: train.optimizer: Input should be 'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', "
         "'adamax', 'nadam', 'radam', 'adadelta' or 'rprop' (given: 'lbfgs'); see the README's study file reference"),
    ],
)
def test_recipe_keys_that_do_not_apply_are_refused(train: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.validate({"name": "x", "train": train}, source="t")
    assert str(info.value) == message


def test_recipe_registry_names_are_the_keys_a_study_may_write() -> None:
    from typing import get_args

    from sweep.config import recipes
    assert set(get_args(recipes.Optimizer)) == set(recipes.OPTIMIZERS)
    assert set(get_args(recipes.Schedule)) == set(recipes.SCHEDULES)
    assert set().union(*(s.keys for s in recipes.OPTIMIZERS.values())) == recipes.OPTIMIZER_KEYS
    assert set().union(*recipes.SCHEDULES.values()) == recipes.SCHEDULE_KEYS


def test_a_stored_config_without_the_recipe_keys_reads_as_before() -> None:
    """A config JSON written before train.optimizer existed: l2-decoupled was AdamW (its momentum unread), the rest SGD."""
    cfg = config.validate({"name": "x"}, source="t")
    stored = json.loads(cfg.to_json())
    new_keys = ("optimizer", "nesterov", "betas", "eps", "schedule", "step_size", "gamma", "warmup_epochs",
                "clip_grad_norm")
    for key in new_keys:
        del stored["train"][key]
    old = config.from_json(json.dumps(stored))
    assert old == cfg and old.train.optimizer == "sgd" and old.train.seed_recipe
    stored["train"] |= {"penalty": "l2-decoupled", "momentum": 0.9}
    adamw = config.from_json(json.dumps(stored)).train
    assert (adamw.optimizer, adamw.momentum, adamw.schedule, adamw.clip_grad_norm) == ("adamw", 0.0, "constant", None)
    assert config.from_json(config.StudyConfig.model_validate(stored).to_json()).train == adamw
    # Written out, the key is explicit, and a new study may still name adam with the decoupled decay
    assert config.validate({"name": "x", "train": {"penalty": "l2-decoupled", "optimizer": "adam"}},
                           source="t").train.optimizer == "adam"


def test_marglik_trains_plain_sgd_only() -> None:
    raw = {"name": "x", "search": {"sampler": "marglik", "n_trials": 1, "batch": 1}, "train": {"schedule": "cosine"}}
    with pytest.raises(ConfigError, match=r"search.sampler = 'marglik' trains with plain SGD at a constant train.lr"):
        config.validate(raw, source="t")


def test_data_subset_is_a_fraction_or_a_whole_count_and_absent_in_older_configs() -> None:
    assert config.validate({"name": "x"}, source="t").data.subset is None  # the whole training set, as before
    assert config.validate({"name": "x", "data": {"subset": 0.1}}, source="t").data.subset == 0.1
    assert config.validate({"name": "x", "data": {"subset": 6000}}, source="t").data.subset == 6000
    for bad, words in [(0, "greater than 0"), (1.5, "a fraction in (0, 1) or a whole count")]:
        with pytest.raises(ConfigError, match=re.escape(words)) as info:
            config.validate({"name": "x", "data": {"subset": bad}}, source="t")
        assert "\n" not in str(info.value)


def test_data_stream_is_a_factorys_and_absent_in_older_configs() -> None:
    assert config.validate({"name": "x"}, source="t").data.stream == "auto"  # a stored config without it reads as before
    got = config.validate({"name": "x", "data": {"factory": "a.b:c", "stream": "always"}}, source="t")
    assert got.data.stream == "always"
    with pytest.raises(ConfigError) as info:
        config.validate({"name": "x", "data": {"stream": "never"}}, source="t")
    assert str(info.value) == ("t: data: data.stream = 'never' applies to a data.factory's torch Datasets; the named "
                               "datasets are always loaded: remove data.stream, or set data.factory; see the README's "
                               "study file reference")
    with pytest.raises(ConfigError, match=r"data.stream: Input should be 'auto', 'always' or 'never' \(given: 'yes'\)"):
        config.validate({"name": "x", "data": {"factory": "a.b:c", "stream": "yes"}}, source="t")
