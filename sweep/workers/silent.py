"""RUNNING trials with no heartbeat row: adopted, so that they go stale like any other.

Optuna's stale-trial query (``fail_stale`` in ``sweep.storages.store``) skips a RUNNING trial with no
heartbeat row, so a trial whose worker died between ``study.ask`` and its first heartbeat (SIGKILL,
Ctrl-C, the store gone past the outage budget), or one whose creation was retried after its commit
landed but its reply was lost, stayed RUNNING for ever and held its slot: the next worker waited
"busy" for good. Every admission (under the study lock) gives such a trial one heartbeat, with the
server's clock: a live owner goes on beating it (its first beat is only late), a dead one stops, and
the trial is failed as stale one grace period later, its lambda queued again, by the usual path.
Clock-free on the worker's side: no trial start time (written with each worker's own clock) is compared.
"""

from __future__ import annotations

from typing import Any

import optuna
import sqlalchemy.orm
from optuna.storages._rdb import models
from optuna.trial import TrialState

from sweep.storages.optuna_compat import backend_of, heartbeat_storage, storage_of, study_id

__all__ = ["adopt_silent"]


def _silent_ids(engine: sqlalchemy.Engine, study: int) -> list[int]:
    with sqlalchemy.orm.Session(engine) as session:
        rows = (session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study, models.TrialModel.state == TrialState.RUNNING,
                        ~models.TrialModel.heartbeats.any())
                .all())
    return [row[0] for row in rows]


def adopt_silent(study: optuna.Study) -> list[int]:
    """Give each RUNNING trial of ``study`` that has no heartbeat row its first one; returns their ids."""
    beats = heartbeat_storage(storage_of(study))
    backend: Any = backend_of(study)
    engine = getattr(backend, "engine", None)
    if beats is None or engine is None:
        return []  # no heartbeats (in-memory, or a read-only store): nothing goes stale anyway
    outage = getattr(backend, "outage", None)
    query = lambda: _silent_ids(engine, study_id(study))  # noqa: E731
    ids = outage.call(query) if outage is not None else query()
    for trial in ids:
        beats.record_heartbeat(trial)
    return ids
