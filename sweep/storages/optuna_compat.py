"""Every use of Optuna's private internals, in one place.

Optuna has no public way to do these things, and lambda-sweep needs them:

- the storage behind a ``Study`` (``study._storage``): ask-and-tell batches record
  heartbeats and read a finished trial back, as ``study.optimize`` does itself;
- the storage id of a ``Trial`` (``trial._trial_id``): heartbeats are keyed by it;
- a live trial's latest state without a storage read (``trial._get_latest_trial()``):
  a batch asks the pruner itself, reading the study's trials once per epoch, not once per member;
- whether a storage records heartbeats (``optuna.storages._heartbeat``), which
  ``study.optimize`` checks before it starts its own heartbeat thread;
- the private RDBStorage methods Optuna's own cache (``_CachedStorage``) calls for trial
  creation, reads and parameters (``BACKEND_PRIVATE_CALLS``): ``storage.SweepStorage`` retries
  them through a store outage like the public ones;
- the storage id of a ``Study`` (``study._study_id``) and the ids of its stale trials
  (``storage._get_stale_trial_ids``): ``storage.fail_stale`` is Optuna's
  ``fail_stale_trials`` plus the reason stored on each failed trial;
- RDBStorage's session (``_create_scoped_session``), its table models (``_rdb.models``:
  trial states, intermediate values and their encoding) and a live trial's cached reports
  (``trial._cached_frozen_trial``): a population's trials report an epoch in one
  transaction of three statements (``write_reports``), not a commit and three ORM queries each;
- RDBStorage's per-key attribute upsert (``_set_trial_attr_without_commit``) and a live trial's
  cached attributes: a trial's attributes are written in one transaction (``write_user_attrs``),
  not a commit per key.

``tests/storages/test_optuna_compat.py`` exercises each one against the installed Optuna,
so an Optuna release that moves them fails there, loudly, and not in a worker.
``pyproject.toml`` caps optuna at the newest version those tests ran against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial

# Private methods of RDBStorage that optuna.storages._CachedStorage (the wrapper every Study uses) calls;
# _get_stale_trial_ids is not here: storage.fail_stale retries it itself.
BACKEND_PRIVATE_CALLS = ("_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id")

__all__ = ["BACKEND_PRIVATE_CALLS", "BaseHeartbeat", "frozen", "heartbeat_storage", "latest_trial", "rdb_backend",
           "remember_report", "remember_user_attrs", "stale_trial_ids", "storage_of", "study_id", "trial_id",
           "write_reports", "write_user_attrs"]


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


def rdb_backend(study: optuna.Study) -> RDBStorage | None:
    """The RDBStorage under a study's cached storage wrapper, or None (an in-memory or journal storage)."""
    storage = storage_of(study)
    backend = getattr(storage, "_backend", storage)
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
