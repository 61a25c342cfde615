"""Riding out store outages: retry a store access with backoff for an outage budget.

A PostgreSQL restart, a network blip or a full disk makes store accesses fail for a
while. Every access on a worker's path goes through ``Outage.call``: a transient
failure is retried with backoff (0.2 s doubling to 5 s) until the store answers again
or the outage has lasted ``SWEEP_STORE_OUTAGE`` seconds (default 120). One line is
logged when the store goes away and one when it comes back, however many threads
see the outage; past the budget the call raises ``StoreOutageError`` (one line, no
traceback), the worker exits, and its trials are retried by the next worker once
their heartbeats are older than the grace period.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from sweep.errors import StorageError, StoreOutageError, first_line
from sweep.storages.classify import transient

OUTAGE_SECONDS = 120  # env SWEEP_STORE_OUTAGE overrides
log = logging.getLogger("sweep")
T = TypeVar("T")
__all__ = ["OUTAGE_SECONDS", "RUN_STOPS", "WORKER_STOPS", "Outage", "outage_budget", "transient"]
# What an outage past the budget stops, and the fix: a worker's words, and sweep run's (``StoreOutageError.saying``).
WORKER_STOPS = ("this worker stops, and its running trials are retried once their heartbeats are older than the "
                "grace period; check the database server and disk, then start the worker again")
RUN_STOPS = ("the run stops; check the database server and disk, then run the same command again to resume "
             "(its running trials are retried then)")

def outage_budget() -> float:
    """Seconds a worker waits for the store before it gives up (``SWEEP_STORE_OUTAGE``)."""
    text = os.environ.get("SWEEP_STORE_OUTAGE", "")
    if text == "":
        return OUTAGE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value < 0:
        raise StorageError(f"SWEEP_STORE_OUTAGE must be a number of seconds, 0 or more, got {text!r}; unset it or fix it")
    return value


class Outage:
    """The store's state as this process sees it, shared by the main thread and the heartbeat threads."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic time of the first failure of the current outage

    def _failed(self, err: BaseException) -> float:
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                log.warning("store unavailable: %s; retrying for up to %g s (SWEEP_STORE_OUTAGE)",
                            first_line(err.__cause__ or err), self.budget)
            return now - self._since

    def _ok(self) -> None:
        if self._since is None:  # the common case: no lock taken
            return
        with self._lock:
            if self._since is not None:
                log.warning("store available again after %.0f s", time.monotonic() - self._since)
                self._since = None

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried with backoff while it fails transiently and the outage is within budget."""
        delay = 0.2
        second_look = False
        while True:
            try:
                out = fn()
            except Exception as err:
                if not transient(err):
                    # Once, right away: a server that was starting up a moment ago (57P03, which a failed
                    # connection attempt reports without its code) may be up by the time it is asked why.
                    if self._since is not None and not second_look and isinstance(err, sa_exc.DBAPIError):
                        second_look = True
                        continue
                    raise
                lasted = self._failed(err)
                if lasted >= self.budget:
                    raise StoreOutageError(
                        f"the study store has been unavailable for {lasted:.0f} s (SWEEP_STORE_OUTAGE = "
                        f"{self.budget:g}): {first_line(err.__cause__ or err)}", WORKER_STOPS) from None
                time.sleep(min(delay, max(0.0, self.budget - lasted)))
                delay = min(delay * 2, 5.0)
                continue
            self._ok()
            return out

    def once(self, fn: Callable[[], object]) -> bool:
        """``fn()`` tried once (heartbeats: the next beat is the retry); False, logged once, if the store is away."""
        try:
            fn()
        except Exception as err:
            if not transient(err):
                raise
            self._failed(err)
            return False
        self._ok()
        return True
