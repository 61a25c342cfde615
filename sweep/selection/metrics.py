"""The scores a lambda is chosen by (``search.metric``): one registry entry each, computed with scikit-learn.

Each ``Metric`` knows its direction (a loss or an error is minimised: the Optuna study is created with it),
the targets it scores (class labels or real values; ``train.loss``'s default is the first of its kind), and
how its uncertainty is paired between lambdas (docs/selection.md, docs/metrics.md):

- a mean over validation examples (accuracy, log-loss, mae) has per-example values (``per_example``); the
  paired SE of a difference is ``std(per-example differences) / sqrt(n)``, as for accuracy;
- any other (balanced accuracy, macro-F1, AUROC, RMSE, R^2) is recomputed on ``BOOTSTRAP`` resamples of the
  validation examples, one set of resampled indices shared by every lambda of a study (``bootstrap_indices``),
  so replicate b of two lambdas is scored on the same examples; the paired SE of a difference is the std of
  the replicate differences, and a trial's own SE the std of its replicates.

``epoch`` is the figure pruners read each epoch (intermediate values), in the metric's direction, from what
every trainer measures per epoch (validation loss and accuracy): the metric itself for accuracy and log-loss,
a proxy for the others (docs/metrics.md lists which).

Plain NumPy in, floats out: ``outputs`` are a network's validation outputs (logits (N, classes), or
predictions (N, d)), ``y`` its targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn import metrics as skm

BOOTSTRAP = 200  # resamples of the validation examples behind a bootstrapped metric's SE

Score = Callable[[np.ndarray, np.ndarray], float]  # (targets, outputs) -> the metric
PerExample = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (targets, outputs) -> one value per example


@dataclass(frozen=True)
class Metric:
    """One ``search.metric``."""

    name: str
    label: str  # how figures name it: "validation <label>"
    target: Literal["classes", "values"]
    direction: Literal["maximize", "minimize"]
    score: Score
    per_example: PerExample | None  # None: a bootstrapped metric (not a mean over examples)
    epoch: Callable[[float, float], float]  # (val_loss, val_acc) of an epoch -> the figure pruners read
    epoch_label: str  # what ``epoch`` is, for docs and notes
    # Scored from the predicted class alone (argmax): a network predicting one class scores that class's share
    # whatever lambda, so the flat answer says so. AUROC and log-loss read the probabilities, which still move.
    thresholded: bool = False

    @property
    def sign(self) -> int:
        """+1 when larger is better, -1 when smaller is: the rules compare ``sign * value``."""
        return 1 if self.direction == "maximize" else -1

    @property
    def bootstrapped(self) -> bool:
        return self.per_example is None


def _pred(out: np.ndarray) -> np.ndarray:
    return out.argmax(1)


def _labels(out: np.ndarray) -> np.ndarray:
    return np.arange(out.shape[1])


def _nll(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    return -log_softmax(out, axis=1)[np.arange(y.shape[0]), y]


def _auroc(y: np.ndarray, out: np.ndarray) -> float:
    if out.shape[1] != 2:
        raise ValueError(f"auroc scores two classes, the network has {out.shape[1]} outputs")
    if np.unique(y).size < 2:
        return math.nan  # a resample holding one class only: no ranking to score
    return float(skm.roc_auc_score(y, softmax(out, axis=1)[:, 1]))


def _values(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    return y.reshape(out.shape)


REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy", "classes", "maximize", lambda y, o: float(skm.accuracy_score(y, _pred(o))),
           lambda y, o: (_pred(o) == y).astype(float), lambda loss, acc: acc, "validation accuracy",
           thresholded=True),
    Metric("balanced-accuracy", "balanced accuracy", "classes", "maximize",
           lambda y, o: float(skm.balanced_accuracy_score(y, _pred(o))), None, lambda loss, acc: -loss,
           "minus the validation cross-entropy", thresholded=True),
    Metric("macro-f1", "macro-F1", "classes", "maximize",
           lambda y, o: float(skm.f1_score(y, _pred(o), labels=_labels(o), average="macro", zero_division=0)), None,
           lambda loss, acc: -loss, "minus the validation cross-entropy", thresholded=True),
    Metric("log-loss", "log-loss", "classes", "minimize", lambda y, o: float(_nll(y, o).mean()), _nll,
           lambda loss, acc: loss, "the validation cross-entropy (the log-loss)"),
    Metric("auroc", "AUROC", "classes", "maximize", _auroc, None, lambda loss, acc: -loss,
           "minus the validation cross-entropy"),
    Metric("rmse", "RMSE", "values", "minimize",
           lambda y, o: float(skm.root_mean_squared_error(_values(y, o), o)), None,
           lambda loss, acc: math.sqrt(loss), "the root of the validation mean squared error"),
    Metric("mae", "MAE", "values", "minimize", lambda y, o: float(skm.mean_absolute_error(_values(y, o), o)),
           lambda y, o: np.abs(_values(y, o) - o).mean(1), lambda loss, acc: math.sqrt(loss),
           "the root of the validation mean squared error"),
    Metric("r2", "R^2", "values", "maximize", lambda y, o: float(skm.r2_score(_values(y, o), o)), None,
           lambda loss, acc: -loss, "minus the validation mean squared error"),
)}
ACCURACY = REGISTRY["accuracy"]


def metric_named(name: str | None) -> Metric:
    """The registry entry ``name`` (None: accuracy, what studies made before ``search.metric`` score)."""
    return REGISTRY[name or "accuracy"]


def bootstrap_indices(n: int, seed: int) -> np.ndarray:
    """``BOOTSTRAP`` resamples (rows) of ``n`` validation examples, the same for every lambda of a study."""
    return np.random.default_rng(np.random.SeedSequence([seed, n])).integers(0, n, size=(BOOTSTRAP, n))


def replicates(metric: Metric, y: np.ndarray, out: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The metric on each resample (row of ``index``); NaN where a resample cannot be scored."""
    return np.array([metric.score(y[rows], out[rows]) for rows in index])
