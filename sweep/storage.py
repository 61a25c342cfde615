"""Storage URLs to Optuna's RDB storage: defaults, SQLite and PostgreSQL settings, heartbeats, masking.

The URL comes from ``--storage``, else ``SWEEP_STORAGE``, else ``sqlite:///sweeps.db``
in the working folder. Passwords are masked wherever a URL is shown.
"""

from __future__ import annotations

import os
import re
import time
import warnings
import zlib
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from sweep.errors import StorageError, first_line

DEFAULT_URL = "sqlite:///sweeps.db"
HEARTBEAT_SECONDS = 10  # env SWEEP_HEARTBEAT_INTERVAL overrides (tests use 1 s)
GRACE_SECONDS = 30  # env SWEEP_GRACE_PERIOD overrides: a RUNNING trial silent this long is failed and retried
# Heartbeats and their retry callback are "experimental" in Optuna; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
MAX_RETRY = 3


def resolve_url(url: str | None) -> str:
    """The storage URL in use: ``url``, else ``SWEEP_STORAGE``, else the SQLite default."""
    return url or os.environ.get("SWEEP_STORAGE") or DEFAULT_URL


def mask(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _engine_kwargs(url: sqlalchemy.URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        # Wait for a lock instead of failing at once when several processes write.
        return {"connect_args": {"timeout": 60}}
    if url.get_backend_name() == "postgresql":
        # Sized for many workers, not many threads: a worker process uses one connection for
        # trials, one for its heartbeat thread and one for the trial-admission lock. A small
        # pool per process keeps N workers within the server's max_connections (100 by default).
        return {"pool_size": 3, "max_overflow": 2, "pool_timeout": 60, "pool_pre_ping": True, "pool_recycle": 1800,
                "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _seconds(env: str, default: int) -> int:
    text = os.environ.get(env)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(f"{env} must be a whole number of seconds, 1 or more, got {text!r}; unset it or fix it")
    return value


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment or the defaults."""
    interval = _seconds("SWEEP_HEARTBEAT_INTERVAL", HEARTBEAT_SECONDS)
    grace = _seconds("SWEEP_GRACE_PERIOD", max(GRACE_SECONDS, 3 * interval))
    if grace <= interval:
        raise StorageError(f"SWEEP_GRACE_PERIOD ({grace} s) must exceed SWEEP_HEARTBEAT_INTERVAL ({interval} s); "
                           "use about three intervals")
    return interval, grace


def _rdb_storage(url: sqlalchemy.URL, extra: dict[str, Any]) -> RDBStorage:
    """RDBStorage, retrying the race of two processes that set up the same empty database at once
    ("UNIQUE constraint failed", "table ... already exists"): the other one won, so open it again."""
    for attempt in range(3):
        try:
            return RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=_engine_kwargs(url), **extra)
        except (IntegrityError, OperationalError, ProgrammingError) as err:
            racing = isinstance(err, IntegrityError) or "already exists" in str(err)
            if attempt == 2 or not racing:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise StorageError("unreachable")  # the loop returns or raises


def open_storage(url: str | None = None, *, heartbeat: bool = True) -> RDBStorage:
    """Optuna RDB storage for ``url``; stale RUNNING trials (dead workers) are failed and retried."""
    raw = resolve_url(url)
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"malformed storage URL {mask(raw)!r}; expected e.g. sqlite:///sweeps.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    extra: dict[str, Any] = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        extra = {
            "heartbeat_interval": interval,
            "grace_period": grace,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        }
    shown = mask(raw)
    try:
        return _rdb_storage(parsed, extra)
    except (OperationalError, DatabaseError) as err:
        raise StorageError(f"cannot open storage {shown}: {first_line(err)}; check the URL, the server and the file") from None
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise StorageError(f"cannot use storage {shown}: {first_line(err)}; check the URL") from None


def storage_failure(err: BaseException) -> StorageError:
    """A one-line StorageError for a database failure met while a command was running."""
    reason = first_line(err.__cause__ or err)
    return StorageError(f"the study store failed: {reason}; check that the database is reachable and writable")



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
            self._conn = self._storage.engine.connect()
            # pg_advisory_xact_lock takes a bigint; crc32 gives a stable one per study name.
            key = zlib.crc32(f"lambda-sweep:{self._key}".encode())
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            import fcntl

            self._fd = os.open(f"{url.database}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.rollback()  # ends the transaction, which releases the advisory lock
            finally:
                conn.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
