"""Workers: many processes, one study store, exactly ``n_trials`` complete trials.

``sweep submit`` stores a study with its config (``study.create_or_load``). ``work``
runs trials of studies that still have budget, rebuilding each study's config from
the store, so workers need nothing but the storage URL. ``sweep.workers.run.run`` is
create_or_load + work (+ local worker processes) + the refit.

Exactness. Before a worker starts a trial it takes the study's lock (see
``sweep.storages.lock.StudyLock``), fails stale trials (``sweep.storages.store.fail_stale``:
their lambdas are queued again), counts COMPLETE + RUNNING trials and, only if that is below the
target, asks for the trial (``study.ask``, stored as RUNNING) and releases the lock.
Trials only become RUNNING through this admission and only RUNNING trials become
COMPLETE, so COMPLETE can never exceed the target; a slot freed by a failed or pruned
trial is taken by the next admission, so the study ends with exactly the target. A
PostgreSQL lock lost mid-admission (a server restart cuts its session) is found after
the asks, and trials past the target or with another's lambda are failed then
(``admission.end_admission``). Otherwise no trial is created just to be thrown away. A trial
draws its lambda as soon as it is asked. Single trials and batches are both
ask-and-tell, with heartbeats from ``heartbeats.Heartbeats``.

Faults. A worker killed with SIGKILL stops sending heartbeats; after the grace
period the next admission fails its trial ("stale: no heartbeat for N s") and
queues the same lambda, which the next worker picks up; a trial killed before its first
heartbeat is adopted (``silent``) and goes stale the same way. A worker paused past the
grace period finds its trial taken over when it resumes, drops the result with one
line, and goes on. Store outages are ridden out by the storage (``sweep.storages.outage``).
SIGTERM/SIGINT: the running trial ends after its current epoch as FAIL
("interrupted"), its lambda is enqueued again, and the worker exits admitting nothing
more; a second signal stops at once, and the lambda is queued again all the same.
Without ``--study``, a study that cannot be run is skipped with one line (``work``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sweep import study as study_mod
from sweep.errors import StorageError, SweepError, first_line
from sweep.objectives.prepared import Prepared, prepare, suggest_lambda
from sweep.objectives.scheme import make_objective
from sweep.storages.lock import StudyLock
from sweep.storages.optuna_compat import frozen
from sweep.storages.store import open_storage, resolve_url
from sweep.workers.admission import SURPLUS, end_admission
from sweep.workers.batch import resolve_size, run_batch
from sweep.workers.heartbeats import ask, requeue, say_taken_over
from sweep.workers.jobs import StudyJob, finished, free_slots, load_study, states, stop_verdict
from sweep.workers.refit import refit_once
from sweep.workers.single import StopFlag, run_single, stop_on_signals
from sweep.workers.testhook import pause_at

__all__ = ["StopFlag", "WorkSummary", "describe", "run_one", "stop_on_signals", "work"]
RAN, BUSY, DONE = "ran", "busy", "done"
log = logging.getLogger("sweep")


@dataclass
class WorkSummary:
    """What one worker did."""

    trials: list[int] = field(default_factory=list)  # numbers of the trials this worker ran
    finished: list[str] = field(default_factory=list)  # studies it saw reach their target
    refits: list[str] = field(default_factory=list)  # studies it refit
    interrupted: int | None = None  # the signal that stopped it
    interrupted_trial: int | None = None  # the trial it failed as "interrupted"


def run_one(job: StudyJob, store: optuna.storages.RDBStorage, *, stop: StopFlag,
            on_trial: study_mod.ProgressCallback | None = None, interrupted: list[int] | None = None) -> tuple[str, list[int]]:
    """Run one trial (or one batch) of ``job`` if the study has a free slot: (RAN, the numbers of the trials that
    ended here), (BUSY, []) or (DONE, []). Trials failed as "interrupted" are appended to ``interrupted``."""
    if finished(job, states(job.study)):  # COMPLETE never decreases: no lock needed to see this
        return DONE, []
    objective, prep = _objective_of(job)
    size = resolve_size(job.cfg, prep, per_device=job.per_device)  # above 1: a population of trials asked and told together
    verdict = stop_verdict(job)
    lock = StudyLock(store, job.study.study_name).acquire()
    try:
        if stop:  # a signal came while the data loaded or the lock was awaited: no new trial
            return BUSY, []
        free = free_slots(job, verdict)
        if free is None:
            return DONE, []
        if free == 0:
            return BUSY, []
        ended = (_run_batch(job, prep, lock, size=min(size, free), stop=stop) if size > 1
                 else _run_single(job, objective, lock, stop=stop))
    finally:
        lock.release()  # released already by end_admission, once the trials are asked; again on any error
    _account(job, ended, stop=stop, on_trial=on_trial, interrupted=interrupted if interrupted is not None else [],
             batch=size > 1)
    return RAN, [t.number for t in ended]


def _objective_of(job: StudyJob) -> tuple[Callable[[optuna.Trial], float], Prepared]:
    """The study's objective and data, made once: outside the lock, so workers load data in parallel."""
    if job.prep is None:
        job.prep = prepare(job.cfg)
    if job.objective is None:
        job.objective = make_objective(job.cfg, job.prep)
    return job.objective, job.prep


