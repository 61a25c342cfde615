"""The registry of rules: each rule is one ``Rule`` entry, its pick included, and every reader goes
through ``REGISTRY`` (``sweep best``, ``sweep refit --rule``, ``sweep evidence``, the report, the
dashboard figure, ``sweep.best_lambda``, the refit). A new rule is one more entry here; the CLI's
``--rule`` choices and help, the report's table and markers and the refit follow from it.

Rules (docs/selection.md):

- ``min``: the lambda with the best mean validation accuracy (ties: the earliest
  trial, as Optuna's own ``best_trial`` picks, so ``optuna best-trial`` agrees).
- ``1se``: the largest lambda whose mean is within one standard error of the best
  mean, the best trial's own SE (the "one standard error rule" of cv.glmnet's ``lambda.1se``).
- ``1se-paired``: the largest lambda whose difference to the best is within one *paired* SE
  of that difference.
- ``smooth``: the argmax of a Gaussian-process smooth of accuracy against log10(lambda);
  with fewer than ``MIN_SMOOTH`` distinct lambdas there is nothing to smooth and it equals ``min``.

``select`` applies every rule to one ``ScoreTable`` and adds the plausible range: the ``Selection``
that everything else reads, so no two figures a user sees can come from two computations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sweep.selection.flat import flat_reason
from sweep.selection.paired import Comparison, SmoothFit, plausible_range
from sweep.selection.scores import MIN_SMOOTH, ScoreTable, TrialScore, best_score, compare, scores_of, state_counts


@dataclass(frozen=True)
class Pick:
    """One rule's choice. ``trial`` is None when the lambda is not a trial's (``smooth``'s curve)."""

    rule: str
    lam: float
    trial: int | None
    val_acc: float  # the trial's mean, or the smoothed mean at ``lam``
    val_se: float  # the trial's SE, or the smoothed curve's sd at ``lam``
    interval: tuple[float, float] | None = None  # a pick between trials: the lambdas it could as well be


@dataclass(frozen=True)
class Rule:
    """One selection rule: its name (``--rule``, ``search.rule``), a line of help, and its pick."""

    name: str
    summary: str  # what it picks, in one clause: ``--rule``'s help is made of these
    choose: Callable[[ScoreTable], Pick]

    @property
    def key(self) -> str:
        """The name as it appears in record fields and JSON keys (``lambda_1se_paired``)."""
        return self.name.replace("-", "_")


def _trial_pick(rule: str, s: TrialScore) -> Pick:
    return Pick(rule, s.lam, s.number, s.mean, s.se)


def _largest_lambda(within: Sequence[TrialScore]) -> TrialScore:
    # Among the trials a rule accepts, the most regularised; equal lambdas: the better mean.
    return max(within, key=lambda s: (s.lam, s.good))


def _min(t: ScoreTable) -> Pick:
    return _trial_pick("min", t.best)


def _one_se(t: ScoreTable) -> Pick:
    # The best trial's own SE, not each candidate's: cv.glmnet's lambda.1se.
    return _trial_pick("1se", _largest_lambda([s for s in t.scores if s.good >= t.best.good - t.best.se]))


def _one_se_paired(t: ScoreTable) -> Pick:
    within = [s for s, c in zip(t.scores, t.comparisons, strict=True) if c.diff <= c.se]
    return _trial_pick("1se-paired", _largest_lambda(within))


def _smooth(t: ScoreTable) -> Pick:
    fit = t.smooth
    if fit is None:  # too few distinct lambdas to smooth: the best trial, so the rule still answers
        return _trial_pick("smooth", t.best)
    return Pick("smooth", fit.lam, None, fit.acc, fit.sd, fit.interval)


REGISTRY: dict[str, Rule] = {r.name: r for r in (
    Rule("min", "best mean validation accuracy", _min),
    Rule("1se", "largest lambda within one standard error of it", _one_se),
    Rule("1se-paired", "largest lambda within one paired standard error of the best", _one_se_paired),
    Rule("smooth", "the peak of a Gaussian-process smooth of accuracy against log lambda", _smooth),
)}
RULES = tuple(REGISTRY)  # in the order every listing shows them


def rule_named(name: str) -> Rule:
    """The registry entry ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {name!r}") from None


def rules_help() -> str:
    """``--rule``'s help: every rule's summary, in registry order."""
    return "; ".join(f"{r.name}: {r.summary}" for r in REGISTRY.values())


def choose(scores: Sequence[TrialScore], rule: str) -> TrialScore:
    """The trial ``rule`` picks from ``scores``; a rule that picks a lambda between trials is a ValueError."""
    table = ScoreTable(scores)
    pick = rule_named(rule).choose(table)
    if pick.trial is None:
        raise ValueError(f"rule {rule!r} picks a lambda, not a trial; use select() for its pick")
    return next(s for s in table.scores if s.number == pick.trial)


@dataclass(frozen=True)
class Selection:
    """Everything chosen from one study's complete trials."""

    scores: tuple[TrialScore, ...]
    comparisons: tuple[Comparison, ...]  # one per score, against the ``min`` pick
    plausible: tuple[float, float]  # lowest and highest lambda not significantly worse than the best
    smooth: SmoothFit | None
    picks: dict[str, Pick] = field(default_factory=dict)  # one per registry entry
    flat: str | None = None  # why the trials cannot be told apart (``flat.flat_reason``); None: they can


def select(scores: Sequence[TrialScore], *, low: float | None = None, high: float | None = None) -> Selection:
    """Every rule's pick, the comparisons, the plausible range and the smoothed curve over [low, high]."""
    table = ScoreTable(scores, low=low, high=high)
    picks = {name: rule.choose(table) for name, rule in REGISTRY.items()}
    return Selection(table.scores, table.comparisons, plausible_range(table.comparisons), table.smooth, picks,
                     flat_reason(table))


__all__ = ["MIN_SMOOTH", "REGISTRY", "RULES", "Pick", "Rule", "ScoreTable", "Selection", "TrialScore", "best_score",
           "choose", "compare", "rule_named", "rules_help", "scores_of", "select", "state_counts"]
