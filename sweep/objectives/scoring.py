"""A fit's score in the study's metric (``search.metric``, ``sweep.selection.metrics``) and what a trial stores of it.

An accuracy study stores what it always has (``val_acc``, ``val_correct``: per-example bits, the binomial
SE); these functions add, for a metric scored from the predicted class alone (``Metric.thresholded``), the number
of classes the model predicts (``predicted_classes``, the flat-answer check), and for any other metric:

- ``metric``: its name; ``val_score``: the trial's value (the mean over its seeds' fits); ``val_se``;
- a per-example metric: ``val_units``, one base64 float32 array per seed of the per-example values;
- a bootstrapped metric: ``val_boot``, the trial's ``BOOTSTRAP`` replicate scores (averaged over seeds),
  each on the resample every lambda of the study shares (``bootstrap_indices``).

``sweep.selection.scores`` reads them back as a trial's paired units.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sweep.config import StudyConfig
from sweep.selection.metrics import Metric, bootstrap_indices, metric_named, replicates
from sweep.training.fit import EVAL_CHUNK


def metric_of(cfg: StudyConfig) -> Metric:
    return metric_named(cfg.metric)


@torch.no_grad()
def outputs(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's outputs on ``x`` in eval mode, as float64 NumPy (logits or predictions)."""
    model.eval()
    return torch.cat([model(xs) for xs in x.split(EVAL_CHUNK)]).double().cpu().numpy()


@dataclass(frozen=True)
class FitScore:
    """One fit's score on the validation examples, with what pairs it to other lambdas."""

    value: float
    units: np.ndarray | None  # per-example values (a mean metric)
    boot: np.ndarray | None  # replicate scores (a bootstrapped metric)
    predicted: int | None  # distinct classes predicted (classifiers)


def predicted_classes(out: np.ndarray) -> int:
    return int(np.unique(out.argmax(1)).size)


def fit_score(cfg: StudyConfig, model: torch.nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> FitScore:
    """The fit's metric on the validation split, its per-example values or bootstrap replicates."""
    metric = metric_of(cfg)
    out, y = outputs(model, x_val), y_val.cpu().numpy()
    value = metric.score(y, out)
    predicted = predicted_classes(out) if metric.thresholded else None
    if metric.bootstrapped:
        boot = replicates(metric, y, out, bootstrap_indices(int(y.shape[0]), cfg.data.split_seed))
        return FitScore(value, None, boot, predicted)
    return FitScore(value, metric.per_example(y, out) if metric.per_example else None, None, predicted)


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(values.astype(np.float32).tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    """A ``val_units`` entry back to its per-example values."""
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).astype(float)


def score_attrs(cfg: StudyConfig, fits: Sequence[FitScore]) -> dict[str, Any]:
    """What a trial of one or more holdout fits (seeds) stores of its metric (module docstring)."""
    metric = metric_of(cfg)
    attrs: dict[str, Any] = {}
    if fits and fits[0].predicted is not None:
        attrs["predicted_classes"] = max(f.predicted or 0 for f in fits)
    if metric.name == "accuracy" or not fits:
        return attrs  # val_acc, val_se and val_correct say it, as before
    value = float(np.mean([f.value for f in fits]))
    attrs.update({"metric": metric.name, "val_score": value})
    if len(fits) > 1:  # seeds: the spread of their scores, as an accuracy study's val_se (docs/cv.md)
        attrs["val_se"] = float(np.std([f.value for f in fits], ddof=1) / math.sqrt(len(fits)))
    if metric.bootstrapped:
        boot = np.mean([f.boot for f in fits if f.boot is not None], axis=0)
        attrs["val_boot"] = [float(b) for b in boot]
        attrs.setdefault("val_se", float(np.nanstd(boot, ddof=1)))
    else:
        per = np.mean([f.units for f in fits if f.units is not None], axis=0)
        attrs["val_units"] = [_pack(f.units) for f in fits if f.units is not None]
        attrs.setdefault("val_se", float(np.std(per, ddof=1) / math.sqrt(per.size)) if per.size > 1 else 0.0)
    return attrs


def trial_value(attrs: dict[str, Any]) -> float:
    """A complete trial's value: its metric's score (``val_score``), or its accuracy for an accuracy study."""
    return float(attrs["val_score"] if "val_score" in attrs else attrs["val_acc"])
