"""What a batch trains for its trials, and how each trial's figures reach the store.

A trial is one lambda; its *members* are its fits, the same for every trial of a study:
one fit (holdout), ``repeats`` seeds (holdout with repeats), or folds x repeats (CV).
All members of the batch's trials train as one population (``train_population``);
members that share a fold and a seed share each batch.

Each trial stores what its single objective stores, through the same functions:

- holdout: the first seed's validation accuracy is reported every epoch and the pruner
  asked, as ``holdout.py`` does; a pruned trial's members all leave the population;
- CV: folds train in *waves* (``fold_waves``); after a wave, each trial reports the running
  mean over its folds at step = fold and asks the pruner, fold by fold, exactly as
  ``cv.report_fold`` does for the single objective; a pruned trial's members do not
  enter the next wave. Without a pruner all folds are one wave.
- a member whose loss turns NaN/inf fails its trial (``fail_reason``) and its other members stop.

Pruner reads: Optuna's ``should_prune`` makes the pruner read the study's trials from
storage, once per member and epoch. The median pruner reads only COMPLETE trials, and
no trial of the batch completes before the batch ends, so for it (and for no pruner) the
trials are read at most every few seconds (``optuna_compat.PrunerView``); other pruners go through ``should_prune``.

Report writes: a holdout batch's reports go to the live trials at once (the pruner reads them
there) and to the store together, in one transaction at most every few seconds and before any
trial is finished (``_Reports``); one transaction per trial and epoch was 17% of the quick start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from sweep.config import StudyConfig
from sweep.errors import TrialInterrupted
from sweep.objectives.attrs import epoch_record, many_fits_attrs, single_fit_attrs
from sweep.objectives.cv import cv_attrs, fold_pairs, report_fold
from sweep.objectives.holdout import model_attrs, repeats_attrs, repeats_final_attrs
from sweep.objectives.prepared import Prepared, seeds
from sweep.objectives.scheme import Scheme, scheme_of
from sweep.objectives.scoring import FitScore, fit_score, metric_of, trial_value
from sweep.storages.optuna_compat import PrunerView, remember_report
from sweep.storages.writes import report_many, set_user_attrs
from sweep.training import trainers
from sweep.training.fit import EpochStats
from sweep.training.population import FitSet, Member, PopulationEpoch
from sweep.training.stream import rows

PRUNER_READ_SECONDS = 5.0  # how stale another worker's completed trials may be when a batch prunes
REPORT_WRITE_SECONDS = 2.0  # how late the store (the dashboard, other workers) may see a running trial's reports

Tell = Callable[[int, TrialState, float | None], None]


@dataclass(frozen=True)
class Layout:
    """The fit sets (one per fold; one for holdout), the seeds and the fold waves of every trial of a study."""

    sets: list[FitSet]
    seeds: list[int]
    waves: list[list[int]]
    scheme: Scheme  # "cv", "repeats" or "holdout": a batch trains no other scheme (the config refuses them)


def fold_waves(cfg: StudyConfig) -> list[list[int]]:
    """Folds trained together: all at once without a pruner; else up to the first fold a pruner may stop
    a trial after (median: fold 1; hyperband: fold 0), then one fold at a time, so a pruned trial stops costing."""
    k = cfg.search.folds
    if cfg.search.pruner == "none":
        return [list(range(k))]
    first = 2 if cfg.search.pruner == "median" else 1
    return [list(range(first))] + [[f] for f in range(first, k)]


def members_per_trial(cfg: StudyConfig) -> int:
    """Members of one trial in the widest wave (the first): its folds x ``repeats`` (CV), or ``repeats``."""
    return (len(fold_waves(cfg)[0]) if scheme_of(cfg) == "cv" else 1) * cfg.search.repeats


def start_attrs(cfg: StudyConfig, prep: Prepared) -> dict[str, Any]:
    """What each trial of a batch stores when it is asked: its single objective's starting attributes."""
    scheme = scheme_of(cfg)
    if scheme == "cv":
        return cv_attrs(cfg, prep)
    if scheme == "repeats":
        return repeats_attrs(cfg, prep)
    return {"device": str(prep.device), "seed": cfg.train.seed}


