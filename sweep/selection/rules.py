"""Choosing lambda from finished trials, and reading the choice back: computed once, read by all.

``select`` turns the complete trials into a ``Selection``: every rule's pick, each trial's
paired comparison with the best, the plausible range and the smoothed curve
(``sweep.selection.paired`` does the arithmetic). ``sweep best``, ``sweep.best_lambda``, the
refit, the stop rule, the report and the dashboard figure all read a ``Selection``.

Rules (docs/selection.md):

- ``min``: the lambda with the best mean validation accuracy (ties: the earliest
  trial, as Optuna's own ``best_trial`` picks, so ``optuna best-trial`` agrees).
- ``1se``: the largest lambda whose mean is within one standard error of the best
  mean, the best trial's own SE (the "one standard error rule" of cv.glmnet's ``lambda.1se``).
- ``1se-paired``: the largest lambda whose difference to the best is within one *paired* SE
  of that difference.
- ``smooth``: the argmax of a Gaussian-process smooth of accuracy against log10(lambda);
  with fewer than ``MIN_SMOOTH`` distinct lambdas there is nothing to smooth and it equals ``min``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna

from sweep.config import PARAM, StudyConfig, stored_config
from sweep.errors import ConfigError, NoCompleteTrialsError, StudyNotFoundError
from sweep.storages.store import mask, open_storage, resolve_url
from sweep.selection.paired import Comparison, SmoothFit, critical_value, fit_smooth, paired_diff, plausible_range, resolved

RULES = ("min", "1se", "1se-paired", "smooth")
MIN_SMOOTH = 3  # distinct lambdas the smoother needs


@dataclass(frozen=True)
class TrialScore:
    """A complete trial as the rules see it: lambda, mean validation accuracy, its SE, its paired units."""

    number: int
    lam: float
    mean: float  # mean validation accuracy
    se: float  # its standard error
    units: tuple[float, ...] | None = None  # per validation example (holdout) or per fold (CV); None: unpaired


@dataclass(frozen=True)
class Pick:
    """One rule's choice. ``trial`` is None for ``smooth``, whose lambda need not be a trial's."""

    rule: str
    lam: float
    trial: int | None
    val_acc: float  # the trial's mean, or the smoothed mean at ``lam``
    val_se: float  # the trial's SE, or the smoothed curve's sd at ``lam``


@dataclass(frozen=True)
class Selection:
    """Everything chosen from one study's complete trials."""

    scores: tuple[TrialScore, ...]
    comparisons: tuple[Comparison, ...]  # one per score, against the ``min`` pick
    plausible: tuple[float, float]  # lowest and highest lambda not significantly worse than the best
    smooth: SmoothFit | None
    picks: dict[str, Pick] = field(default_factory=dict)


def choose(scores: list[TrialScore], rule: str) -> TrialScore:
    """The trial ``min``, ``1se`` or ``1se-paired`` picks from ``scores`` (see the module docstring)."""
    if not scores:
        raise NoCompleteTrialsError("no complete trials to choose from")
    best = max(scores, key=lambda s: (s.mean, -s.number))
    if rule == "min":
        return best
    if rule == "1se":
        within = [s for s in scores if s.mean >= best.mean - best.se]
    elif rule == "1se-paired":
        within = [s for s, c in zip(scores, compare(scores, best), strict=True) if c.diff <= c.se]
    else:
        raise ValueError(f"unknown rule {rule!r}")
    return max(within, key=lambda s: (s.lam, s.mean))


def compare(scores: list[TrialScore], best: TrialScore) -> list[Comparison]:
    """Each trial's paired comparison with ``best`` (``best`` itself: difference 0, SE 0)."""
    out = []
    for s in scores:
        diff, se, dof = paired_diff(best.units, s.units, best_mean=best.mean, mean=s.mean, best_se=best.se, se=s.se)
        if s.number == best.number:
            diff, se = 0.0, 0.0
        out.append(Comparison(s.number, s.lam, diff, se, critical_value(dof), dof is not None))
    return out


def select(scores: list[TrialScore], *, low: float | None = None, high: float | None = None) -> Selection:
    """Every rule's pick, the comparisons, the plausible range and the smoothed curve over [low, high]."""
    if not scores:
        raise NoCompleteTrialsError("no complete trials to choose from")
    best = choose(scores, "min")
    comparisons = compare(scores, best)
    lams = [s.lam for s in scores]
    smooth = None
    if len(set(lams)) >= MIN_SMOOTH:
        smooth = fit_smooth(lams, [s.mean for s in scores], low=low or min(lams), high=high or max(lams))
    picks = {rule: _pick(rule, choose(scores, rule)) for rule in ("min", "1se", "1se-paired")}
    picks["smooth"] = Pick("smooth", smooth.lam, None, smooth.acc, smooth.sd) if smooth else _pick("smooth", best)
    return Selection(tuple(scores), tuple(comparisons), plausible_range(comparisons), smooth, picks)


