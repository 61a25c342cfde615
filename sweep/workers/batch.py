"""Ask-and-tell batches: K trials asked at once, trained as one population, told one by one.

``[search] batch = K`` (or ``"auto"``) makes the worker (``loop.run_one``) call ``run_batch``
instead of ``single.run_single``. Each trial stores what the single objective stores (the same
intermediate values and user attributes), is pruned on its own, and is told COMPLETE, PRUNED
or FAIL; ``sweep.objectives.batched`` trains the trials' members (fits: one, or folds x repeats)
as one population. Every open trial has a heartbeat (``heartbeats.Heartbeats``) until it is told.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sweep.config import StudyConfig
from sweep.errors import ConfigError, StoreOutageError, TrialInterrupted
from sweep.objectives.batched import members_per_trial, start_attrs, train_trials
from sweep.objectives.prepared import Prepared, suggest_lambda
from sweep.storages.optuna_compat import storage_of, trial_id
from sweep.storages.writes import set_user_attrs
from sweep.training import trainers
from sweep.workers.heartbeats import Heartbeats, ask, requeue, say_taken_over, tell_once
from sweep.workers.testhook import pause_at

__all__ = ["resolve_size", "run_batch", "workers_per_device"]


def resolve_size(cfg: StudyConfig, prep: Prepared, *, per_device: int | None = None) -> int:
    """Trials per batch; 1 means the single-trial path (``single.run_single``).

    ``per_device``: the worker processes on this worker's GPU (None: ``SWEEP_WORKERS_PER_DEVICE``).

    Populations train any network (``training.trainers`` picks the trainer); a trial of a CV or
    repeated study is several members (``objectives.batched.members_per_trial``). Networks with buffers
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
        members = trainers.auto_size(prep.device, prep.net, cfg.train, x=prep.x_train, y=prep.y_train)
        if prep.device.type == "cuda":
            # auto_size offers half the device's free memory to this process; N workers on one GPU would each
            # take that same half, so each takes its share of it (SWEEP_WORKERS_PER_DEVICE, default 1).
            members //= per_device or workers_per_device()
        return max(1, members // members_per_trial(cfg))
    return int(batch)


def workers_per_device(default: int = 1) -> int:
    """How many worker processes share this worker's GPU (``SWEEP_WORKERS_PER_DEVICE``; ``default`` when unset)."""
    text = os.environ.get("SWEEP_WORKERS_PER_DEVICE", "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"SWEEP_WORKERS_PER_DEVICE must be a whole number of workers, 1 or more, got {text!r}; "
                          "set it to the number of workers started on each GPU, or unset it")
    return int(text)


class _OpenTrials:
    """A batch's trials asked and not yet told, by their place in the batch, each with a heartbeat until it ends."""

    def __init__(self, study: optuna.Study, heartbeats: Heartbeats) -> None:
        self._study, self._heartbeats = study, heartbeats
        self.live: dict[int, optuna.Trial] = {}
        self.asked: list[optuna.Trial] = []

    def add(self, i: int, trial: optuna.Trial) -> None:
        self._heartbeats.add(trial_id(trial))
        self.live[i] = trial
        self.asked.append(trial)

    def close(self, i: int) -> optuna.Trial:
        """Trial ``i`` leaves the batch (told, or no longer this worker's): no more heartbeats."""
        trial = self.live.pop(i)
        self._heartbeats.discard(trial_id(trial))
        return trial

    def taken_over(self, i: int) -> None:
        """Trial ``i`` was failed as stale while this process was paused: another worker runs its lambda again."""
        say_taken_over(self.close(i))

    def tell(self, i: int, state: TrialState, value: float | None = None) -> None:
        tell_once(self._study, self.close(i), state, value)

    def fail_all(self, reason: str, *, again: bool = False) -> None:
        """End every open trial FAIL with ``reason``, not RUNNING; one that cannot be told is left to the heartbeat.
        ``again``: queue each one's lambda again (a second stop signal is no verdict on them)."""
        for i in list(self.live):
            try:
                trial = self.live[i]
                trial.set_user_attr("fail_reason", reason)
                self.tell(i, TrialState.FAIL)
                if again:
                    requeue(self._study, trial.number, dict(trial.params))
            except Exception:  # noqa: BLE001 - the heartbeat will fail it later
                pass


def run_batch(study: optuna.Study, cfg: StudyConfig, prep: Prepared, *, size: int,
              after_ask: Callable[[list[optuna.Trial]], set[int]] | None = None,
              stop: Callable[[], bool] | None = None) -> list[FrozenTrial]:
    """Ask ``size`` trials, train them as one population, tell each; returns them finished, in order.

    ``after_ask`` runs once every member is stored as RUNNING, with the live ones: the worker ends its admission
    there and returns the numbers of any it failed (past the target, or another worker's lambda): not trained.
    When ``stop()`` turns true (a stop signal) the batch ends after the current epoch: its open trials
    are told FAIL with reason "interrupted" (the worker queues their lambdas again).
    """
    start = start_attrs(cfg, prep)
    with Heartbeats(storage_of(study)) as heartbeats:  # optuna's own fail_stale_trials reads the storage the same way
        batch = _OpenTrials(study, heartbeats)
        try:
            lams = _ask_all(batch, study, cfg, start, size=size)
            if after_ask is not None:
                dropped = after_ask([batch.live[i] for i in sorted(batch.live)])
                for i in [i for i in batch.live if batch.live[i].number in dropped]:  # told FAIL by the worker
                    batch.close(i)
            if batch.live:
                train_trials(study, cfg, prep, batch.live, lams, tell=batch.tell, stop=_with_hook(stop),
                             taken_over=batch.taken_over)
        except BaseException as err:
            # Whatever stopped the batch (a stop signal, Ctrl-C, a storage error): its open trials end FAIL, not RUNNING.
            if isinstance(err, StoreOutageError):
                raise  # the store is gone: the heartbeats stop, and the next worker retries these trials
            if isinstance(err, (TrialInterrupted, KeyboardInterrupt)):  # the first signal, or a second one
                batch.fail_all("interrupted", again=isinstance(err, KeyboardInterrupt))  # the first: loop._account
            else:
                batch.fail_all(f"batch stopped: {type(err).__name__}: {err}")
            if not isinstance(err, TrialInterrupted):
                raise
    numbers = {t.number for t in batch.asked}
    return [t for t in study.get_trials(deepcopy=False) if t.number in numbers]


def _ask_all(batch: _OpenTrials, study: optuna.Study, cfg: StudyConfig, start: dict[str, object], *,
             size: int) -> dict[int, float]:
    """Ask the batch's ``size`` trials, each drawing its lambda before the next ask (the constant liar sees it);
    returns the lambdas of those still open."""
    lams: dict[int, float] = {}
    for i in range(size):
        trial = ask(study)
        batch.add(i, trial)
        try:
            lams[i] = suggest_lambda(trial, cfg.search)
            pause_at("after_suggest")
            set_user_attrs(trial, {**start, "population": size})
        except UpdateFinishedTrialError:  # the store was out past the grace: another worker failed it
            batch.taken_over(i)
    return lams


def _with_hook(stop: Callable[[], bool] | None) -> Callable[[], bool]:
    """``stop``, asked once per epoch, with the test hook's "mid_epoch" point (``testhook``) in front of it."""
    def asked() -> bool:
        pause_at("mid_epoch")
        return stop is not None and stop()
    return asked
