"""A study a worker runs: loaded from the store (its factories trusted, their code unchanged), its free slots
under the study lock, and the stop decision.

``loop.run_one`` takes the study lock and calls ``free_slots``: stale trials are failed (their lambdas
queued again), trials left with no heartbeat at all are adopted so that they go stale too
(``silent.adopt_silent``), and COMPLETE + RUNNING is counted against the target. The stop rule of
``search.stop = "resolved"`` is fitted before the lock is taken (``stop_verdict``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from sweep import study as study_mod
from sweep.config import StudyConfig, require_config
from sweep.errors import StudyNotFoundError
from sweep.objectives.prepared import Prepared
from sweep.selection import selection_of, state_counts, stop_reason
from sweep.storages.store import fail_stale, mask
from sweep.training.factories import check_fingerprints
from sweep.workers.silent import adopt_silent
from sweep.workers.trust import check_trusted

__all__ = ["StudyJob", "finished", "free_slots", "load_study", "states", "stop_verdict"]


@dataclass
class StudyJob:
    """A study this worker runs trials of: loaded from the store, its data and objective made at its first trial."""

    study: optuna.Study
    cfg: StudyConfig
    objective: Callable[[optuna.Trial], float] | None = None
    prep: Prepared | None = None
    failures: int = 0  # trials in a row that ended FAIL here
    per_device: int | None = None  # worker processes on this one's GPU (None: SWEEP_WORKERS_PER_DEVICE)


def load_study(store: optuna.storages.RDBStorage, name: str, url: str, trusted: tuple[str, ...]) -> StudyJob:
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise StudyNotFoundError(
            f"no study named {name!r} in {mask(url)}; submit it first with 'sweep submit STUDY.toml --storage URL'"
        ) from None
    cfg = require_config(study.user_attrs, name, where=mask(url), fix="a worker cannot run it")
    check_trusted(cfg, trusted)  # before anything imports the study's factories
    check_fingerprints(study.user_attrs.get("factories"), cfg)  # this process's factory code is the study's
    study.pruner = study_mod.make_pruner(cfg)
    return StudyJob(study, cfg)


def states(study: optuna.Study) -> dict[str, int]:
    return state_counts(study.get_trials(deepcopy=False))


def finished(job: StudyJob, counts: dict[str, int], *, reason: str | None = None, complete: int = 0) -> bool:
    """Target reached, grid used up, or (``search.stop = "resolved"``) the answer resolved.

    ``reason`` (under the study lock): the stop rule's verdict, found before the lock was taken
    (``_stop_verdict``); stored, so every worker sees the same decision in the ``stopped`` study
    attribute. Without it only that attribute is read.
    """
    if counts["COMPLETE"] >= job.cfg.search.n_trials:
        return True
    if job.cfg.search.sampler == "grid" and study_mod.grid_exhausted(job.study, job.cfg):
        return True
    if job.cfg.search.stop != "resolved":
        return False
    if "stopped" in job.study.user_attrs:
        return True
    if reason is None:
        return False
    job.study.set_user_attr("stopped", {"reason": reason, "complete": complete,
                                        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    return True


def stop_verdict(job: StudyJob) -> tuple[str | None, int]:
    """The stop rule's reason to stop (None: go on) and the complete trials it saw. Outside the study lock: the
    smoothing fit of ``stop = "resolved"`` takes seconds, and other workers' admissions must not wait on it."""
    if job.cfg.search.stop != "resolved" or "stopped" in job.study.user_attrs:
        return None, 0
    sel = selection_of(job.study, job.cfg)
    return (stop_reason(sel, job.cfg), len(sel.scores)) if sel is not None else (None, 0)


def free_slots(job: StudyJob, verdict: tuple[str | None, int]) -> int | None:
    """Under the study lock: the slots free for new trials (target - COMPLETE - RUNNING; 0: all taken by running
    trials), or None when the study is finished. Seeds the sampler for the trials about to be asked."""
    # Dead workers' trials are failed (and their lambdas re-queued) before counting.
    fail_stale(job.study)
    adopt_silent(job.study)  # a trial left with no heartbeat at all goes stale one grace period from now
    counts = states(job.study)
    if finished(job, counts, reason=verdict[0], complete=verdict[1]):
        return None
    free = job.cfg.search.n_trials - counts["COMPLETE"] - counts["RUNNING"]
    if free <= 0:
        return 0
    # Seeded by the next trial number: concurrent workers draw different lambdas, and a
    # single process is reproducible and does not replay its start when resumed.
    job.study.sampler = study_mod.make_sampler(job.cfg, offset=sum(counts.values()))
    return free