def layout(cfg: StudyConfig, prep: Prepared) -> Layout:
    scheme = scheme_of(cfg)
    if scheme == "cv":
        sets = [FitSet(prep.x_train, prep.y_train, rows(prep.x_train_eval, v), prep.y_train[v], rows=f)
                for f, v in fold_pairs(cfg, prep)]
        return Layout(sets, seeds(cfg), fold_waves(cfg), scheme)
    return Layout([FitSet(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val)], seeds(cfg), [[0]], scheme)


class _Asked:
    """A live trial as ``cv.report_fold`` sees it: ``should_prune`` goes through the batch's pruner view."""

    def __init__(self, trial: optuna.Trial, view: PrunerView) -> None:
        self._trial, self._view = trial, view

    def should_prune(self) -> bool:
        return self._view.should_prune(self._trial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class _Reports:
    """The holdout trials' per-epoch reports, written at most every ``max_age`` seconds, in one transaction.

    A report is in the live trial at once (``remember_report``: the pruner reads it there); the store
    gets it at the next write: the first epoch, then the epoch after ``max_age`` has passed, and before any trial is finished
    (the store refuses a finished trial's reports). Only other processes read the store's copy: another
    worker's pruner (which compares with COMPLETE trials only, whose reports are all written) and the
    dashboard, which shows a running trial's curve up to ``max_age`` seconds late. One transaction per
    epoch cost 8% of the quick start (docs/performance.md); one per trial and epoch 17%.
    """

    def __init__(self, study: optuna.Study, live: dict[int, optuna.Trial], drop: Callable[[int], None],
                 max_age: float | None = None) -> None:
        self._study, self._live, self._drop = study, live, drop
        self._pending: list[tuple[int, float, int]] = []
        self._written_at = -float("inf")  # the first epoch is written at once: the store shows the batch under way
        self.max_age = REPORT_WRITE_SECONDS if max_age is None else max_age

    def add(self, i: int, value: float, step: int) -> None:
        remember_report(self._live[i], step, value)
        self._pending.append((i, value, step))

    def flush(self, *, force: bool = True) -> None:
        """Write the pending reports (unless ``force`` is false and the last write is recent); a trial whose
        reports the store refuses (taken over after a pause) is dropped."""
        if not force and time.monotonic() - self._written_at < self.max_age:
            return
        pending = [(i, v, s) for i, v, s in self._pending if i in self._live]
        self._pending = []
        self._written_at = time.monotonic()
        if not pending:
            return
        refused = report_many(self._study, [(self._live[i], v, s) for i, v, s in pending])
        for i in dict.fromkeys(i for i, _, _ in pending):
            if any(self._live[i] is t for t in refused):
                self._drop(i)


@dataclass
class _TrialFigures:
    """What one trial of the batch has measured so far."""

    runs: dict[tuple[int, int], list[EpochStats]] = field(default_factory=dict)  # (fold, seed index) -> history
    models: dict[int, Any] = field(default_factory=dict)  # seed index -> its model (holdout: paired units)
    scores: dict[tuple[int, int], float] = field(default_factory=dict)  # (fold, seed index) -> metric (CV, not accuracy)
    history: list[dict[str, float | None]] = field(default_factory=list)  # the reported (first-seed) epochs, holdout

    def fold_major(self, repeats: int) -> list[list[EpochStats]]:
        """The trial's fits fold-major, as the CV objective lists them."""
        folds = sorted({f for f, _ in self.runs})
        return [self.runs[f, j] for f in folds for j in range(repeats)]


Owner = tuple[int, int, int]  # a member's (trial, fold, seed index)


def train_trials(study: optuna.Study, cfg: StudyConfig, prep: Prepared, live: dict[int, optuna.Trial],
                 lams: dict[int, float], *, tell: Tell, stop: Callable[[], bool] | None = None,
                 taken_over: Callable[[int], None] | None = None) -> None:
    """Train the live trials' members as one population per wave and tell every trial its state.

    ``taken_over(i)``: trial i was failed as stale while this process was paused (its report or
    attributes are refused); it is dropped from ``live`` and the batch goes on without it.
    """
    batch = _Batch(study, cfg, prep, live, tell=tell, stop=stop, taken_over=taken_over)
    for wave in batch.layout.waves:
        if not live:
            break
        batch.train_wave(wave, lams)
    batch.reports.flush()
    for i in sorted(live):
        batch.complete(i)


class _Batch:
    """The live trials of one batch while they train: what each measured, their reports, the pruner's view."""

    def __init__(self, study: optuna.Study, cfg: StudyConfig, prep: Prepared, live: dict[int, optuna.Trial], *,
                 tell: Tell, stop: Callable[[], bool] | None, taken_over: Callable[[int], None] | None) -> None:
        self.cfg, self.prep, self.live = cfg, prep, live
        self.tell, self.stop, self.taken_over = tell, stop, taken_over
        self.layout = layout(cfg, prep)
        self.repeats = len(self.layout.seeds)
        self.view = PrunerView(study, max_age=PRUNER_READ_SECONDS)
        self.reports = _Reports(study, live, self.drop)
        self.figures = {i: _TrialFigures() for i in live}
        self.metric = metric_of(cfg)

    def drop(self, i: int) -> None:
        """Trial ``i`` was taken over by another worker: the batch goes on without it."""
        if self.taken_over is not None:
            self.taken_over(i)
        else:
            self.live.pop(i, None)

    def train_wave(self, wave: list[int], lams: dict[int, float]) -> None:
        """The wave's folds of every live trial as one population; CV trials then report their folds."""
        owners = [(i, fold, j) for i in sorted(self.live) for fold in wave for j in range(self.repeats)]
        members = [Member(lams[i], self.layout.seeds[j], fit_set=fold) for i, fold, j in owners]
        cv = self.layout.scheme == "cv"
        scored = self.metric.name != "accuracy"  # CV folds of another metric are scored on their models
        results = trainers.train_population(self.layout.sets, members, net=self.prep.net, cfg=self.cfg.train,
                                            on_epoch=lambda ep: self.on_epoch(ep, owners),
                                            return_models=not cv or scored)
        for (i, fold, j), res in zip(owners, results, strict=True):
            if i in self.live and res.state == "complete":
                self.figures[i].runs[fold, j] = res.history
                if res.model is not None and not cv:  # per-example units, as the holdout objectives store them
                    self.figures[i].models[j] = res.model
                elif res.model is not None and scored:
                    s = self.layout.sets[fold]
                    assert s.x_val is not None and s.y_val is not None  # CV folds always hold their validation part
                    self.figures[i].scores[fold, j] = fit_score(self.cfg, res.model, s.x_val, s.y_val).value
        if cv:
            _report_folds(self.live, self.figures, wave, self.view, folds=self.cfg.search.folds, repeats=self.repeats,
                          tell=self.tell, drop=self.drop, metric=self.metric.name)

    def on_epoch(self, ep: PopulationEpoch, owners: list[Owner]) -> list[int]:
        """The population's epoch callback: fail the trials of failed members, report and prune holdout
        trials; returns the members of trials no longer live (they leave the population)."""
        if self.stop is not None and self.stop():
            raise TrialInterrupted(f"batch interrupted after epoch {ep.epoch}")
        self._fail(ep.failed, owners)
        if self.layout.scheme != "cv":
            self._report_epoch(ep, owners)
        return [m for m in ep.stats if owners[m][0] not in self.live]

    def _fail(self, failed: dict[int, str], owners: list[Owner]) -> None:
        if failed:
            self.reports.flush()  # a trial's reports reach the store before it is finished (it refuses them after)
        for m, reason in failed.items():
            i = owners[m][0]
            if i in self.live:
                if self.figures[i].history:
                    self.live[i].set_user_attr("history", self.figures[i].history)
                self.live[i].set_user_attr("fail_reason", reason)
                self.tell(i, TrialState.FAIL, None)

    def _report_epoch(self, ep: PopulationEpoch, owners: list[Owner]) -> None:
        """Holdout: each trial's first seed reports its epoch, as the holdout objectives do, and the pruner is asked."""
        live = self.live
        firsts = {owners[m][0]: s for m, s in ep.stats.items() if owners[m][2] == 0 and owners[m][0] in live}
        for i, s in firsts.items():
            self.figures[i].history.append(epoch_record(s))
            self.reports.add(i, self.metric.epoch(s.val_loss, s.val_acc), s.epoch)
        self.reports.flush(force=False)
        self.view.refresh()
        pruned = [i for i in firsts if i in live and self.view.should_prune(live[i])]
        if pruned:
            self.reports.flush()
        for i in pruned:
            if i in live:
                live[i].set_user_attr("history", self.figures[i].history)
                self.tell(i, TrialState.PRUNED, None)

    def complete(self, i: int) -> None:
        """Store trial ``i``'s attributes, as its single objective does, and tell it COMPLETE."""
        figures, scheme = self.figures[i], self.layout.scheme
        runs = figures.fold_major(self.repeats) if scheme == "cv" else list(figures.runs.values())
        n_val, metric = int(self.prep.y_val.shape[0]), self.metric.name
        models = [figures.models[j] for j in range(self.repeats)] if len(figures.models) == self.repeats else []
        fits: list[FitScore] = [fit_score(self.cfg, m, self.prep.x_val, self.prep.y_val) for m in models]
        if scheme == "cv":
            scores = None if metric == "accuracy" else [v for _, v in sorted(figures.scores.items())]
            attrs = many_fits_attrs(runs, per_group=self.repeats, seconds=_seconds(runs), scores=scores, metric=metric)
        elif scheme == "repeats":
            attrs = repeats_final_attrs(runs, n_val=n_val, seconds=_seconds(runs), metric=metric,
                                        scores=None if metric == "accuracy" else [f.value for f in fits])
        else:
            attrs = single_fit_attrs(runs[0], n_val=n_val)
        if models:
            attrs.update(model_attrs(self.cfg, self.prep, models, fits))  # one bitset (or score) per seed
        try:
            set_user_attrs(self.live[i], attrs)
        except UpdateFinishedTrialError:
            self.drop(i)
            return
        self.tell(i, TrialState.COMPLETE, trial_value(attrs))


def _seconds(runs: Sequence[Sequence[EpochStats]]) -> float:
    return sum(s.seconds for r in runs for s in r)


def _report_folds(live: dict[int, optuna.Trial], figures: dict[int, _TrialFigures], wave: list[int], view: PrunerView,
                  *, folds: int, repeats: int, tell: Tell, drop: Callable[[int], None], metric: str = "accuracy") -> None:
    """After a wave: each trial reports its folds one by one and is pruned as the CV objective would be."""
    for fold in wave:
        view.refresh()
        for i in sorted(live):
            runs = [r for (f, _), r in sorted(figures[i].runs.items()) if f <= fold]  # fold-major, as the objective
            scores = None if metric == "accuracy" else [v for (f, _), v in sorted(figures[i].scores.items()) if f <= fold]
            trial: Any = _Asked(live[i], view)
            try:
                pruned = report_fold(trial, runs, fold=fold, folds=folds, per_group=repeats, seconds=_seconds(runs),
                                     scores=scores, metric=metric)
            except UpdateFinishedTrialError:
                drop(i)
                continue
            if pruned:
                tell(i, TrialState.PRUNED, None)
