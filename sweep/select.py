"""Choosing lambda from finished trials, and reading the choice back.

Rules work on plain ``TrialScore`` records, so they are tested without Optuna:

- ``min``: the lambda with the best mean validation accuracy (ties: the earliest
  trial, as Optuna's own ``best_trial`` picks, so ``optuna best-trial`` agrees).
- ``1se``: the largest lambda whose mean is within one standard error of the best
  mean (the "one standard error rule" of cv.glmnet's ``lambda.1se``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from sweep.config import PARAM, stored_config
from sweep.errors import NoCompleteTrialsError, StudyNotFoundError
from sweep.storage import mask, open_storage, resolve_url

RULES = ("min", "1se")


@dataclass(frozen=True)
class TrialScore:
    """A complete trial as the rules see it: its lambda, mean validation accuracy and that mean's SE."""

    number: int
    lam: float
    mean: float  # mean validation accuracy
    se: float  # its standard error


@dataclass(frozen=True)
class BestRecord:
    """The answer of ``sweep best`` / ``best_lambda``: one rule's pick, both rules' picks, the refit's test accuracy."""

    study: str
    rule: str
    lam: float
    trial: int
    val_acc: float
    val_se: float
    test_acc: float | None
    refit_seed: int | None
    storage: str
    # Both rules' picks, whichever ``rule`` chose ``lam``: with the 1se rule the JSON shows
    # lambda_1se >= lambda_min and what each scored. Defaults keep older callers working.
    lam_min: float | None = None
    val_acc_min: float | None = None
    val_se_min: float | None = None
    lam_1se: float | None = None
    val_acc_1se: float | None = None
    val_se_1se: float | None = None
    validation: str | None = None  # "holdout" or "cv": where val_se comes from (docs/cv.md)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("", "_min", "_1se"):
            out[f"lambda{key}"] = out.pop(f"lam{key}")
        return out


def choose(scores: list[TrialScore], rule: str) -> TrialScore:
    """The trial ``rule`` picks from ``scores`` (see the module docstring for the rules)."""
    if not scores:
        raise NoCompleteTrialsError("no complete trials to choose from")
    best = max(scores, key=lambda s: (s.mean, -s.number))
    if rule == "min":
        return best
    if rule == "1se":
        within = [s for s in scores if s.mean >= best.mean - best.se]
        return max(within, key=lambda s: (s.lam, s.mean))
    raise ValueError(f"unknown rule {rule!r}")


def scores_of(trials: list[optuna.trial.FrozenTrial]) -> list[TrialScore]:
    """Scores of the complete trials (value = mean validation accuracy; ``val_se`` its SE)."""
    return [
        TrialScore(t.number, float(t.params[PARAM]), float(t.value), float(t.user_attrs.get("val_se", 0.0)))
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and PARAM in t.params
    ]


def state_counts(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING): the one place trials are counted."""
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"), 0)
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def load_study(name: str, storage: str | None) -> optuna.Study:
    """Study ``name`` from the store, read-only; a missing one is a StudyNotFoundError naming the studies there."""
    store = open_storage(storage, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
        known = ", ".join(sorted(names)[:10]) or "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {mask(resolve_url(storage))} (studies there: {known}); "
            "check the name with 'sweep ls' or pass --storage"
        ) from None


def best_record(name: str, *, storage: str | None = None, rule: str | None = None) -> BestRecord:
    """The lambda chosen by ``rule`` (default: the study's own ``search.rule``) for study ``name``,
    with its figures and the refit's test accuracy."""
    if rule is not None and rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    study = load_study(name, storage)
    cfg = stored_config(study.user_attrs)
    rule = rule or (cfg.search.rule if cfg is not None else "min")
    scores = scores_of(study.get_trials(deepcopy=False))
    if not scores:
        raise NoCompleteTrialsError(
            f"study {name!r} has no complete trial yet; run it with 'sweep run' (see 'sweep show {name}')"
        )
    pick = choose(scores, rule)
    lo, one = choose(scores, "min"), choose(scores, "1se")
    refit = study.user_attrs.get("refit", {}).get(rule)
    matches = refit is not None and refit.get("trial") == pick.number
    validation = cfg.search.validation if cfg is not None else None
    return BestRecord(
        study=name, rule=rule, lam=pick.lam, trial=pick.number, val_acc=pick.mean, val_se=pick.se,
        test_acc=refit["test_acc"] if matches else None, refit_seed=refit["seed"] if matches else None,
        storage=mask(resolve_url(storage)),
        lam_min=lo.lam, val_acc_min=lo.mean, val_se_min=lo.se,
        lam_1se=one.lam, val_acc_1se=one.mean, val_se_1se=one.se, validation=validation,
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
