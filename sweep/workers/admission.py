"""The end of an admission: release the study lock, after dropping what a lost lock let overlap.

A worker admits trials under the study lock (``sweep.workers.loop``): it counts COMPLETE +
RUNNING trials and asks only for those that fit the target. A PostgreSQL advisory lock
dies with its transaction, and a server restart or a cut connection ends that
transaction without telling the worker, whose count and asks the outage handling
retries after the break. Another worker may then admit from the same count, past the
target or with a sampler of the same seed (the same lambdas). ``end_admission`` finds
the break after the asks (``StudyLock.held``) and fails the overlapping trials.
"""

from __future__ import annotations

import contextlib
import logging

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from sweep.objectives.prepared import PARAM
from sweep.selection import state_counts
from sweep.storages.lock import StudyLock
from sweep.storages.store import fail_stale

__all__ = ["SURPLUS", "end_admission"]
SURPLUS = "surplus: asked while the study lock was lost to a store outage, past the target or a duplicate"
log = logging.getLogger("sweep")


def end_admission(study: optuna.Study, target: int, lock: StudyLock, asked: list[optuna.Trial]) -> set[int]:
    """End the admission: release the lock, after failing any of ``asked`` that another admission overlapped.

    If the lock was lost during the admission (a store restart cuts its session; the count and the
    asks were retried after it), another worker may have admitted at the same time, from the same
    count: past the target, or with a sampler of the same seed, so the same lambdas. Then the lock is
    taken again and the study read again. Those of ``asked`` whose lambda another live or complete
    trial already has, and then any past the target (the latest first), are failed, so the study
    still ends with exactly the target of distinct lambdas. Returns the numbers of the trials failed.
    """
    dropped: set[int] = set()
    if lock.held():
        lock.release()
        return dropped
    lock.acquire()  # through the outage handling: waits for the store to come back
    fail_stale(study)
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    asked_numbers = {t.number for t in asked}
    lam_of = {t.number: t.params.get(PARAM) for t in trials}
    taken_lams = {lam_of[t.number] for t in trials
                  if t.number not in asked_numbers and t.state in (TrialState.RUNNING, TrialState.COMPLETE)}
    past_target = counts["COMPLETE"] + counts["RUNNING"] - target
    duplicates = [t for t in asked if lam_of[t.number] is not None and lam_of[t.number] in taken_lams]
    latest_first = [t for t in reversed(asked) if t not in duplicates]
    for trial in duplicates + latest_first[:max(0, past_target - len(duplicates))]:
        with contextlib.suppress(UpdateFinishedTrialError):  # failed as stale already: not RUNNING
            trial.set_user_attr("fail_reason", SURPLUS)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            dropped.add(trial.number)
            log.warning("trial %d dropped: asked while the study lock was lost to a store outage, in another "
                        "worker's slot or with its lambda; another trial takes its place", trial.number)
    lock.release()
    return dropped
