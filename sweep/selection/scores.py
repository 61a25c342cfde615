"""What the rules read: each complete trial as a ``TrialScore``, and a study's scores with the figures
the rules compare them by (``ScoreTable``).

A trial's *units* are the per-example (holdout) or per-fold (CV) scores that make comparisons between
lambdas paired (``sweep.selection.paired`` explains why). The table computes the paired comparisons and
the smoothed curve at most once, and only when a rule asks for them: ``sweep ls`` needs only the best
trial and should not pay for a Gaussian-process fit.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import optuna

from sweep.config import PARAM
from sweep.errors import NoCompleteTrialsError
from sweep.selection.paired import Comparison, SmoothFit, critical_value, fit_smooth, flip, paired_diff

MIN_SMOOTH = 3  # distinct lambdas the smoother needs


@dataclass(frozen=True)
class TrialScore:
    """A complete trial as the rules see it: lambda, mean validation accuracy, its SE, its paired units."""

    number: int
    lam: float
    mean: float  # the trial's value: mean validation accuracy, or its metric's score (``search.metric``)
    se: float  # its standard error
    units: tuple[float, ...] | None = None  # per validation example (holdout) or per fold (CV); None: unpaired
    sign: int = 1  # +1: larger is better (accuracy); -1: smaller is (a loss or an error)
    replicates: bool = False  # units are bootstrap replicates of the score (the SE is their std, not over sqrt(n))
    predicted: int | None = None  # distinct classes the trial's model predicts on the validation split (classifiers)

    @property
    def good(self) -> float:
        """The value the rules maximise: ``sign * mean``."""
        return self.sign * self.mean


def _units(attrs: dict[str, Any]) -> tuple[float, ...] | None:
    """A trial's paired units from its attributes (written by ``sweep.objectives.attrs`` and ``.scoring``):
    another metric's per-example values or bootstrap replicates first, then accuracy's bits, then folds."""
    packed, boot = attrs.get("val_units"), attrs.get("val_boot")
    if isinstance(packed, list) and packed:
        rows = [np.frombuffer(base64.b64decode(b), dtype=np.float32).astype(float) for b in packed]
        return tuple(np.mean(rows, axis=0).tolist())
    if isinstance(boot, list) and len(boot) > 1:
        return tuple(float(b) for b in boot)
    bits, n_val = attrs.get("val_correct"), attrs.get("n_val")
    if "metric" not in attrs and isinstance(bits, list) and bits and isinstance(n_val, int):
        # One bitset per fit (training seed): example i correct or not, packed 8 to a byte, base64.
        rows = [np.unpackbits(np.frombuffer(base64.b64decode(b), dtype=np.uint8), count=n_val) for b in bits]
        return tuple(np.mean(rows, axis=0).tolist())
    folds = attrs.get("fold_scores")
    if isinstance(folds, list) and len(folds) > 1:
        per = int(attrs.get("repeats", 1)) if "folds" in attrs else 1  # CV: a fold's seeds share their data
        return tuple(float(np.mean(folds[i:i + per])) for i in range(0, len(folds), per))
    return None


def scores_of(trials: list[optuna.trial.FrozenTrial], sign: int = 1) -> list[TrialScore]:
    """Scores of the complete trials (value = mean validation accuracy or the study's metric; ``val_se`` its SE);
    ``sign`` -1 for a study that minimises (``sign_of``)."""
    return [
        TrialScore(t.number, float(t.params[PARAM]), float(t.value), float(t.user_attrs.get("val_se") or 0.0),
                   _units(t.user_attrs), sign, isinstance(t.user_attrs.get("val_boot"), list),
                   t.user_attrs.get("predicted_classes"))
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and PARAM in t.params
    ]


def best_score(scores: Sequence[TrialScore]) -> TrialScore:
    """The best mean; ties go to the earliest trial, as Optuna's ``best_trial`` (so ``optuna best-trial`` agrees)."""
    if not scores:
        raise NoCompleteTrialsError("no complete trials to choose from")
    return max(scores, key=lambda s: (s.good, -s.number))


def compare(scores: Sequence[TrialScore], best: TrialScore) -> list[Comparison]:
    """Each trial's paired comparison with ``best`` (``best`` itself: difference 0, SE 0)."""
    out = []
    signed = (lambda u: None if u is None else tuple(best.sign * v for v in u))  # noqa: E731 - units as goodness
    for s in scores:
        diff, se, dof = paired_diff(signed(best.units), signed(s.units), best_mean=best.good, mean=s.good,
                                    best_se=best.se, se=s.se, replicates=s.replicates and best.replicates)
        if s.number == best.number:
            diff, se = 0.0, 0.0
        out.append(Comparison(s.number, s.lam, diff, se, critical_value(dof), dof is not None))
    return out


class ScoreTable:
    """A study's complete trials and what the rules compare them by, each computed once, when first asked.

    ``low``..``high`` is the searched range the smoothed curve spans (default: the trials' own span).
    """

    def __init__(self, scores: Sequence[TrialScore], *, low: float | None = None, high: float | None = None) -> None:
        if not scores:
            raise NoCompleteTrialsError("no complete trials to choose from")
        self.scores = tuple(scores)
        self.best = best_score(self.scores)
        self._low, self._high = low, high

    @cached_property
    def comparisons(self) -> tuple[Comparison, ...]:
        """One per score, against the best."""
        return tuple(compare(self.scores, self.best))

    @cached_property
    def smooth(self) -> SmoothFit | None:
        """The smoothed curve, or None with too few distinct lambdas to smooth."""
        lams = [s.lam for s in self.scores]
        if len(set(lams)) < MIN_SMOOTH:
            return None
        fit = fit_smooth(lams, [s.good for s in self.scores], low=self._low or min(lams), high=self._high or max(lams))
        return fit if self.sign > 0 else flip(fit)  # in the metric's own units

    @property
    def sign(self) -> int:
        return self.best.sign


def sign_of(study: optuna.Study) -> int:
    """+1 for a study that maximises (accuracy, the evidence), -1 for one that minimises (a loss or an error)."""
    return -1 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1


def state_counts(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING): the one place trials are counted."""
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"), 0)
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
