"""The data side of reports: plain records read from Optuna studies, no Plotly.

``collect_study`` turns one study into a ``StudyRecord`` (its trials, the
lambdas chosen by each rule, the refit figures, counts and wall time), so the
drawing side (``report.figures``) and the tests never touch Optuna objects.
Nothing is recomputed here: each trial's error bar is the ``val_se`` its
objective stored, and each rule's pick, the plausible range and the smoothed
curve are ``sweep.selection.selection_of``'s (the rules' registry), so the report and ``sweep best``
always show the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.config import PARAM, StudyConfig, stored_config
from sweep.errors import SweepError
from sweep.selection import (
    RULES,
    EvidenceChoice,
    Selection,
    evidence_pick,
    refit_matches,
    selection_of,
    state_counts,
    study_metric,
    study_run,
    tau_epoch,
)


@dataclass(frozen=True)
class EpochPoint:
    """One epoch of a trial's learning curve."""

    epoch: int
    train_acc: float | None
    val_acc: float | None
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the charts see it. ``val_acc`` is the last reported value for pruned trials."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    lam: float | None
    val_acc: float | None
    val_err: float | None  # error bar half-width: the stored ``val_se`` (the SE the 1se rule uses)
    train_acc: float | None
    fold_scores: tuple[float, ...] = ()
    seconds: float | None = None
    curve: tuple[EpochPoint, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class Choice:
    """The lambda one selection rule picks, with the refit's test accuracy when it was run for that pick."""

    rule: str
    lam: float
    trial: int | None  # None for the smooth rule
    val_acc: float
    val_se: float
    test_acc: float | None


@dataclass(frozen=True)
class SmoothCurve:
    """The smoothed accuracy curve with its band (``sweep.selection.paired.SmoothFit``), as the chart draws it."""

    lams: tuple[float, ...]
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    interval: tuple[float, float]  # 5%..95% of the smoothed argmax


@dataclass(frozen=True)
class EvidencePoint:
    """The Laplace log evidence of one trial's lambda (``sweep evidence``; docs/evidence.md)."""

    trial: int
    lam: float
    log_evidence: float
    n_train: int  # examples it was computed on: per example, studies of different sizes compare

    @property
    def per_example(self) -> float:
        return self.log_evidence / max(1, self.n_train)


@dataclass(frozen=True)
class StudyRecord:
    """One study as the report draws it: trials, each rule's choice, counts, wall time, setup."""

    name: str
    trials: tuple[TrialRecord, ...]
    choices: dict[str, Choice] = field(default_factory=dict)  # rule -> choice; empty without complete trials
    counts: dict[str, int] = field(default_factory=dict)  # COMPLETE/PRUNED/FAIL/RUNNING -> n
    wall_seconds: float | None = None  # first trial start to last trial end
    setup: dict[str, Any] = field(default_factory=dict)  # sampler, dataset, epochs, lr ... from the stored config
    plausible: tuple[float, float] | None = None  # lambdas not significantly worse than the best (paired, one-sided)
    smooth: SmoothCurve | None = None
    evidence: tuple[EvidencePoint, ...] = ()  # 'sweep evidence': log evidence per complete trial's lambda
    evidence_pick: EvidenceChoice | None = None  # the evidence's lambda beside the study rule's
    metric: str = "accuracy"  # how the figures name the study's metric (``sweep.selection.metrics``' label)
    sign: int = 1  # -1: the metric is minimised
    tau_epoch: float | None = None  # the study rule's pick as a decay timescale in epochs (docs/transfer.md)

    @property
    def complete(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.state == "COMPLETE" and t.lam is not None and t.val_acc is not None)

    @property
    def pruned(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.state == "PRUNED" and t.lam is not None and t.val_acc is not None)


@dataclass(frozen=True)
class HistoryPoint:
    """Optimization history: the value of trial ``number`` and the best value up to it."""

    number: int
    value: float
    best: float


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _curve(trial: optuna.trial.FrozenTrial) -> tuple[EpochPoint, ...]:
    history = trial.user_attrs.get("history")
    if isinstance(history, list) and history:
        return tuple(
            EpochPoint(int(h.get("epoch", i + 1)), _num(h.get("train_acc")), _num(h.get("val_acc")),
                       _num(h.get("train_loss")), _num(h.get("val_loss")))
            for i, h in enumerate(history) if isinstance(h, dict)
        )
    # Trials made by other code may only have intermediate values (val_acc per epoch).
    return tuple(EpochPoint(int(step), None, _num(v), None, None) for step, v in sorted(trial.intermediate_values.items()))


def collect_trials(study: optuna.Study, metric: str = "accuracy") -> tuple[TrialRecord, ...]:
    """Every trial of ``study`` as a ``TrialRecord`` (pruned trials keep their last reported value).

    ``val_acc`` is the trial's value in the study's ``metric``. Another metric than accuracy has no per-epoch
    figure in its own units (pruners read a proxy, docs/metrics.md) and no training figure: a pruned trial has
    no point and ``train_acc`` is None, rather than a figure in other units beside it."""
    accuracy = metric == "accuracy"
    out = []
    for t in study.get_trials(deepcopy=False):
        curve = _curve(t)
        val = _num(t.value) if t.state == TrialState.COMPLETE else None
        if val is None and curve and accuracy:
            val = curve[-1].val_acc  # pruned: the last value it reported
        if val is None and accuracy:
            val = _num(t.user_attrs.get("val_acc"))
        folds = tuple(f for f in (_num(x) for x in t.user_attrs.get("fold_scores") or ()) if f is not None)
        train = _num(t.user_attrs.get("train_acc")) if accuracy else None
        if train is None and curve and accuracy:
            train = curve[-1].train_acc
        out.append(TrialRecord(
            number=t.number, state=t.state.name, lam=_num(t.params.get(PARAM)), val_acc=val,
            val_err=_num(t.user_attrs.get("val_se")), train_acc=train, fold_scores=folds,
            seconds=_num(t.user_attrs.get("seconds")), curve=curve,
        ))
    return tuple(out)


def collect_choices(study: optuna.Study, sel: Selection | None = None) -> dict[str, Choice]:
    """Every rule's pick (one per registry entry) with the stored refit test accuracy of each."""
    sel = sel if sel is not None else selection_of(study)
    if sel is None:
        return {}
    refits = study.user_attrs.get("refit") or {}
    out = {}
    for rule in RULES:
        pick = sel.picks[rule]
        refit = refits.get(rule) if isinstance(refits, dict) else None
        # A refit stored for an earlier pick (the study has grown since) is not this pick's test figure.
        figure = "test_score" if isinstance(refit, dict) and "test_score" in refit else "test_acc"  # the metric's
        test = _num(refit.get(figure)) if refit_matches(refit, pick) and isinstance(refit, dict) else None
        out[rule] = Choice(rule, pick.lam, pick.trial, pick.val_acc, pick.val_se, test)
    return out


def collect_history(record: StudyRecord) -> tuple[HistoryPoint, ...]:
    """Best value so far against trial number, over complete trials (what ``plot_optimization_history`` shows)."""
    out: list[HistoryPoint] = []
    better = max if record.sign > 0 else min  # a minimised metric's best is its smallest value
    best = -record.sign * math.inf
    for t in sorted(record.complete, key=lambda t: t.number):
        value = t.val_acc if t.val_acc is not None else -math.inf  # record.complete keeps only trials with a value
        best = better(best, value)
        out.append(HistoryPoint(t.number, value, best))
    return tuple(out)


def _wall_seconds(study: optuna.Study) -> float | None:
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not starts or not ends:
        return None
    return max(0.0, (max(ends) - min(starts)).total_seconds())


def _config(study: optuna.Study) -> StudyConfig | None:
    try:
        return stored_config(study.user_attrs)
    except SweepError:  # a config from another version: still draw the trials
        return None


def _setup(study: optuna.Study) -> dict[str, Any]:
    cfg = _config(study)
    if cfg is None:
        return {}
    # a data factory is what the study read, not the named dataset its config keeps as a default
    return {"sampler": cfg.search.sampler, "dataset": cfg.data.factory or cfg.data.dataset, "epochs": cfg.train.epochs,
            "lr": cfg.train.lr, "n_trials": cfg.search.n_trials, "rule": cfg.search.rule,
            "lambda_range": (cfg.search.lambda_low, cfg.search.lambda_high)}


def collect_study(study: optuna.Study) -> StudyRecord:
    """The whole ``StudyRecord`` of ``study``."""
    metric = study_metric(study)
    trials = collect_trials(study, metric.name)
    counts = state_counts(study.get_trials(deepcopy=False))
    sel = selection_of(study)
    smooth = None
    if sel is not None and sel.smooth is not None:
        f = sel.smooth
        smooth = SmoothCurve(f.grid, f.mean, f.lower, f.upper, f.interval)
    stored = study.user_attrs.get("evidence") or {}
    evidence = tuple(sorted((EvidencePoint(int(k), float(v["lambda"]), float(v["log_evidence"]), int(v.get("n_train", 1)))
                             for k, v in stored.items()), key=lambda p: p.lam))
    rule = str(_setup(study).get("rule", "min"))
    pick = evidence_pick(study.user_attrs, sel, rule) if sel is not None else None
    run = study_run(study.user_attrs, _config(study))
    tau = tau_epoch(sel.picks[rule].lam, run) if sel is not None and run is not None else None
    return StudyRecord(name=study.study_name, trials=trials, choices=collect_choices(study, sel), counts=counts,
                       wall_seconds=_wall_seconds(study), setup=_setup(study),
                       plausible=sel.plausible if sel is not None else None, smooth=smooth,
                       evidence=evidence, evidence_pick=pick, metric=metric.label,
                       sign=metric.sign, tau_epoch=tau)
