"""Every use of Optuna's private internals, in one place.

Optuna has no public way to do these things, and lambda-sweep needs them:

- the storage behind a ``Study`` (``study._storage``): ask-and-tell batches record
  heartbeats and read a finished trial back, as ``study.optimize`` does itself;
- the storage id of a ``Trial`` (``trial._trial_id``): heartbeats are keyed by it;
- a live trial's latest state without a storage read (``trial._get_latest_trial()``):
  a batch asks the pruner itself, reading the study's trials once per epoch, not once per member;
- whether a storage records heartbeats (``optuna.storages._heartbeat``), which
  ``study.optimize`` checks before it starts its own heartbeat thread;
- the storage under Optuna's cache (``_CachedStorage._backend``) and the private RDBStorage
  methods that cache calls for trial creation, reads and parameters (``BACKEND_PRIVATE_CALLS``):
  ``store.SweepStorage`` retries them through a store outage like the public ones;
- the storage id of a ``Study`` (``study._study_id``) and the ids of its stale trials
  (``storage._get_stale_trial_ids``): ``store.fail_stale`` is Optuna's
  ``fail_stale_trials`` plus the reason stored on each failed trial;
- RDBStorage's session (``_create_scoped_session``), its table models (``_rdb.models``:
  trial states, intermediate values and their encoding) and a live trial's cached reports
  (``trial._cached_frozen_trial``): a population's trials report an epoch in one
  transaction of three statements (``write_reports``), not a commit and three ORM queries each;
- RDBStorage's per-key attribute upsert (``_set_trial_attr_without_commit``) and a live trial's
  cached attributes: a trial's attributes are written in one transaction (``write_user_attrs``),
  not a commit per key.

And two behaviours of Optuna's that lambda-sweep relies on:

- the median (percentile) pruner and the no-op pruner read the study only through
  ``study.get_trials(states=(COMPLETE,))``: a batch's ``PrunerView`` hands them the study's
  trials read once every few seconds, not once per member and epoch;
- ``GridSampler`` calls ``study.stop()`` once the grid is used up, which outside ``optimize``
  raises a ``RuntimeError`` about "Study.stop" after the trial is stored: ``tell_past_stop``
  takes that as told.

``tests/storages/test_optuna_compat.py`` exercises each one against the installed Optuna,
so an Optuna release that moves them fails there, loudly, and not in a worker.
``pyproject.toml`` caps optuna at the newest version those tests ran against.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState


@contextlib.contextmanager
def experimental_allowed() -> Iterator[None]:
    """Optuna's "experimental" features this project relies on (heartbeats and their retry callback, metric
    names, the QMC sampler), used without a warning each time: silenced around those calls only, so a program
    that imports sweep keeps its own warning filters as it set them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


# Private methods of RDBStorage that optuna.storages._CachedStorage (the wrapper every Study uses) calls;
# _get_stale_trial_ids is not here: store.fail_stale retries it itself.
BACKEND_PRIVATE_CALLS = ("_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id")

# Pruners that read the study only as its COMPLETE trials (MedianPruner is a PercentilePruner).
COMPLETE_ONLY_PRUNERS = (optuna.pruners.PercentilePruner, optuna.pruners.NopPruner)

