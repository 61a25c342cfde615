"""The refit claim: exactly one worker refits a finished study's chosen lambda, and a dead one's claim expires.

When a study reaches its target, the first worker to see it claims the refit (a study attribute
``refit_claim``, under the study lock) and the others skip it. The claimer refreshes the claim's
``beat`` (seconds since the epoch) every heartbeat interval while it refits; a claim whose beat is
older than the grace period belongs to a dead worker (SIGKILL, power loss) and is taken over, so the
test accuracy is not left missing for good. The beat is each worker's own clock (UTC seconds): clocks
of the workers must agree to well within the grace period (30 s by default), as NTP keeps them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import optuna

from sweep import study as study_mod
from sweep.config import StudyConfig
from sweep.selection import refit_matches, selection_of
from sweep.storages.lock import StudyLock
from sweep.storages.store import heartbeat_settings
from sweep.workers.testhook import pause_at

__all__ = ["claim_is_live", "refit_once"]
log = logging.getLogger("sweep")


def claim_is_live(claim: dict, *, now: float, grace: float) -> bool:
    """True while the claim's worker still refreshes it. A claim written before claims had a ``beat`` is judged by
    its ``at`` time: older than the grace period, it is dead (such claims were never refreshed)."""
    beat = claim.get("beat")
    if beat is None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            beat = dt.datetime.fromisoformat(claim["at"]).timestamp()
    return beat is not None and now - float(beat) <= grace


@contextlib.contextmanager
def _beating(study: optuna.Study, claim: dict, interval: float) -> Iterator[None]:
    """Refresh ``claim``'s beat every ``interval`` seconds until the refit ends."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is the next one's job
                study.set_user_attr("refit_claim", {**claim, "beat": time.time()})

    thread = threading.Thread(target=beat, name="sweep-refit-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def refit_once(study: optuna.Study, cfg: StudyConfig, store: optuna.storages.RDBStorage) -> bool:
    """Refit the chosen lambda unless it is stored or another live worker claimed it; True if this one did."""
    sel = selection_of(study, cfg)
    if sel is None:
        return False
    rule = cfg.search.rule
    pick = sel.picks[rule]
    interval, grace = heartbeat_settings()
    with StudyLock(store, study.study_name):
        attrs = optuna.load_study(study_name=study.study_name, storage=store).user_attrs
        if refit_matches(attrs.get("refit", {}).get(rule), pick):
            return False
        old = attrs.get("refit_claim", {})
        if old.get("trial") == pick.trial and old.get("lambda") == pick.lam:
            if claim_is_live(old, now=time.time(), grace=grace):
                return False  # another worker is refitting (a duplicate would store the same figures anyway)
            log.warning("the refit claim of %s by %s has had no beat for %d s; this worker refits instead",
                        study.study_name, old.get("by", "?"), grace)
        claim = {"trial": pick.trial, "lambda": pick.lam, "by": f"{socket.gethostname()}:{os.getpid()}",
                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        study.set_user_attr("refit_claim", {**claim, "beat": time.time()})
    with _beating(study, claim, interval):
        pause_at("mid_refit")
        study_mod.refit_best(study, cfg)
    return True
