"""Ask-and-tell batches: K trials asked at once, trained as one population, told one by one.

``[search] batch = K`` (or ``"auto"``) makes ``study.run`` call ``run_batch`` instead
of ``study.optimize``. Each trial stores what the single objective stores (the same
intermediate values and user attributes), is pruned on its own, and is told
COMPLETE, PRUNED or FAIL; ``batch_trials`` trains the trials' members (fits: one, or
folds x repeats) as one population.

Optuna's heartbeat runs only inside ``study.optimize``; with ask-and-tell a killed
process would leave its trials RUNNING for ever. So a thread here records a
heartbeat for every asked, not yet told trial, through the storage's own
``record_heartbeat``; a later run's ``fail_stale_trials`` then fails them and the
storage's ``RetryHeartbeatStaleTrialCallback`` queues them again (WAITING), which
the next ``study.ask`` picks up with the same lambda.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable
from types import TracebackType

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from sweep.objectives.batched import fold_waves, start_attrs, train_trials
from sweep.config import StudyConfig
from sweep.errors import StoreOutageError, TrialInterrupted
from sweep.storages.optuna_compat import BaseHeartbeat, frozen, heartbeat_storage, storage_of
from sweep.storages.optuna_compat import trial_id as trial_id_of
from sweep.training import trainers
from sweep.objectives.prepared import Prepared, suggest_lambda
from sweep.storages.writes import set_user_attrs

log = logging.getLogger("sweep")


def say_taken_over(trial: optuna.Trial) -> None:
    """The one line for a trial another worker failed as stale while this one was paused or cut off."""
    log.warning("trial %d was taken over after a pause; result discarded", trial.number)


def tell_once(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None) -> bool:
    """Tell the store how ``trial`` ended; False (with a warning) when another worker had already failed it
    as stale while this one was paused, so this result is discarded. The one place both trial paths tell."""
    try:
        told = study.tell(trial, value, state=state, skip_if_finished=True)
    except UpdateFinishedTrialError:
        told = None
    except RuntimeError as err:
        # GridSampler calls study.stop() once the grid is used up, which Optuna allows only inside optimize;
        # the trial is stored all the same (tell's `finally`), and the run loop sees the exhausted grid.
        if "Study.stop" not in str(err):
            raise
        told = frozen(study, trial)
    if told is None or told.state != state:
        say_taken_over(trial)
        return False
    return True


def resolve_size(cfg: StudyConfig, prep: Prepared) -> int:
    """Trials per batch; 1 means the single-trial path (``study.optimize``).

    Populations train any network (``training.trainers`` picks the trainer); a trial of a CV or
    repeated study is several members (``batch_trials.Layout.per_trial``). Networks with buffers
    train trial by trial.
    """
    batch = cfg.search.batch
    if batch == 1:
        return 1
    reason = trainers.unsupported(prep.net, cfg.train)
    if reason is not None:
        warnings.warn(f"search.batch = {batch!r}: {reason}; training trials one at a time", UserWarning, stacklevel=2)
        return 1
    if batch == "auto":
        per_trial = (len(fold_waves(cfg)[0]) if cfg.search.validation == "cv" else 1) * cfg.search.repeats
        members = trainers.auto_size(prep.device, prep.net, cfg.train, n_fit=int(prep.y_train.shape[0]))
        return max(1, members // per_trial)
    return int(batch)


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
            for trial_id in ids:
                with contextlib.suppress(Exception):  # a missed beat is retried next interval
                    storage.record_heartbeat(trial_id)

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
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; _Heartbeats covers ask-and-tell.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def run_batch(study: optuna.Study, cfg: StudyConfig, prep: Prepared, *, size: int,
              after_ask: Callable[[list[optuna.Trial]], set[int]] | None = None,
              stop: Callable[[], bool] | None = None) -> list[FrozenTrial]:
    """Ask ``size`` trials, train them as one population, tell each; returns them finished, in order.

    ``after_ask`` runs once every member is stored as RUNNING, with the live ones: the worker ends its admission
    there and returns the numbers of any it failed (past the target, or another worker's lambda): not trained.
    When ``stop()`` turns true (a stop signal) the batch ends after the current epoch: its open trials
    are told FAIL with reason "interrupted" (the worker queues their lambdas again).
    """
    storage = storage_of(study)  # optuna's own fail_stale_trials reads it the same way
    live: dict[int, optuna.Trial] = {}
    trials: list[optuna.Trial] = []

    def taken_over(i: int) -> None:
        # Failed as stale while this process was paused: another worker runs its lambda again.
        trial = live.pop(i)
        heartbeats.discard(trial_id_of(trial))
        say_taken_over(trial)

    def attrs_or_taken_over(i: int, attrs: dict[str, object]) -> bool:
        try:
            set_user_attrs(live[i], attrs)
        except UpdateFinishedTrialError:
            taken_over(i)
            return False
        return True

    def tell(i: int, state: TrialState, value: float | None = None) -> None:
        trial = live.pop(i)
        heartbeats.discard(trial_id_of(trial))
        tell_once(study, trial, state, value)

    start = start_attrs(cfg, prep)
    with Heartbeats(storage) as heartbeats:
        try:
            lams: dict[int, float] = {}
            for i in range(size):
                trial = ask(study)
                heartbeats.add(trial_id_of(trial))
                live[i] = trial
                trials.append(trial)
                try:
                    lams[i] = suggest_lambda(trial, cfg.search)  # before the next ask: constant liar sees it
                    set_user_attrs(trial, {**start, "population": size})
                except UpdateFinishedTrialError:  # the store was out past the grace: another worker failed it
                    taken_over(i)
            if after_ask is not None:
                dropped = after_ask([live[i] for i in sorted(live)])
                for i in [i for i in live if live[i].number in dropped]:  # told FAIL by the worker: past the target
                    heartbeats.discard(trial_id_of(live.pop(i)))
            if live:
                train_trials(study, cfg, prep, live, lams, tell=tell, stop=stop, taken_over=taken_over)
        except BaseException as err:
            # Whatever stopped the batch (a stop signal, Ctrl-C, a storage error): its open trials end FAIL, not RUNNING.
            reason = "interrupted" if isinstance(err, TrialInterrupted) else f"batch stopped: {type(err).__name__}: {err}"
            if isinstance(err, StoreOutageError):
                raise  # the store is gone: the heartbeats stop, and the next worker retries these trials
            for i in list(live):
                try:
                    live[i].set_user_attr("fail_reason", reason)
                    tell(i, TrialState.FAIL)
                except Exception:  # noqa: BLE001 - the heartbeat will fail it later
                    pass
            if not isinstance(err, TrialInterrupted):
                raise
    numbers = {t.number for t in trials}
    return [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