__all__ = ["BACKEND_PRIVATE_CALLS", "COMPLETE_ONLY_PRUNERS", "BaseHeartbeat", "PrunerView", "backend_of", "frozen",
           "heartbeat_storage", "latest_trial", "rdb_backend", "remember_report", "remember_user_attrs",
           "stale_trial_ids", "storage_of", "study_id", "tell_past_stop", "trial_id", "write_reports",
           "write_user_attrs"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (Optuna's cached wrapper around the RDB storage)."""
    return study._storage


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a live trial (not its per-study ``number``)."""
    return trial._trial_id


def frozen(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """A live trial as the store has it now (state, values, attributes)."""
    return storage_of(study).get_trial(trial_id(trial))


def latest_trial(trial: optuna.Trial) -> FrozenTrial:
    """A live trial as this process last wrote it, without a storage read: what ``should_prune`` gives the pruner."""
    return trial._get_latest_trial()


def heartbeat_storage(storage: BaseStorage) -> BaseHeartbeat | None:
    """``storage`` when it records heartbeats (a heartbeat interval was set), else None."""
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        return storage
    return None


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study (not its name)."""
    return study._study_id


def stale_trial_ids(storage: BaseStorage, study: int) -> list[int]:
    """Ids of the study's RUNNING trials whose last heartbeat is older than the grace period (the server's clock)."""
    if not isinstance(storage, BaseHeartbeat):
        return []
    return storage._get_stale_trial_ids(study)


def backend_of(study: optuna.Study) -> BaseStorage:
    """The storage under a study's cached storage wrapper (``_CachedStorage._backend``); the storage itself when
    it has no wrapper."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage)


def rdb_backend(study: optuna.Study) -> RDBStorage | None:
    """The RDBStorage under a study's cached storage wrapper, or None (an in-memory or journal storage)."""
    backend = backend_of(study)
    return backend if isinstance(backend, RDBStorage) else None


def write_reports(backend: RDBStorage, reports: list[tuple[int, int, float]]) -> set[int]:
    """Store intermediate values ``(trial id, step, value)`` of several trials in one transaction.

    The rows ``Trial.report`` stores (Optuna's ``trial_intermediate_values`` table, its value encoding),
    written by three statements in all instead of three ORM queries and a commit per report. A trial
    that is finished already (failed as stale while its worker was paused) is not written; its id is
    returned. Writing a report again replaces it, so a transaction retried after an outage is harmless.
    """
    ids = sorted({tid for tid, _, _ in reports})
    values = models.TrialIntermediateValueModel
    trials = models.TrialModel
    with _create_scoped_session(backend.scoped_session, True) as session:
        found = session.execute(sqlalchemy.select(trials.trial_id, trials.state).where(trials.trial_id.in_(ids)))
        states = {tid: state for tid, state in found}
        missing = [tid for tid in ids if tid not in states]
        if missing:
            raise KeyError(f"no trial with id {missing[0]} in the store")
        refused = {tid for tid in ids if states[tid].is_finished()}
        rows = []
        for tid, step, value in reports:
            if tid not in refused:
                stored, kind = values.intermediate_value_to_stored_repr(value)
                rows.append({"trial_id": tid, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
        if rows:
            session.execute(sqlalchemy.delete(values).where(
                sqlalchemy.tuple_(values.trial_id, values.step).in_([(r["trial_id"], r["step"]) for r in rows])))
            session.execute(sqlalchemy.insert(values), rows)
    return refused


def remember_report(trial: optuna.Trial, step: int, value: float) -> None:
    """Record a report stored by ``write_reports`` in the live trial, as ``Trial.report`` does: the pruner reads it there."""
    trial._cached_frozen_trial.intermediate_values[step] = value


def write_user_attrs(backend: RDBStorage, trial: int, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` as user attributes of the trial with id ``trial``, in one transaction.

    Optuna's own upsert of one attribute (``RDBStorage._set_trial_attr_without_commit``: its SQL for each
    database, and its ``UpdateFinishedTrialError`` for a finished trial) for every key, in one session and
    one commit instead of a commit per key. Writing again replaces the values, so a transaction retried
    after an outage is harmless; a refused one writes nothing.
    """
    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial, key, value)


def remember_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Record attributes stored by ``write_user_attrs`` in the live trial, as ``Trial.set_user_attr`` does."""
    trial._cached_frozen_trial.user_attrs.update(attrs)


def tell_past_stop(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None) -> FrozenTrial:
    """``study.tell(trial, value, state=state, skip_if_finished=True)``: the trial as the store has it after.

    ``GridSampler`` calls ``study.stop()`` once the grid is used up, which Optuna allows only inside
    ``optimize``: outside it raises ``RuntimeError("`Study.stop` is supposed to be invoked inside ...")``.
    ``tell`` stores the trial all the same (in its ``finally``), so that error is taken as told and the
    trial read back; the run loop sees the exhausted grid itself.
    """
    try:
        return study.tell(trial, value, state=state, skip_if_finished=True)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return frozen(study, trial)


class PrunerView:
    """The study as a pruner of ``COMPLETE_ONLY_PRUNERS`` reads it: its trials read at most every ``max_age``
    seconds, not once per member and epoch.

    Such a pruner compares a trial with the COMPLETE trials only. In one process none of those
    changes while a batch trains (its own trials complete at its end), so a batch reads them once
    and decides as ``should_prune`` would. Another worker's trial that completes meanwhile is seen
    at the next read, at most ``max_age`` seconds later: as if it had finished that much later.
    Reading every epoch cost 17% of the quick start's wall time (docs/performance.md).
    Any other pruner (hyperband reads every trial) goes through ``trial.should_prune()``.
    """

    def __init__(self, study: optuna.Study, *, max_age: float) -> None:
        self._study = study
        self._trials: list[FrozenTrial] | None = None
        self._read_at = 0.0
        self.max_age = max_age
        self.fast = isinstance(study.pruner, COMPLETE_ONLY_PRUNERS)

    def refresh(self) -> None:
        """Read the trials again at the next use, if the last read is older than ``max_age``."""
        if time.monotonic() - self._read_at >= self.max_age:
            self._trials = None

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        if self._trials is None:
            self._trials = self._study.get_trials(deepcopy=False)
            self._read_at = time.monotonic()
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def should_prune(self, trial: optuna.Trial) -> bool:
        """What ``trial.should_prune()`` decides (Optuna's: ``pruner.prune(study, latest trial)``)."""
        if not self.fast:
            return trial.should_prune()
        return bool(self._study.pruner.prune(self, latest_trial(trial)))  # type: ignore[arg-type]
