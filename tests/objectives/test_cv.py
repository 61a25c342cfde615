"""k-fold CV and repeated-holdout objectives: folds, stored scores, SEs, pruning across folds, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from sweep import config
from sweep.cli import main
from sweep.config import PARAM
from sweep.errors import ConfigError, DataError
from sweep.objectives.prepared import fold_indices, prepare
from sweep.objectives.scheme import make_objective
from sweep.study import make_pruner
from sweep.training import data

# Fast CV settings: 1 epoch, large batches; the sample's 4,000 training digits in 3 folds.
FAST = {"train": {"epochs": 1, "batch_size": 256}}


def cv_cfg(tiny_cfg, **search: object) -> config.StudyConfig:
    return tiny_cfg(name="cv", search={"validation": "cv", "folds": 3, **search}, **FAST)


def run_enqueued(cfg: config.StudyConfig, lambdas: list[float]) -> optuna.Study:
    """An in-memory study with the config's pruner, running exactly ``lambdas`` in order."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    for lam in lambdas:
        study.enqueue_trial({PARAM: lam})
    study.optimize(make_objective(cfg, prepare(cfg)), n_trials=len(lambdas))
    return study


def test_folds_are_stratified_disjoint_and_cover_the_training_set() -> None:
    labels = data.load("mnist-sample").train.y
    n, k = int(labels.shape[0]), 5
    folds = fold_indices(labels, folds=k, seed=0)
    assert len(folds) == k
    seen = torch.cat([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(n))  # validation folds are disjoint and cover everything
    per_class = torch.bincount(labels, minlength=10)
    for fit, val in folds:
        assert not set(fit.tolist()) & set(val.tolist())
        assert len(fit) + len(val) == n
        # stratified: each class's share of a validation fold is its share of the whole set, to one example
        assert torch.all((torch.bincount(labels[val], minlength=10) - per_class / k).abs() <= 1)
    again = fold_indices(labels, folds=k, seed=0)
    other = fold_indices(labels, folds=k, seed=1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_more_folds_than_a_class_has_examples_is_one_line() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3)
    with pytest.raises(DataError) as info:
        fold_indices(labels, folds=4, seed=0)
    assert str(info.value) == (
        "search.folds = 4 but the smallest class of the training set has 3 examples; set search.folds to at most 3"
    )


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"folds": 1}, "search.folds: Input should be greater than or equal to 2 (given: 1)"),
        ({"repeats": 0}, "search.repeats: Input should be greater than or equal to 1 (given: 0)"),
        ({"rule": "2se"}, "search.rule: Input should be 'min', '1se', '1se-paired' or 'smooth' (given: '2se')"),
        ({"stop": "early"}, "search.stop: Input should be 'n_trials' or 'resolved' (given: 'early')"),
        ({"validation": "kfold"}, "search.validation: Input should be 'holdout', 'cv' or 'evidence' (given: 'kfold')"),
    ],
)
def test_config_checks(tiny_cfg, search: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_cfg(search=search)
    assert str(info.value) == f"test: {message}; see the README's study file reference"


def test_cv_trial_stores_k_times_r_scores_with_common_random_numbers(tiny_cfg) -> None:
    cfg = cv_cfg(tiny_cfg, repeats=2)
    study = run_enqueued(cfg, [1e-4, 1e-4, 1e-2])
    a, b, c = study.trials
    scores = a.user_attrs["fold_scores"]
    assert len(scores) == 3 * 2
    assert a.value == pytest.approx(np.mean(scores)) and a.user_attrs["val_acc"] == a.value
    assert a.user_attrs["val_std"] == pytest.approx(np.std(scores, ddof=1))
    fold_means = np.asarray(scores).reshape(3, 2).mean(axis=1)  # fold-major: the seeds of a fold are averaged first
    assert a.user_attrs["val_se"] == pytest.approx(np.std(fold_means, ddof=1) / math.sqrt(3))
    assert a.user_attrs["val_se"] > 0
    assert 0 < a.user_attrs["train_acc"] <= 1
    assert (a.user_attrs["folds"], a.user_attrs["repeats"], a.user_attrs["split_seed"]) == (3, 2, 0)
    assert a.user_attrs["seeds"] == [0, 1] and a.user_attrs["n_val"] == 4000
    # the running mean after each fold, at step = fold index; the last one is the trial's value
    assert sorted(a.intermediate_values) == [0, 1, 2]
    assert a.intermediate_values[0] == pytest.approx(np.mean(scores[:2]))
    assert a.intermediate_values[2] == pytest.approx(a.value)
    # the same folds and seeds for every lambda: the same lambda scores identically, another differently
    assert b.user_attrs["fold_scores"] == scores
    assert c.user_attrs["fold_scores"] != scores
    assert len(a.user_attrs["history"]) == 1  # the per-epoch curve, averaged over the 6 fits


def test_pruning_stops_a_bad_lambda_before_its_last_fold(tiny_cfg) -> None:
    # MedianPruner over running fold means (5 startup trials, earliest prune after the second fold).
    # lambda = 10 at lr 0.1 multiplies the weights by 1 - lr*lambda = 0 every step: chance accuracy.
    cfg = cv_cfg(tiny_cfg, pruner="median", lambda_high=10.0)
    good = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    study = run_enqueued(cfg, [*good, 10.0])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED]
    bad = study.trials[-1]
    assert bad.params[PARAM] == 10.0
    assert sorted(bad.intermediate_values) == [0, 1]  # stopped after 2 of 3 folds
    assert len(bad.user_attrs["fold_scores"]) == 2
    assert bad.user_attrs["val_acc"] < 0.3 < min(t.value for t in study.trials[:5])


