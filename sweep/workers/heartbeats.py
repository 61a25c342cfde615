"""Ask-and-tell trials on a shared store: their heartbeats, and the tell that finds one taken over.

Optuna's heartbeat runs only inside ``study.optimize``; with ask-and-tell a killed
process would leave its trials RUNNING for ever. So a thread here records a
heartbeat for every asked, not yet told trial, through the storage's own
``record_heartbeat``; a later admission's ``fail_stale`` (``sweep.storages.store``) then
fails them and the storage's ``RetryHeartbeatStaleTrialCallback`` queues them again
(WAITING), which the next ``study.ask`` picks up with the same lambda. A worker paused
past the grace period finds its trial failed that way when it resumes: ``tell_once``
refuses its result with one line. Single trials (``single.py``) and batches
(``batch.py``) alike.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from types import TracebackType

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from sweep.storages.optuna_compat import BaseHeartbeat, heartbeat_storage, storage_of, tell_past_stop, trial_id
from sweep.workers.testhook import pause_at

__all__ = ["Heartbeats", "ask", "requeue", "say_taken_over", "tell_once"]
log = logging.getLogger("sweep")


class Heartbeats:
    """Records a heartbeat for each live trial every ``heartbeat_interval`` seconds, from one thread."""

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = heartbeat_storage(storage)
        self._interval = self._storage.get_heartbeat_interval() or 0 if self._storage is not None else 0
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        # The first beat at once: a trial with no heartbeat row is never found stale.
        if self._storage is not None:
            self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _beat(self, storage: BaseHeartbeat) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = sorted(self._ids)
            for live in ids:
                with contextlib.suppress(Exception):  # a missed beat is retried next interval
                    storage.record_heartbeat(live)

    def __enter__(self) -> Heartbeats:
        if self._storage is not None:
            self._thread = threading.Thread(target=self._beat, args=(self._storage,), name="sweep-batch-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, stored RUNNING, with its first heartbeat at once: the caller's ``Heartbeats`` keeps it alive.

    Optuna's stale-trial query skips a RUNNING trial with no heartbeat row, so the first beat is written here,
    single trials and batches alike, not when training starts (``silent.adopt_silent`` covers a death in between).
    """
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; Heartbeats covers ask-and-tell.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    beats = heartbeat_storage(storage_of(study))
    if beats is not None:
        beats.record_heartbeat(trial_id(trial))
    pause_at("after_ask")
    return trial


def requeue(study: optuna.Study, number: int, params: dict[str, object]) -> None:
    """Give an interrupted trial's lambda back to the study, as the stale-trial retry does (the next ask takes it)."""
    study.enqueue_trial(dict(params), user_attrs={"retried_from": number}, skip_if_exists=False)


def say_taken_over(trial: optuna.Trial) -> None:
    """The one line for a trial another worker failed as stale while this one was paused or cut off."""
    log.warning("trial %d was taken over after a pause; result discarded", trial.number)


def tell_once(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None) -> bool:
    """Tell the store how ``trial`` ended; False (with a warning) when another worker had already failed it
    as stale while this one was paused, so this result is discarded. The one place both trial paths tell."""
    pause_at("before_tell")
    try:
        told = tell_past_stop(study, trial, state, value)
    except UpdateFinishedTrialError:
        told = None
    pause_at("after_tell")
    if told is None or told.state != state:
        say_taken_over(trial)
        return False
    return True