def _run_batch(job: StudyJob, prep: Prepared, lock: StudyLock, *, size: int, stop: StopFlag) -> list[FrozenTrial]:
    """Ask ``size`` trials, train them as one population, tell each: the trials this worker reports.

    The lock is released once every member is asked (RUNNING): no overshoot across workers.
    """
    study, target = job.study, job.cfg.search.n_trials
    stop.training = True  # a second signal ends the batch now (its lambdas queued again by run_batch)
    try:
        ended = run_batch(study, job.cfg, prep, size=size, stop=lambda: bool(stop),
                          after_ask=lambda asked: end_admission(study, target, lock, asked))
    finally:
        stop.training = False
    # Members failed as stale while this worker was paused were taken over (one line said so): not ours to report.
    # So were members dropped as surplus at admission (one line said so too).
    return [t for t in ended if not str(t.user_attrs.get("fail_reason", "")).startswith(("stale: ", SURPLUS))]


def _run_single(job: StudyJob, objective: Callable[[optuna.Trial], float], lock: StudyLock, *,
                stop: StopFlag) -> list[FrozenTrial]:
    """Ask one trial, end the admission, run it: the trial as stored, or [] when it is not this worker's to report
    (taken over after a pause, or dropped as surplus at admission)."""
    study = job.study
    trial = ask(study)  # stored RUNNING: the slot is taken
    try:
        suggest_lambda(trial, job.cfg.search)  # drawn now, as a batch draws: end_admission compares lambdas
        pause_at("after_suggest")
    except UpdateFinishedTrialError:  # the store was out past the grace: another worker failed it
        say_taken_over(trial)
        return []
    if end_admission(study, job.cfg.search.n_trials, lock, [trial]):
        return []
    if not run_single(study, objective, trial, stop=stop):
        return []
    return [frozen(study, trial)]


def _account(job: StudyJob, ended: list[FrozenTrial], *, stop: StopFlag, on_trial: study_mod.ProgressCallback | None,
             interrupted: list[int], batch: bool) -> None:
    """After trials ended here: give interrupted trials' lambdas back, one progress line per trial, and stop
    the worker after too many failures in a row.

    A batch's interrupted members get no progress line (the stop message names the last); a single
    interrupted trial gets its line, and counts as a failure, as it always has.
    """
    target = job.cfg.search.n_trials
    for i, trial in enumerate(ended):
        if _requeue_if_interrupted(job.study, trial):
            interrupted.append(trial.number)
            if batch:
                continue
        job.failures = job.failures + 1 if trial.state == TrialState.FAIL else 0
        if on_trial is not None:
            # The store counts every member of a batch at once; each line counts the members told up to it.
            later = sum(t.state == TrialState.COMPLETE for t in ended[i + 1:])
            p = study_mod.progress(job.study, trial, target)
            on_trial(dataclasses.replace(p, complete=p.complete - later))
    if ended and job.failures >= max(5, target) and not stop:
        raise SweepError(
            f"study {job.study.study_name!r}: the last {job.failures} trials failed "
            f"({ended[-1].user_attrs.get('fail_reason', 'see sweep show')}); fix the study file "
            "(train.lr, the lambda range) and run again"
        )


