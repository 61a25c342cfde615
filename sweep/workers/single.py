"""One trial, ask-and-tell: heartbeats, stop after an epoch on a signal, and a result refused when taken over.

``loop.run_one`` admits the trial (``study.ask`` under the study lock) and hands it
here. The objective runs with a heartbeat thread (``heartbeats.Heartbeats``); a stop signal
ends it after its current epoch or fold as FAIL "interrupted". A worker paused past the
grace period finds at its next report or ``tell`` that another worker failed the trial as
stale and queued its lambda again: it logs one line and drops the result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from sweep.errors import StoreOutageError, TrainingDivergedError, TrialInterrupted, first_line
from sweep.storages.optuna_compat import storage_of, trial_id
from sweep.workers.heartbeats import Heartbeats, requeue, say_taken_over, tell_once
from sweep.workers.testhook import pause_at

log = logging.getLogger("sweep")


class StopFlag:
    """Set by the first SIGTERM/SIGINT: the worker ends its trial cleanly and exits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        # While a trial trains a second signal ends it now; elsewhere (telling it, queueing its lambda again) it is
        # ignored: the worker is on its way out, and an exception there would lose the lambda.
        self.training = False

    def set(self, signum: int) -> None:
        self.signum = signum
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """First SIGTERM/SIGINT sets ``flag``; a second one raises KeyboardInterrupt (stop now)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    sigs = (signal.SIGTERM, signal.SIGINT)
    old = {s: signal.getsignal(s) for s in sigs}

    def handler(signum: int, frame: object) -> None:
        if flag:
            if flag.training:
                raise KeyboardInterrupt
            return
        flag.set(signum)
        # Said at once (os.write: no lock a signal handler could deadlock on), so a user knows the next one is "now".
        os.write(2, f"sweep: {signal.Signals(signum).name} received; the current trial ends after its epoch, "
                    "a second signal ends it now (its lambda is queued again either way)\n".encode())

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Stoppable:
    """The trial as the objective sees it: ``report`` (once per epoch or fold) ends the trial
    with "interrupted" after a stop signal, so holdout and CV objectives stop the same way."""

    def __init__(self, trial: optuna.Trial, stop: StopFlag) -> None:
        self._trial = trial
        self._stop = stop

    def report(self, value: float, step: int) -> None:
        self._trial.report(value, step)
        pause_at("mid_epoch")
        if self._stop:
            self._trial.set_user_attr("fail_reason", "interrupted")
            raise TrialInterrupted(f"trial {self._trial.number} interrupted after step {step}")

    def __getattr__(self, name: str) -> object:
        return getattr(self._trial, name)


def _fail_now(study: optuna.Study, trial: optuna.Trial, err: BaseException) -> None:
    """End ``trial`` FAIL at once. A second signal (``sweep run`` forwards SIGTERM after the terminal's SIGINT;
    Slurm's requeue follows ``scancel --signal=TERM``) is no verdict on the lambda: it is queued again."""
    interrupted = isinstance(err, KeyboardInterrupt)
    with contextlib.suppress(Exception):
        trial.set_user_attr("fail_reason", "interrupted" if interrupted else f"{type(err).__name__}: {first_line(err)}")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if interrupted:
            requeue(study, trial.number, dict(trial.params))


def run_single(study: optuna.Study, objective: Callable[[optuna.Trial], float], trial: optuna.Trial, *,
               stop: StopFlag) -> bool:
    """Run the objective on ``trial`` with heartbeats and tell the store; False when the trial was taken over
    (failed as stale while this worker was paused) and its result discarded."""
    state, value = TrialState.FAIL, None
    with Heartbeats(storage_of(study)) as beats:
        beats.add(trial_id(trial))
        try:
            stop.training = True
            try:
                value = objective(cast(optuna.Trial, _Stoppable(trial, stop)))
            finally:
                stop.training = False
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (TrainingDivergedError, TrialInterrupted) as err:
            # The objective stored the fail_reason; the progress line says it. Its traceback: --debug.
            log.debug("trial %d failed: %s", trial.number, err, exc_info=True)
        except UpdateFinishedTrialError:
            say_taken_over(trial)
            return False
        except BaseException as err:
            # Whatever else stopped the trial (a second signal, a bug, the store gone for good): FAIL, not RUNNING.
            if not isinstance(err, StoreOutageError):
                _fail_now(study, trial, err)
            raise
        finally:
            beats.discard(trial_id(trial))
    return tell_once(study, trial, state, value)
