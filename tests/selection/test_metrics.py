"""The metric registry (search.metric): scikit-learn's figures, directions, paired units, minimised studies, flat answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from sweep.config.common import METRIC_TARGETS
from sweep.config.common import Metric as MetricName
from sweep.selection.flat import flat_reason
from sweep.selection.metrics import BOOTSTRAP, REGISTRY, bootstrap_indices, replicates
from sweep.selection.paired import paired_diff
from sweep.selection.rules import choose, select
from sweep.selection.scores import ScoreTable, TrialScore

RNG = np.random.default_rng(0)
Y_CLASS = RNG.integers(0, 2, 300)
LOGITS = RNG.normal(size=(300, 2)) + np.eye(2)[Y_CLASS] * 0.8
Y_REAL = RNG.normal(size=300)
PRED = (Y_REAL + RNG.normal(scale=0.5, size=300))[:, None]


def test_every_config_metric_is_one_registry_entry_with_the_same_targets() -> None:
    assert set(REGISTRY) == set(MetricName.__args__) == set(METRIC_TARGETS)
    assert {m: REGISTRY[m].target for m in REGISTRY} == METRIC_TARGETS


@pytest.mark.parametrize(("name", "expected"), [
    ("accuracy", skm.accuracy_score(Y_CLASS, LOGITS.argmax(1))),
    ("balanced-accuracy", skm.balanced_accuracy_score(Y_CLASS, LOGITS.argmax(1))),
    ("macro-f1", skm.f1_score(Y_CLASS, LOGITS.argmax(1), average="macro")),
    ("log-loss", skm.log_loss(Y_CLASS, np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True))),
    ("auroc", skm.roc_auc_score(Y_CLASS, LOGITS[:, 1] - LOGITS[:, 0])),
])
def test_classification_metrics_are_scikit_learns(name: str, expected: float) -> None:
    assert REGISTRY[name].score(Y_CLASS, LOGITS) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("name", "expected"), [
    ("rmse", math.sqrt(skm.mean_squared_error(Y_REAL, PRED[:, 0]))),
    ("mae", skm.mean_absolute_error(Y_REAL, PRED[:, 0])),
    ("r2", skm.r2_score(Y_REAL, PRED[:, 0])),
])
def test_regression_metrics_are_scikit_learns(name: str, expected: float) -> None:
    assert REGISTRY[name].score(Y_REAL, PRED) == pytest.approx(expected, rel=1e-9)


def test_directions_losses_and_errors_are_minimised() -> None:
    assert {m.name for m in REGISTRY.values() if m.direction == "minimize"} == {"log-loss", "rmse", "mae"}


@pytest.mark.parametrize("name", [m for m in REGISTRY if REGISTRY[m].per_example is not None])
def test_a_mean_metric_is_the_mean_of_its_per_example_values(name: str) -> None:
    m = REGISTRY[name]
    y, out = (Y_CLASS, LOGITS) if m.target == "classes" else (Y_REAL, PRED)
    assert m.per_example(y, out).mean() == pytest.approx(m.score(y, out), rel=1e-9)


def test_bootstrap_indices_are_one_set_per_study_and_replicates_score_each_resample() -> None:
    a, b = bootstrap_indices(300, 0), bootstrap_indices(300, 0)
    assert a.shape == (BOOTSTRAP, 300) and (a == b).all() and not (a == bootstrap_indices(300, 1)).all()
    reps = replicates(REGISTRY["rmse"], Y_REAL, PRED, a[:3])
    assert reps[1] == pytest.approx(math.sqrt(np.mean((Y_REAL[a[1]] - PRED[a[1], 0]) ** 2)))


def test_paired_replicates_se_is_the_std_of_their_differences() -> None:
    best, other = np.array([1.0, 2.0, 4.0, 3.0]), np.array([0.5, 1.0, 3.0, 3.5])
    diff, se, dof = paired_diff(tuple(best), tuple(other), best_mean=2.5, mean=2.0, best_se=1, se=1, replicates=True)
    assert (diff, dof) == (0.5, None)
    assert se == pytest.approx(np.std(best - other, ddof=1))  # not over sqrt(replicates): each is a whole score


def test_a_minimised_metric_picks_the_smallest_value_and_its_curve_in_its_own_units() -> None:
    lams = np.geomspace(1e-4, 1, 9)
    rmse = 0.6 + 0.1 * (np.log10(lams) + 1) ** 2  # lowest at lambda 0.1
    scores = [TrialScore(i, float(lam), float(v), 0.01, sign=-1) for i, (lam, v) in enumerate(zip(lams, rmse, strict=True))]
    assert choose(scores, "min").lam == pytest.approx(0.1)
    sel = select(scores)
    assert sel.picks["min"].val_acc == pytest.approx(0.6)
    assert sel.smooth is not None and min(sel.smooth.mean) == pytest.approx(sel.smooth.acc)
    assert sel.smooth.lam == pytest.approx(0.1, rel=0.3)
    assert all(lo <= hi for lo, hi in zip(sel.smooth.lower, sel.smooth.upper, strict=True))
    # 1se: the largest lambda within one SE above the smallest RMSE
    assert choose(scores, "1se").lam == pytest.approx(0.1)


def test_flat_answers() -> None:
    same = [TrialScore(i, 10.0 ** -i, 0.9, 0.01, predicted=1) for i in range(1, 5)]
    assert "every complete trial scores 0.9000" in flat_reason(ScoreTable(same))
    one_class = [TrialScore(0, 1e-3, 0.91, 0.001, predicted=1), TrialScore(1, 1e-2, 0.5, 0.001, predicted=2)]
    assert "predicts one class" in flat_reason(ScoreTable(one_class))
    apart = [TrialScore(0, 1e-3, 0.95, 0.001, predicted=2), TrialScore(1, 1e-2, 0.5, 0.001, predicted=2)]
    assert flat_reason(ScoreTable(apart)) is None
    close = [TrialScore(0, 1e-3, 0.95, 0.05), TrialScore(1, 1e-2, 0.94, 0.05)]
    assert "no complete trial is significantly worse" in flat_reason(ScoreTable(close))
    assert select(close).flat == flat_reason(ScoreTable(close))