def _pick(rule: str, s: TrialScore) -> Pick:
    return Pick(rule, s.lam, s.number, s.mean, s.se)


def _units(attrs: dict[str, Any]) -> tuple[float, ...] | None:
    """A trial's paired units from its attributes (written by ``sweep.objectives.attrs``)."""
    bits, n_val = attrs.get("val_correct"), attrs.get("n_val")
    if isinstance(bits, list) and bits and isinstance(n_val, int):
        # One bitset per fit (training seed): example i correct or not, packed 8 to a byte, base64.
        rows = [np.unpackbits(np.frombuffer(base64.b64decode(b), dtype=np.uint8), count=n_val) for b in bits]
        return tuple(np.mean(rows, axis=0).tolist())
    folds = attrs.get("fold_scores")
    if isinstance(folds, list) and len(folds) > 1:
        per = int(attrs.get("repeats", 1)) if "folds" in attrs else 1  # CV: a fold's seeds share their data
        return tuple(float(np.mean(folds[i:i + per])) for i in range(0, len(folds), per))
    return None


def scores_of(trials: list[optuna.trial.FrozenTrial]) -> list[TrialScore]:
    """Scores of the complete trials (value = mean validation accuracy; ``val_se`` its SE)."""
    return [
        TrialScore(t.number, float(t.params[PARAM]), float(t.value), float(t.user_attrs.get("val_se", 0.0)),
                   _units(t.user_attrs))
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and PARAM in t.params
    ]


def selection_of(study: optuna.Study, cfg: StudyConfig | None = None) -> Selection | None:
    """The ``Selection`` of ``study`` over its searched range (None without complete trials)."""
    scores = scores_of(study.get_trials(deepcopy=False))
    if not scores:
        return None
    if cfg is None:
        try:
            cfg = stored_config(study.user_attrs)
        except ConfigError:  # a config from another version: smooth over the trials' own span
            cfg = None
    if cfg is None:
        return select(scores)
    return select(scores, low=cfg.search.lambda_low, high=cfg.search.lambda_high)


