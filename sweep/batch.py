"""Ask-and-tell batches: K trials asked at once, trained as one population, told one by one.

``[search] batch = K`` (or ``"auto"``) makes ``study.run`` call ``run_batch`` instead
of ``study.optimize``. Each member stores what the single objective stores (the same
intermediate values and user attributes), is pruned on its own, and is told
COMPLETE, PRUNED or FAIL.

Optuna's heartbeat runs only inside ``study.optimize``; with ask-and-tell a killed
process would leave its trials RUNNING for ever. So a thread here records a
heartbeat for every asked, not yet told trial, through the storage's own
``record_heartbeat``; a later run's ``fail_stale_trials`` then fails them and the
storage's ``RetryHeartbeatStaleTrialCallback`` queues them again (WAITING), which
the next ``study.ask`` picks up with the same lambda.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from types import TracebackType

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from sweep.config import StudyConfig
from sweep.errors import TrialInterrupted
from sweep.optuna_compat import BaseHeartbeat, heartbeat_storage, storage_of
from sweep.optuna_compat import trial_id as trial_id_of
from sweep.training.population import PopulationEpoch, auto_size, fit_population
from sweep.trial_attrs import correct_bits, epoch_record, single_fit_attrs, write_attrs
from sweep.trial_data import Prepared, suggest_lambda


def resolve_size(cfg: StudyConfig, prep: Prepared) -> int:
    """Members per population; 1 means the single-trial path (``study.optimize``).

    Only penalty ``l2`` on a single holdout fit has a population trainer; other penalties,
    CV and repeats train trial by trial.
    """
    batch = cfg.search.batch
    if batch == 1:
        return 1
    if cfg.train.penalty != "l2":
        warnings.warn(f"search.batch = {batch!r} applies to train.penalty = 'l2' only; "
                      f"training {cfg.train.penalty!r} trials one at a time", UserWarning, stacklevel=2)
        return 1
    if cfg.search.validation != "holdout" or cfg.search.repeats > 1:
        warnings.warn(f"search.batch = {batch!r} applies to one holdout fit per trial only; "
                      "training cross-validated or repeated trials one at a time", UserWarning, stacklevel=2)
        return 1
    if batch == "auto":
        return auto_size(prep.device, hidden=cfg.model.hidden, batch_size=cfg.train.batch_size,
                         n_fit=int(prep.y_fit.shape[0]))
    return int(batch)


class _Heartbeats:
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

    def __enter__(self) -> _Heartbeats:
        if self._storage is not None:
            self._thread = threading.Thread(target=self._beat, args=(self._storage,), name="sweep-batch-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; _Heartbeats covers ask-and-tell.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def run_batch(study: optuna.Study, cfg: StudyConfig, prep: Prepared, *, size: int,
              after_ask: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None) -> list[FrozenTrial]:
    """Ask ``size`` trials, train them as one population, tell each; returns them finished, in order.

    ``after_ask`` runs once every member is stored as RUNNING (the worker releases its admission lock there).
    When ``stop()`` turns true (a stop signal) the batch ends after the current epoch: its open trials
    are told FAIL with reason "interrupted" (the worker queues their lambdas again).
    """
    storage = storage_of(study)  # optuna's own fail_stale_trials reads it the same way
    if heartbeat_storage(storage) is not None:
        optuna.storages.fail_stale_trials(study)  # what study.optimize does before each trial
    seed = cfg.train.seed  # one seed for all lambdas, as in the single objective
    live: dict[int, optuna.Trial] = {}
    histories: dict[int, list[dict[str, float]]] = {}
    trials: list[optuna.Trial] = []

    def tell(i: int, state: TrialState, value: float | None = None) -> None:
        trial = live.pop(i)
        heartbeats.discard(trial_id_of(trial))
        try:
            study.tell(trial, value, state=state)
        except RuntimeError as err:
            # GridSampler calls study.stop() once the grid is used up, which Optuna allows only inside
            # optimize; the trial is stored all the same (tell's `finally`), and run() sees the exhausted grid.
            if "Study.stop" not in str(err):
                raise

    with _Heartbeats(storage) as heartbeats:
        try:
            lams = []
            for i in range(size):
                trial = _ask(study)
                heartbeats.add(trial_id_of(trial))
                live[i], histories[i] = trial, []
                trials.append(trial)
                lams.append(suggest_lambda(trial, cfg.search))  # before the next ask: constant liar sees it
                write_attrs(trial, {"device": str(prep.device), "seed": seed, "population": size})
            if after_ask is not None:
                after_ask()

            def on_epoch(ep: PopulationEpoch) -> list[int]:
                if stop is not None and stop():
                    raise TrialInterrupted(f"batch interrupted after epoch {ep.epoch}")
                stop_rows = []
                for i, reason in ep.failed.items():
                    live[i].set_user_attr("history", histories[i])
                    live[i].set_user_attr("fail_reason", reason)
                    tell(i, TrialState.FAIL)
                for i, s in ep.stats.items():
                    histories[i].append(epoch_record(s))
                    live[i].report(s.val_acc, s.epoch)
                    if live[i].should_prune():
                        live[i].set_user_attr("history", histories[i])
                        tell(i, TrialState.PRUNED)
                        stop_rows.append(i)
                return stop_rows

            results = fit_population(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lams=lams,
                                     seeds=[seed] * size, cfg=cfg.train, hidden=cfg.model.hidden,
                                     on_epoch=on_epoch, return_models=True)
            n_val = int(prep.y_val.shape[0])
            for i, r in enumerate(results):
                if r.state != "complete":
                    continue
                attrs = single_fit_attrs(r.history, n_val=n_val)
                if r.model is not None:  # per-example correctness, as the single objective stores it
                    attrs["val_correct"] = [correct_bits(r.model, prep.x_val, prep.y_val)]
                write_attrs(live[i], attrs)
                tell(i, TrialState.COMPLETE, r.history[-1].val_acc)
        except BaseException as err:
            # Whatever stopped the batch (a stop signal, Ctrl-C, a storage error): its open trials end FAIL, not RUNNING.
            reason = "interrupted" if isinstance(err, TrialInterrupted) else f"batch stopped: {type(err).__name__}: {err}"
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