def _requeue_if_interrupted(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Give an interrupted trial's lambda back to the study, as the stale-trial retry does; True if it was one."""
    if trial.state != TrialState.FAIL or trial.user_attrs.get("fail_reason") != "interrupted":
        return False
    requeue(study, trial.number, dict(trial.params))
    return True


def _sweep_studies(store: optuna.storages.RDBStorage) -> list[str]:
    """Names of the lambda-sweep studies in the store (those with a stored config)."""
    return [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False) if "config" in s.user_attrs]


def work(storage: str | None = None, *, study_name: str | None = None, wait: bool = False, poll: float = 5.0,
         refit: bool = True, on_trial: study_mod.ProgressCallback | None = None,
         stop: StopFlag | None = None, objective: Callable[[optuna.Trial], float] | None = None,
         prep: Prepared | None = None, trust: tuple[str, ...] = (), per_device: int | None = None) -> WorkSummary:
    """Run trials until the named study (or every lambda-sweep study) has its target of complete trials.

    While all free slots are taken by other workers' running trials the worker polls
    (every ``poll`` seconds): one of them may die and its trial need a retry. With
    ``wait`` it keeps polling for new studies instead of returning. ``stop`` (set by a
    signal) ends the current trial cleanly and returns. ``objective``: the named study's
    objective, already made by the caller (``sweep.workers.run.run`` makes it before touching the store).
    ``trust``: the factory prefixes this worker may import (``sweep.workers.trust``). Without ``study_name``
    a study that cannot be run (a broken stored config, an untrusted or changed factory, too many failures
    in a row) is skipped with one line and the others go on; with it, its error ends the worker.
    ``per_device``: worker processes sharing this one's GPU, for ``search.batch = "auto"`` (None: the environment's
    ``SWEEP_WORKERS_PER_DEVICE``).
    """
    url = resolve_url(storage)
    store = open_storage(storage)
    stop = stop if stop is not None else StopFlag()
    summary = WorkSummary()
    jobs: dict[str, StudyJob] = {}
    skipped: set[str] = set()
    interrupted: list[int] = []  # trials this worker failed as "interrupted"
    while not stop:
        names = [study_name] if study_name else [n for n in _sweep_studies(store) if n not in skipped]
        progressed = busy = False
        for name in names:
            if stop:
                break
            if name in summary.finished:
                continue
            try:
                state = _step(jobs, name, store, url, trust=trust, stop=stop, on_trial=on_trial,
                              interrupted=interrupted, summary=summary, refit=refit, per_device=per_device,
                              given=(objective, prep) if name == study_name else None)
            except SweepError as err:
                if study_name is not None or isinstance(err, StorageError):
                    raise  # one study asked for, or the store itself failing: this worker stops
                skipped.add(name)
                log.warning("study %r skipped: %s", name, first_line(err))
                continue
            progressed |= state == RAN
            busy |= state == BUSY
        if progressed:
            continue
        if not busy and not wait:
            break
        stop.event.wait(poll)
    summary.interrupted = stop.signum
    summary.interrupted_trial = interrupted[-1] if interrupted else None
    return summary


def _step(jobs: dict[str, StudyJob], name: str, store: optuna.storages.RDBStorage, url: str, *,
          trust: tuple[str, ...], stop: StopFlag, on_trial: study_mod.ProgressCallback | None, interrupted: list[int],
          summary: WorkSummary, refit: bool, per_device: int | None,
          given: tuple[Callable[[optuna.Trial], float] | None, Prepared | None] | None,
          ) -> str:
    """One trial (or batch) of study ``name``, loading it first; at its target, its refit. Returns RAN, BUSY or DONE."""
    if name not in jobs:
        job = load_study(store, name, url, trust)
        job.per_device = per_device
        if given is not None and given[0] is not None:
            job.objective, job.prep = given
        jobs[name] = job
    job = jobs[name]
    state, numbers = run_one(job, store, stop=stop, on_trial=on_trial, interrupted=interrupted)
    if state == RAN:
        summary.trials.extend(numbers)
    elif state == DONE:
        summary.finished.append(name)
        if refit and refit_once(job.study, job.cfg, store):
            summary.refits.append(name)
    return state


def describe(summary: WorkSummary) -> str:
    """One line for the CLI."""
    lams = f"{len(summary.trials)} trial{'s' if len(summary.trials) != 1 else ''}"
    done = ", ".join(summary.finished) or "none"
    return f"worker ran {lams}; studies at target: {done}; refits: {', '.join(summary.refits) or 'none'}"
