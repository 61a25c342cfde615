"""Shared objective pieces, record side: standard errors and the builders of a trial's attributes.

Every figure a trial produces goes into the store, where ``sweep show``, the
report, the dashboard and ``sweep best`` read it: the validation accuracy of
each epoch (or fold) as an intermediate value, which is what pruners read, and
the rest as user attributes. Single trials, CV trials and batch members all
build their attributes here, so a key means the same everywhere, and write them with
``storages.writes.set_user_attrs`` (one store transaction per trial's result).

Standard errors (``val_se``; docs/cv.md explains the choice):

- one holdout fit: the binomial SE of the accuracy on ``n_val`` examples;
- several fits: the sample std of the group means over sqrt(groups). A group is a
  CV fold (its seeds are averaged first: they share their data, so they are not
  independent draws) or, for holdout with repeats, one seed.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import torch

from sweep.config import StudyConfig
from sweep.errors import TrainingDivergedError
from sweep.selection.metrics import ACCURACY, Metric
from sweep.training.fit import EpochStats, FitResult, fit
from sweep.training.models import Net

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # x_fit, y_fit, x_val, y_val


def binomial_se(acc: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent examples."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1))


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1); 0 for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def group_se(group_means: Sequence[float]) -> float:
    """SE of a mean over independent groups (cv.glmnet's ``cvsd``): std of the group means over sqrt(groups)."""
    return sample_std(group_means) / math.sqrt(len(group_means)) if group_means else 0.0


def finite(v: float) -> float | None:
    """A figure as the store keeps it: None for NaN (a regression has no accuracy), JSON has no NaN."""
    return v if math.isfinite(v) else None


def epoch_record(s: EpochStats) -> dict[str, float | None]:
    """One epoch as the ``history`` attribute stores it."""
    return {"epoch": s.epoch, "train_loss": s.train_loss, "train_acc": finite(s.train_acc),
            "val_loss": s.val_loss, "val_acc": finite(s.val_acc), "seconds": round(s.seconds, 4)}


def single_fit_attrs(history: Sequence[EpochStats], *, n_val: int) -> dict[str, Any]:
    """What one complete holdout fit stores (single trials and batch members alike)."""
    final = history[-1]
    return {"history": [epoch_record(s) for s in history], "val_acc": finite(final.val_acc), "val_loss": final.val_loss,
            "train_acc": finite(final.train_acc), "train_loss": final.train_loss,
            "val_se": binomial_se(final.val_acc, n_val) if math.isfinite(final.val_acc) else None, "n_val": n_val,
            "seconds": round(sum(s.seconds for s in history), 4)}


def _mean_history(runs: Sequence[Sequence[EpochStats]]) -> list[dict[str, float | None]]:
    """Per-epoch figures averaged over the fits done so far (a learning curve of the whole trial)."""
    out = []
    for epoch_stats in zip(*runs, strict=True):
        records = [epoch_record(s) for s in epoch_stats]
        out.append({k: None if records[0][k] is None else float(np.mean([r[k] for r in records])) for k in records[0]})
    return out


def many_fits_attrs(runs: Sequence[Sequence[EpochStats]], *, per_group: int, seconds: float,
                    scores: Sequence[float] | None = None, metric: str = "accuracy") -> dict[str, Any]:
    """What a trial of several fits stores (CV: fold-major, ``per_group`` seeds per fold; repeats: one seed per group).
    ``scores``: each fit's ``metric`` (default: its accuracy); another metric's mean is ``val_score``.

    Also used for a pruned trial's fits so far: it keeps what it measured.
    """
    finals = [r[-1] for r in runs]
    accs = [f.val_acc for f in finals]
    scores = list(scores) if scores is not None else accs
    groups = [float(np.mean(scores[i:i + per_group])) for i in range(0, len(scores), per_group)]
    extra = {} if metric == "accuracy" else {"metric": metric, "val_score": float(np.mean(scores))}
    return {"fold_scores": scores, "val_acc": finite(float(np.mean(accs))), "val_std": sample_std(scores),
            "val_se": group_se(groups), "train_acc": finite(float(np.mean([f.train_acc for f in finals]))), **extra,
            "val_loss": float(np.mean([f.val_loss for f in finals])),
            "train_loss": float(np.mean([f.train_loss for f in finals])),
            "history": _mean_history(runs), "seconds": round(seconds, 4)}


@torch.no_grad()
def correct_bits(model: torch.nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> str:
    """Which validation examples ``model`` gets right, as the ``val_correct`` attribute stores one fit:
    one bit per example (in the order of the validation split), packed 8 to a byte, base64.

    1,000 examples take 168 characters; ``sweep.selection.scores`` unpacks them for paired comparisons.
    """
    model.eval()
    hits = torch.cat([model(xs).argmax(1) == ys for xs, ys in zip(x_val.split(8192), y_val.split(8192), strict=True)])
    return base64.b64encode(np.packbits(hits.cpu().numpy()).tobytes()).decode("ascii")


def epoch_reporter(trial: optuna.Trial, metric: Metric = ACCURACY) -> Callable[[EpochStats], None]:
    """Per-epoch report (the figure ``metric`` gives pruners) and prune, keeping the history (also of a pruned trial)
    in the store."""
    history: list[dict[str, float | None]] = []

    def on_epoch(s: EpochStats) -> None:
        history.append(epoch_record(s))
        value = metric.epoch(s.val_loss, s.val_acc)
        trial.report(value, s.epoch)
        trial.set_user_attr("history", history)
        if trial.should_prune():
            what = "val_acc" if metric is ACCURACY else f"{metric.epoch_label}"
            raise optuna.TrialPruned(f"pruned after epoch {s.epoch}: {what} {value:.4f}")

    return on_epoch


def fit_recorded(trial: optuna.Trial, cfg: StudyConfig, split: Split, *, lam: float, seed: int,
                 on_epoch: Callable[[EpochStats], None] | None = None, net: Net | None = None) -> FitResult:
    """One fit on ``split`` = (x_fit, y_fit, x_val, y_val); a divergence is stored as the trial's ``fail_reason``."""
    x_fit, y_fit, x_val, y_val = split
    try:
        return fit(x_fit, y_fit, x_val, y_val, lam=lam, cfg=cfg.train, seed=seed, on_epoch=on_epoch, net=net)
    except TrainingDivergedError as err:
        trial.set_user_attr("fail_reason", str(err))
        raise
