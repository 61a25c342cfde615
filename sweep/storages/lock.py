"""The study lock: one admission at a time per study, across every process on one store.

PostgreSQL: a transaction-level advisory lock (released by the server if the worker
dies, or if its connection is lost in an outage). SQLite: an ``flock`` on a file next to
the database. Other databases: no lock (documented caveat).
"""

from __future__ import annotations

import contextlib
import os
import zlib

import sqlalchemy
from optuna.storages import RDBStorage
from sqlalchemy.exc import SQLAlchemyError


class StudyLock:
    """A lock per study, shared by every process that uses the same store.

    Workers hold it from counting a study's trials until their new trial is
    stored as RUNNING, so two workers can never both take the last free slot.
    PostgreSQL: a transaction-level advisory lock (released by the server if the
    worker dies). SQLite: an ``flock`` on a file next to the database (SQLite is
    local to one machine anyway). Other databases: no lock (documented caveat).
    ``release`` is idempotent, so it can be called early and again on exit.
    """

    def __init__(self, storage: RDBStorage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._conn: sqlalchemy.Connection | None = None
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        url = self._storage.engine.url
        if url.get_backend_name() == "postgresql":
            outage = getattr(self._storage, "outage", None)
            if outage is None:
                self._lock_pg()
            else:
                outage.call(self._lock_pg)
        elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            import fcntl

            self._fd = os.open(f"{url.database}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def _lock_pg(self) -> None:
        self._close()  # a connection lost in an outage is replaced
        self._conn = self._storage.engine.connect()
        # pg_advisory_xact_lock takes a bigint; crc32 gives a stable one per study name.
        key = zlib.crc32(f"lambda-sweep:{self._key}".encode())
        # The lock's transaction is idle while the worker asks for its trials, so the store's idle limit (the
        # grace period, sweep.storages.store) is lifted to ten grace periods here: a worker paused mid-admission
        # still lets the others in after that, and no ask takes so long.
        grace = getattr(self._storage, "grace_period", None)
        limit = 10 * 1000 * grace if grace else 0
        self._conn.execute(sqlalchemy.text(f"SET LOCAL idle_in_transaction_session_timeout = {int(limit)}"))
        self._conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def held(self) -> bool:
        """True if the lock has been held without a break since ``acquire``.

        A PostgreSQL advisory lock dies with its transaction: a server restart or a cut connection
        releases it without telling this process, whose later store calls are retried by the outage
        handling and succeed after the break. So an admission checks, after its asks, that the lock's
        own transaction still answers; if it does, no other worker can have admitted in between.
        """
        if self._conn is None:
            return True  # SQLite's flock, and stores with no lock, cannot be lost this way
        try:
            self._conn.execute(sqlalchemy.text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Ends the transaction, which releases the advisory lock; a lost connection released it already.
            with contextlib.suppress(SQLAlchemyError):
                conn.rollback()
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    def release(self) -> None:
        self._close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