def min_trials_to_stop(cfg: StudyConfig) -> int:
    """Complete trials before ``stop = "resolved"`` may act: the samplers' random start (and at least 5)."""
    return min(cfg.search.n_trials, max(5, min(10, cfg.search.n_trials // 2)))


def stop_reason(sel: Selection, cfg: StudyConfig) -> str | None:
    """Why the study may stop now under ``search.stop = "resolved"``, or None to go on (docs/selection.md)."""
    n = len(sel.scores)
    if cfg.search.stop != "resolved" or n < min_trials_to_stop(cfg) or sel.smooth is None:
        return None
    best = sel.picks["min"]
    done, regret, threshold = resolved(sel.smooth, best.val_se)
    if not done:
        return None
    return (f"resolved after {n} complete trials: no lambda in the searched range can beat the best by more than "
            f"{regret:.4f} (the smoothed curve's highest upper bound minus its highest lower bound), which is "
            f"within the best trial's standard error ({threshold:.4f})")


def state_counts(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING): the one place trials are counted."""
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"), 0)
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def refit_matches(refit: object, pick: Pick) -> bool:
    """Whether a stored refit record belongs to ``pick`` (the same trial and lambda), not to an earlier pick."""
    return isinstance(refit, dict) and refit.get("trial") == pick.trial and refit.get("lambda") == pick.lam


def load_study(name: str, storage: str | None) -> optuna.Study:
    """Study ``name`` from the store, read-only; a missing one is a StudyNotFoundError naming the studies there."""
    store = open_storage(storage, read_only=True)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
        known = ", ".join(sorted(names)[:10]) or "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {mask(resolve_url(storage))} (studies there: {known}); "
            "check the name with 'sweep ls' or pass --storage"
        ) from None


@dataclass(frozen=True)
class BestRecord:
    """The answer of ``sweep best`` / ``best_lambda``: one rule's pick, every rule's pick, the plausible range."""

    study: str
    rule: str
    lam: float
    trial: int | None  # None for the smooth rule (its lambda need not be a trial's)
    val_acc: float
    val_se: float
    test_acc: float | None
    refit_seed: int | None
    storage: str
    # Every rule's pick, whichever ``rule`` chose ``lam``. Defaults keep older callers working.
    lam_min: float | None = None
    val_acc_min: float | None = None
    val_se_min: float | None = None
    lam_1se: float | None = None
    val_acc_1se: float | None = None
    val_se_1se: float | None = None
    lam_1se_paired: float | None = None
    val_acc_1se_paired: float | None = None
    lam_smooth: float | None = None
    val_acc_smooth: float | None = None
    smooth_low: float | None = None  # 5%..95% interval of the smoothed argmax
    smooth_high: float | None = None
    plausible_low: float | None = None  # lambdas not significantly worse than the best (one-sided, level 5%)
    plausible_high: float | None = None
    validation: str | None = None  # "holdout" or "cv": where val_se comes from (docs/cv.md)
    stopped: str | None = None  # why the study stopped before n_trials (search.stop = "resolved")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("", "_min", "_1se", "_1se_paired", "_smooth"):
            out[f"lambda{key}"] = out.pop(f"lam{key}")
        return out


def best_record(name: str, *, storage: str | None = None, rule: str | None = None) -> BestRecord:
    """The lambda chosen by ``rule`` (default: the study's own ``search.rule``) for study ``name``,
    with every rule's pick, the plausible range and the refit's test accuracy."""
    if rule is not None and rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    study = load_study(name, storage)
    cfg = stored_config(study.user_attrs)
    rule = rule or (cfg.search.rule if cfg is not None else "min")
    sel = selection_of(study, cfg)
    if sel is None:
        raise NoCompleteTrialsError(
            f"study {name!r} has no complete trial yet; run it with 'sweep run' (see 'sweep show {name}')"
        )
    p = sel.picks
    pick = p[rule]
    refit = study.user_attrs.get("refit", {}).get(rule)
    matches = refit_matches(refit, pick)
    stopped = study.user_attrs.get("stopped")
    return BestRecord(
        study=name, rule=rule, lam=pick.lam, trial=pick.trial, val_acc=pick.val_acc, val_se=pick.val_se,
        test_acc=refit["test_acc"] if matches else None, refit_seed=refit["seed"] if matches else None,
        storage=mask(resolve_url(storage)),
        lam_min=p["min"].lam, val_acc_min=p["min"].val_acc, val_se_min=p["min"].val_se,
        lam_1se=p["1se"].lam, val_acc_1se=p["1se"].val_acc, val_se_1se=p["1se"].val_se,
        lam_1se_paired=p["1se-paired"].lam, val_acc_1se_paired=p["1se-paired"].val_acc,
        lam_smooth=p["smooth"].lam, val_acc_smooth=p["smooth"].val_acc,
        smooth_low=sel.smooth.interval[0] if sel.smooth else None,
        smooth_high=sel.smooth.interval[1] if sel.smooth else None,
        plausible_low=sel.plausible[0], plausible_high=sel.plausible[1],
        validation=(("marglik" if cfg.search.sampler == "marglik" else cfg.search.validation) if cfg is not None else None),
        stopped=stopped.get("reason") if isinstance(stopped, dict) else None,
    )


@dataclass(frozen=True)
class EvidenceChoice:
    """The lambda with the highest Laplace log evidence (``sweep evidence``) beside the study rule's pick."""

    lam: float
    trial: int
    log_evidence: float
    rule: str
    rule_lam: float
    rule_trial: int

    @property
    def agree(self) -> bool:
        return self.trial == self.rule_trial


def evidence_pick(study_attrs: dict[str, Any], scores: list[TrialScore], rule: str) -> EvidenceChoice | None:
    """The evidence's pick from the stored ``evidence`` attribute, or None when there is none."""
    stored = study_attrs.get("evidence") or {}
    rows = [(int(k), float(v["lambda"]), float(v["log_evidence"])) for k, v in stored.items()]
    if not rows or not scores:
        return None
    trial, lam, value = max(rows, key=lambda r: (r[2], -r[0]))
    other = choose(scores, rule)
    return EvidenceChoice(lam, trial, value, rule, other.lam, other.number)


def evidence_choice(name: str, *, storage: str | None = None) -> EvidenceChoice:
    """The evidence's pick for study ``name`` (after ``sweep evidence``) beside its own rule's pick."""
    study = load_study(name, storage)
    cfg = stored_config(study.user_attrs)
    pick = evidence_pick(study.user_attrs, scores_of(study.get_trials(deepcopy=False)), cfg.search.rule if cfg else "min")
    if pick is None:
        raise NoCompleteTrialsError(f"study {name!r} has no evidence yet; compute it with 'sweep evidence {name}'")
    return pick
