"""The transfer rules on hand-made numbers, and ``sweep best --for`` / ``best_lambda(for_run=)`` on a run study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import sweep
from sweep.cli import main
from sweep.errors import ConfigError
from sweep.selection.transfer import DEFAULT_RULE, REGISTRY, Run, Transferred, parse_for, target_run, tau_epoch, transfer

SRC = Run(n_train=6000, epochs=20, batch_size=64, lr=0.1)


def test_tau_epoch_is_batch_over_lr_lambda_n() -> None:
    # 64 / (0.1 * 1e-3 * 6000) = 106.67 epochs; no decay is an infinite timescale
    assert tau_epoch(1e-3, SRC) == pytest.approx(64 / 0.6)
    assert tau_epoch(0.0, SRC) == math.inf


def test_each_rule_scales_lambda_as_its_paper_says() -> None:
    ten_times_data = Run(n_train=60000, epochs=20, batch_size=64, lr=0.1)
    out = transfer(2e-3, SRC, ten_times_data)
    assert out == {"reuse": 2e-3, "tau-epoch": pytest.approx(2e-4), "normalized": pytest.approx(2e-3 / math.sqrt(10))}
    # tau-epoch keeps tau_epoch fixed across any change of n_train, batch size and lr; epochs do not enter it
    other = Run(n_train=60000, epochs=5, batch_size=256, lr=0.05)
    moved = transfer(2e-3, SRC, other)["tau-epoch"]
    assert tau_epoch(moved, other) == pytest.approx(tau_epoch(2e-3, SRC))
    assert moved == pytest.approx(2e-3 * (256 / 0.05 / 60000) / (64 / 0.1 / 6000))
    # normalized: sqrt(batch / (n * epochs)); 4x the batch and a quarter of the epochs -> 4x lambda
    assert transfer(1e-3, SRC, Run(6000, 5, 256, 0.1))["normalized"] == pytest.approx(4e-3)
    # the same run: every rule keeps lambda
    assert transfer(1e-3, SRC, SRC) == {name: pytest.approx(1e-3) for name in REGISTRY}


def test_the_plausible_range_moves_by_the_rule_s_factor() -> None:
    moved = Transferred.of(2e-3, (1e-3, 4e-3), SRC, Run(60000, 20, 64, 0.1))
    assert moved.ranges["tau-epoch"] == (pytest.approx(1e-4), pytest.approx(4e-4))
    assert moved.ranges["reuse"] == (1e-3, 4e-3) and moved.default == DEFAULT_RULE in REGISTRY
    record = moved.as_dict()
    assert record["lambda_for"] == moved.lambdas[DEFAULT_RULE]
    assert record["transfer"]["tau-epoch"]["tau_epoch"] == pytest.approx(tau_epoch(2e-3, SRC))
    assert Transferred.of(2e-3, (None, None), SRC, SRC).ranges["normalized"] == (None, None)


def test_for_parses_any_subset_of_the_keys_and_refuses_bad_ones_in_one_line() -> None:
    assert parse_for("n_train=60000, epochs=20,batch_size=128,lr=0.05") == {
        "n_train": 60000, "epochs": 20, "batch_size": 128, "lr": 0.05}
    assert target_run(SRC, parse_for("lr=0.05")) == Run(6000, 20, 64, 0.05)
    for text, words in [("width=3", "keys n_train"), ("n_train", "KEY=VALUE"), ("lr=fast", "must be a number"),
                        ("lr=1,lr=2", "twice"), ("", "at least one")]:
        with pytest.raises(ConfigError, match=words) as err:
            parse_for(text)
        assert "\n" not in str(err.value)
    for changes, words in [({"epochs": 1.5}, "whole number"), ({"lr": -1.0}, "positive"), ({"n_train": 0.0}, "positive"),
                           ({"depth": 2.0}, "unknown run key")]:
        with pytest.raises(ConfigError, match=words):
            target_run(SRC, changes)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny study on 30% of the shipped sample (data.subset), run through the CLI and refit."""
    folder = tmp_path_factory.mktemp("transfer")
    (folder / "t.toml").write_text('name = "t"\n[data]\nholdout = 300\nsubset = 0.3\n'
                                   '[train]\nepochs = 2\nlr = 0.1\ndevice = "cpu"\n'
                                   '[search]\nsampler = "random"\nn_trials = 3\npruner = "none"\n')
    url = f"sqlite:///{folder / 's.db'}"
    out = CliRunner().invoke(main, ["run", str(folder / "t.toml"), "--storage", url], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    # 30% of the sample's 4,000 training digits is the refit's training set, and tau_epoch follows from it
    assert "; tau_epoch " in out.stdout and "(n_train 1200)" in out.stdout
    return url


def _best(url: str, *args: str) -> str:
    out = CliRunner().invoke(main, ["best", "t", "--storage", url, *args], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.stdout


def test_best_gives_tau_epoch_in_json_and_env(tuned: str) -> None:
    rec = json.loads(_best(tuned, "--format", "json"))
    assert rec["n_train"] == 1200
    assert rec["tau_epoch"] == pytest.approx(64 / (0.1 * rec["lambda"] * 1200))
    env = dict(line.split("=", 1) for line in _best(tuned, "--format", "env").split())
    assert float(env["SWEEP_TAU_EPOCH"]) == rec["tau_epoch"] and env["SWEEP_N_TRAIN"] == "1200"
    shown = CliRunner().invoke(main, ["show", "t", "--storage", tuned, "--format", "json"], catch_exceptions=False)
    rows = json.loads(shown.stdout)
    assert [r["tau_epoch"] for r in rows] == [pytest.approx(64 / (0.1 * r["lambda"] * 1200)) for r in rows]
    table = CliRunner().invoke(main, ["show", "t", "--storage", tuned], catch_exceptions=False).stdout.splitlines()
    assert table[0].split()[3] == "tau_epoch" and [float(x.split()[3]) for x in table[1:]] == [
        pytest.approx(r["tau_epoch"], rel=1e-3) for r in rows]


def test_best_for_answers_in_every_format_and_from_python(tuned: str) -> None:
    lam = json.loads(_best(tuned, "--format", "json"))["lambda"]
    rec = json.loads(_best(tuned, "--for", "n_train=12000,lr=0.05", "--format", "json"))
    assert rec["lambda"] == lam and rec["from"] == {"n_train": 1200, "epochs": 2, "batch_size": 64, "lr": 0.1}
    assert rec["for"] == {"n_train": 12000, "epochs": 2, "batch_size": 64, "lr": 0.05}
    # tau-epoch: 10x the data and half the lr -> lambda x 1/10 x 2; normalized: x sqrt(1/10); reuse: unchanged
    assert rec["transfer"]["tau-epoch"]["lambda"] == pytest.approx(lam * 0.2)
    assert rec["transfer"]["normalized"]["lambda"] == pytest.approx(lam / math.sqrt(10))
    assert rec["transfer"]["reuse"]["lambda"] == lam
    assert rec["transfer"]["tau-epoch"]["plausible_high"] == pytest.approx(rec["plausible_high"] * 0.2)
    assert rec["default_transfer"] == DEFAULT_RULE and rec["lambda_for"] == rec["transfer"][DEFAULT_RULE]["lambda"]
    env = dict(line.split("=", 1) for line in _best(tuned, "--for", "n_train=12000,lr=0.05", "--format", "env").split())
    assert float(env["SWEEP_LAMBDA_TAU_EPOCH"]) == rec["transfer"]["tau-epoch"]["lambda"]
    assert float(env["SWEEP_LAMBDA"]) == rec["lambda_for"] and env["SWEEP_TRANSFER"] == DEFAULT_RULE
    # --format value: the default rule's lambda alone, for $(sweep best NAME --for ... --format value)
    assert float(_best(tuned, "--for", "n_train=12000,lr=0.05", "--format", "value")) == rec["lambda_for"]
    lines = _best(tuned, "--for", "n_train=12000,lr=0.05").splitlines()
    assert lines[0].startswith(f"lambda {lam:.4g} (rule min) of study t, carried to n_train=12000, epochs=2")
    assert [line.split()[0] for line in lines[1:]] == list(REGISTRY)
    assert sum("(default)" in line for line in lines) == 1 and DEFAULT_RULE in next(x for x in lines if "(default)" in x)
    assert sweep.best_lambda("t", storage=tuned, for_run={"n_train": 12000, "lr": 0.05},
                             transfer="tau-epoch") == rec["transfer"]["tau-epoch"]["lambda"]
    factor = {"reuse": 1, "tau-epoch": 0.1, "normalized": 1 / math.sqrt(10)}[DEFAULT_RULE]  # 10x the data, same lr
    assert sweep.best_lambda("t", storage=tuned, for_run={"n_train": 12000}) == pytest.approx(lam * factor)
    with pytest.raises(ConfigError, match="transfer must be one of"):
        sweep.best_lambda("t", storage=tuned, for_run={"n_train": 12000}, transfer="linear")


def test_best_for_refuses_a_bad_key_in_one_line(tuned: str) -> None:
    out = CliRunner().invoke(main, ["best", "t", "--storage", tuned, "--for", "widht=3"])
    assert out.exit_code != 0 and out.output.count("\n") == 1 and "keys n_train, epochs, batch_size, lr" in out.output


def test_best_for_a_study_refit_before_sizes_were_stored_says_how_to_fix(tmp_path: Path) -> None:
    legacy = f"sqlite:///{Path(__file__).resolve().parents[1] / 'data' / 'legacy-0.2.db'}"
    copy = tmp_path / "legacy.db"
    copy.write_bytes(Path(legacy.removeprefix("sqlite:///")).read_bytes())
    out = CliRunner().invoke(main, ["best", "legacy-holdout", "--storage", f"sqlite:///{copy}", "--for", "n_train=100"])
    assert out.exit_code != 0 and "sweep refit legacy-holdout" in out.output and out.output.count("\n") == 1
