"""The shipped examples a user copies (examples/, studies/examples-*.toml, studies/fashion-mnist-cnn.toml), tiny."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from sweep import config
from sweep.cli import main
from sweep.objectives.prepared import prepare
from sweep.training import trainers
from sweep.training.data import DEBIAN_FASHION_MNIST
from sweep.training.fit import fit
from sweep.workers.run import run as run_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "search.n_trials=2", "--set", "search.batch=2", "--set", "search.pruner='none'"]


def run_and_best(study: str, name: str, store: str, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["run", str(ROOT / "studies" / study), "--storage", store, *TINY, *extra])
    assert result.exit_code == 0, result.output
    best = CliRunner().invoke(main, ["best", name, "--storage", store, "--format", "json"])
    assert best.exit_code == 0, best.output
    return json.loads(best.stdout)


def test_digits_example_with_its_own_model_and_data(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # as PYTHONPATH=. from the repository root
    record = run_and_best("examples-digits.toml", "examples-digits", sqlite_url, "--set", "train.epochs=3")
    assert record["test_acc"] > 0.5  # ten classes: chance is 0.1


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_cnn_study(sqlite_url: str, tmp_path: Path) -> None:
    record = run_and_best("fashion-mnist-cnn.toml", "fashion-mnist-cnn", sqlite_url, "--set", "train.epochs=1",
                          "--set", f"data.data_dir='{tmp_path}'", "--set", "train.device='cpu'")
    assert record["test_acc"] > 0.5  # ten classes: chance is 0.1


# The network kinds of examples/networks.py on tiny settings: 2 trials as one population of 2, one epoch,
# 600 digits of the sample as Datasets (400 fit, 200 validate), no refit.
NETWORK_TINY = ["search.n_trials=2", "search.batch=2", "search.pruner='none'", "train.epochs=1", "data.holdout=200",
                "data.factory='examples.networks:mnist_datasets_tiny'"]


def network_study(study: str, url: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> optuna.Study:
    monkeypatch.syspath_prepend(str(ROOT))
    cfg = config.load(ROOT / "studies" / study, [*NETWORK_TINY, *extra])
    return run_study(cfg, url, refit_after=False)


def figures(study: optuna.Study) -> list[tuple]:
    """Every stored figure of every trial, timings left out."""

    def strip(v):  # noqa: ANN001, ANN202
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "seconds"}
        return [strip(x) for x in v] if isinstance(v, list) else v

    return [(t.state, t.params, t.value, t.intermediate_values, strip(t.user_attrs)) for t in study.get_trials()]


def test_a_dropout_batchnorm_cnn_study_run_twice_stores_the_same_figures(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = network_study("examples-cnn-bn-dropout.toml", f"sqlite:///{tmp_path / 'a.db'}", monkeypatch)
    again = network_study("examples-cnn-bn-dropout.toml", f"sqlite:///{tmp_path / 'b.db'}", monkeypatch)
    assert [t.state for t in first.get_trials()] == [TrialState.COMPLETE] * 2
    assert figures(first) == figures(again)
    # each member of the population is its trial alone (to float tolerance): same masks, its own running statistics
    cfg = config.load(ROOT / "studies" / "examples-cnn-bn-dropout.toml", NETWORK_TINY)
    prep = prepare(cfg)
    for t in first.get_trials():
        alone = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=t.params["lambda"], cfg=cfg.train, seed=0,
                    net=prep.net)
        assert t.value is not None and abs(t.value - alone.final.val_acc) <= 2 / len(prep.y_val)


def test_a_gru_study_trains_its_population_member_by_member_with_one_line(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    trainers._TRAITS.clear()
    with caplog.at_level(logging.WARNING, logger="sweep"):
        study = network_study("examples-gru.toml", sqlite_url, monkeypatch)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["population"] for t in study.get_trials()] == [2, 2]
    notes = [r.getMessage() for r in caplog.records if "vmap" in r.getMessage()]
    assert notes == [
        "model.factory = 'examples.networks:gru': torch.func's vmap cannot batch this network (RuntimeError: Batching "
        "rule not implemented for aten::gru.input. We could not generate a fallback.); a population trains member by "
        "member in one process, no faster than search.batch = 1"]


def test_a_transformer_study_with_dropout_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = network_study("examples-transformer.toml", f"sqlite:///{tmp_path / 'a.db'}", monkeypatch)
    again = network_study("examples-transformer.toml", f"sqlite:///{tmp_path / 'b.db'}", monkeypatch)
    assert [t.state for t in first.get_trials()] == [TrialState.COMPLETE] * 2
    assert figures(first) == figures(again)


# Regression: the diabetes study (examples/diabetes.py), mse and rmse, on tiny settings, one trial at a time and as a population.
@pytest.mark.parametrize("batch", [1, 4])
def test_diabetes_regression_study_chooses_by_rmse(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   batch: int) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    name = f"diabetes-{batch}"
    result = CliRunner().invoke(main, ["run", str(ROOT / "studies" / "examples-diabetes.toml"), "--storage", sqlite_url,
                                       "--name", name, "--set", "search.n_trials=4", "--set", f"search.batch={batch}",
                                       "--set", "train.epochs=5"])
    assert result.exit_code == 0, result.output
    assert "validation RMSE" in result.stdout and "test RMSE" in result.stdout
    record = json.loads(CliRunner().invoke(main, ["best", name, "--storage", sqlite_url, "--format", "json"]).stdout)
    assert (record["metric"], record["direction"]) == ("rmse", "minimize")
    assert record["test_acc"] is None and 0 < record["test_score"] < 2  # standardised target: 1.0 predicts the mean
    study = optuna.load_study(study_name=name, storage=sqlite_url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert record["val_score"] == min(t.value for t in done) and record["lambda"] in [t.params["lambda"] for t in done]
    assert all(len(t.user_attrs["val_boot"]) == 200 and t.user_attrs["val_acc"] is None for t in done)
    env = CliRunner().invoke(main, ["best", name, "--storage", sqlite_url, "--format", "env"]).stdout.splitlines()
    assert "SWEEP_METRIC=rmse" in env and f"SWEEP_VAL_SCORE={record['val_score']!r}" in env
    show = CliRunner().invoke(main, ["show", name, "--storage", sqlite_url]).stdout.splitlines()
    assert "val rmse" in show[0] and len(show) == 1 + len(study.trials)
    rows = json.loads(CliRunner().invoke(main, ["show", name, "--storage", sqlite_url, "--format", "json"]).stdout)
    assert [r["val_score"] for r in rows if r["state"] == "complete"] == [t.value for t in done]
    html = tmp_path / "r.html"
    assert CliRunner().invoke(main, ["report", name, "--storage", sqlite_url, "-o", str(html)]).exit_code == 0
    from sweep.report.figures import plot_accuracy_vs_lambda
    from sweep.report.html import load_records

    fig = plot_accuracy_vs_lambda(load_records([name], sqlite_url))
    assert fig.layout.yaxis.title.text == "RMSE" and "Validation RMSE against lambda" in fig.layout.title.text
    (trials,) = [t for t in fig.data if t.meta["role"] == "trials"]
    assert sorted(trials.y) == sorted(t.value for t in done)
    from sweep.report.records import collect_history

    (rec,) = load_records([name], sqlite_url)
    bests = [p.best for p in collect_history(rec)]
    assert bests == sorted(bests, reverse=True) and bests[-1] == record["val_score"]  # the best so far: the smallest


def test_a_linear_model_on_the_diabetes_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    cfg = config.load(ROOT / "studies" / "examples-diabetes.toml", ["model.hidden=[]", "train.epochs=20"])
    prep = prepare(cfg)
    assert [type(m).__name__ for m in prep.net.build(0)] == ["Flatten", "Linear"]
    result = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=1e-3, cfg=cfg.train, net=prep.net)
    assert result.final.val_loss < 0.8  # a linear model explains about half the variance of the standardised target


SEVEN = ["search.n_trials=2", "search.batch=2", "train.epochs=2", "search.lambda_high=1e-3"]


def test_seven_versus_rest_scored_by_balanced_accuracy(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    study = run_study(config.load(ROOT / "studies" / "examples-seven-vs-rest.toml", SEVEN), sqlite_url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and all(t.user_attrs["metric"] == "balanced-accuracy" for t in done)
    assert all(0.5 < t.value <= 1 and t.value < t.user_attrs["val_acc"] for t in done)  # the minority class is harder


def test_seven_versus_rest_underfit_and_scored_by_accuracy_says_its_answer_is_flat(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seed's kind of regime (a low rate, few epochs): every lambda predicts "not a 7", accuracy 0.9000.
    monkeypatch.syspath_prepend(str(ROOT))
    args = ["run", str(ROOT / "studies" / "examples-seven-vs-rest.toml"), "--storage", sqlite_url, "--name", "flat"]
    for kv in [*SEVEN, "search.metric='accuracy'", "train.lr=0.003"]:
        args += ["--set", kv]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    best, flat = result.stdout.strip().splitlines()[-2:]
    assert best.startswith("best lambda ") and "validation accuracy 0.9000" in best
    assert flat == "flat: every complete trial scores 0.9000 (2 complete trials, lambda 1e-05 to 0.001): the pick is a tie-break"
    record = json.loads(CliRunner().invoke(main, ["best", "flat", "--storage", sqlite_url, "--format", "json"]).stdout)
    assert record["flat"] is True and record["flat_reason"] == flat.removeprefix("flat: ")


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("scheme", [["search.validation='cv'", "search.folds=3"], ["search.repeats=2"]], ids=["cv", "repeats"])
def test_diabetes_cv_and_repeats_score_every_fit_by_rmse(sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
                                                         scheme: list[str], batch: int) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    cfg = config.load(ROOT / "studies" / "examples-diabetes.toml",
                      ["search.n_trials=2", f"search.batch={batch}", "train.epochs=2", "search.sampler='grid'", *scheme])
    study = run_study(cfg, sqlite_url, refit_after=False)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and study.direction == optuna.study.StudyDirection.MINIMIZE
    for t in done:
        scores = t.user_attrs["fold_scores"]
        assert len(scores) == (3 if "cv" in scheme[0] else 2) and all(0.3 < s < 3 for s in scores)  # RMSEs, not accuracies
        assert t.value == pytest.approx(sum(scores) / len(scores)) and t.user_attrs["val_score"] == t.value
        assert t.user_attrs["val_acc"] is None and t.user_attrs["metric"] == "rmse"
    assert done[0].value != done[1].value