def test_holdout_repeats_average_seeds_and_take_their_se(tiny_cfg) -> None:
    cfg = tiny_cfg(name="rep", search={"repeats": 3}, **FAST)
    (t,) = run_enqueued(cfg, [1e-4]).trials
    scores = t.user_attrs["fold_scores"]
    assert len(scores) == 3 and len(set(scores)) > 1  # three seeds, three different fits
    assert t.value == pytest.approx(np.mean(scores))
    assert t.user_attrs["val_se"] == pytest.approx(np.std(scores, ddof=1) / math.sqrt(3))
    assert t.user_attrs["val_se_binomial"] == pytest.approx(math.sqrt(t.value * (1 - t.value) / 1000))
    assert sorted(t.intermediate_values) == [1]  # epochs of the first seed, as a plain holdout trial
    assert t.user_attrs["seeds"] == [0, 1, 2] and t.user_attrs["validation"] == "holdout"


def test_plain_holdout_keeps_the_binomial_se(tiny_cfg) -> None:
    (t,) = run_enqueued(tiny_cfg(name="one", **FAST), [1e-4]).trials
    assert t.user_attrs["val_se"] == pytest.approx(math.sqrt(t.value * (1 - t.value) / 1000))
    assert "fold_scores" not in t.user_attrs


STUDY = """
name = "{name}"
[data]
dataset = "mnist-sample"
[train]
epochs = 1
batch_size = 256
lr = 0.1
device = "cpu"
[search]
sampler = "grid"
n_trials = 3
lambda_low = 1e-4
lambda_high = 1e-1
pruner = "none"
validation = "cv"
folds = 3
rule = "1se"
"""


def test_sweep_run_and_best_1se_json(tmp_path: Path) -> None:
    path = tmp_path / "cv.toml"
    path.write_text(STUDY.format(name="tiny-cv"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(path), "--storage", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "(trial " in result.stdout and "rule 1se" in result.stdout
    out = runner.invoke(main, ["best", "tiny-cv", "--storage", url, "--rule", "1se", "--format", "json"])
    assert out.exit_code == 0, out.output
    rec = json.loads(out.stdout)
    assert rec["rule"] == "1se" and rec["validation"] == "cv"
    assert rec["lambda"] == rec["lambda_1se"] >= rec["lambda_min"]
    for key in ("val_acc", "val_se", "val_acc_min", "val_se_min", "val_acc_1se", "val_se_1se"):
        assert isinstance(rec[key], float), key
    assert rec["val_acc_1se"] >= rec["val_acc_min"] - rec["val_se_min"]
    assert 0.5 < rec["test_acc"] <= 1  # the study's rule (1se) was refit and tested
    by_default = json.loads(runner.invoke(main, ["best", "tiny-cv", "--storage", url, "--format", "json"]).stdout)
    assert by_default == rec  # without --rule: the study's own search.rule (1se here)
    by_min = json.loads(runner.invoke(main, ["best", "tiny-cv", "--storage", url, "--rule", "min", "--format", "json"]).stdout)
    assert (by_min["rule"], by_min["lambda"]) == ("min", rec["lambda_min"])
    if by_min["lambda"] != rec["lambda"]:
        assert by_min["test_acc"] is None  # only the configured rule is refit


@pytest.mark.parametrize("name", ["mnist-cv", "mnist-cv-bayes", "sample-cv"])
def test_shipped_cv_study_files_are_valid(name: str) -> None:
    cfg = config.load(Path(__file__).parents[2] / "studies" / f"{name}.toml")
    assert cfg.name == name and cfg.search.validation == "cv"


def test_shipped_sample_cv_study_runs_end_to_end(tmp_path: Path) -> None:
    """The CI run of a real CV study: studies/sample-cv.toml on the shipped mnist-sample."""
    url = f"sqlite:///{tmp_path / 'cv.db'}"
    study = Path(__file__).parents[2] / "studies" / "sample-cv.toml"
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(study), "--storage", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rec = json.loads(runner.invoke(main, ["best", "sample-cv", "--storage", url, "--rule", "1se", "--format", "json"]).stdout)
    assert rec["rule"] == "1se" and rec["lambda"] == rec["lambda_1se"] >= rec["lambda_min"]
    assert all(isinstance(rec[k], float) for k in ("val_acc_min", "val_se_min", "val_acc_1se", "val_se_1se", "test_acc"))
