"""Storage URLs to Optuna's RDB storage: SQLite and PostgreSQL settings, heartbeats, opening.

The URL comes from ``sweep.storages.url`` (``--storage``, ``SWEEP_STORAGE``, ``SWEEP_STORAGE_FILE``,
the SQLite default). Passwords are masked wherever a URL is shown.

Every store access of a worker is retried through an outage (``sweep.storages.outage``), opening
included: a server that is down, restarting or refusing connections is waited for within
``SWEEP_STORE_OUTAGE``; a wrong password, host name, database name or dialect fails at once.
Each storage object has its own outage (two stores in one program do not share one).
Heartbeats are written and judged with one clock: the database server's, in UTC
(every PostgreSQL session is set to UTC, whatever ``PGTZ`` says; SQLite's clock is UTC).
Read-only opening (``ls``, ``show``, ``best``, ``report``, ``dashboard``) never creates
a file, a table or a row: it checks first that an Optuna store is there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
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

from sweep.errors import EmptyStoreError, NotAStudyStoreError, StorageError, StoreNotFoundError, first_line
from sweep.storages.optuna_compat import (
    BACKEND_PRIVATE_CALLS,
    backend_of,
    experimental_allowed,
    stale_trial_ids,
    storage_of,
    study_id,
)
from sweep.storages.outage import Outage, outage_budget
from sweep.storages.url import DEFAULT_URL, mask, resolve_url

__all__ = ["DEFAULT_URL", "SweepStorage", "fail_stale", "heartbeat_settings", "mask", "open_storage",
           "resolve_url", "storage_failure"]
HEARTBEAT_SECONDS = 10  # env SWEEP_HEARTBEAT_INTERVAL overrides (tests use 1 s)
GRACE_SECONDS = 30  # env SWEEP_GRACE_PERIOD overrides: a RUNNING trial silent this long is failed and retried
MAX_RETRY = 3


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


# The storage methods a worker calls: each is retried through an outage (heartbeats: tried once per beat).
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial",
)


class SweepStorage(RDBStorage):
    """Optuna's RDBStorage whose every access rides out a store outage (``outage.call``)."""

    def __init__(self, url: str, *, outage: Outage, **kwargs: Any) -> None:
        self.outage = outage  # first: RDBStorage's own set-up may call the retried methods below
        with experimental_allowed():
            super().__init__(url, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        # Never raises: a missed beat is the next beat's job, and a dead heartbeat thread would let a live trial go stale.
        with contextlib.suppress(Exception):  # logged as the outage (transient) or retried next beat
            self.outage.once(lambda: RDBStorage.record_heartbeat(self, trial_id))


def _retried(name: str) -> Any:
    base = getattr(RDBStorage, name)

    @functools.wraps(base)
    def method(self: SweepStorage, *args: Any, **kwargs: Any) -> Any:
        return self.outage.call(lambda: base(self, *args, **kwargs))

    return method


for _name in (*_RETRIED, *BACKEND_PRIVATE_CALLS):
    setattr(SweepStorage, _name, _retried(_name))


def _session_settings(storage: RDBStorage, idle_seconds: int | None) -> None:
    """Every PostgreSQL session in UTC, so ``now()`` stored in heartbeats means one instant whatever PGTZ is;
    and, for a worker, a transaction left idle for ``idle_seconds`` (its grace period) is ended by the server.

    Why the second: a worker paused (SIGSTOP, a suspended laptop) between a row lock and its commit holds
    that lock for as long as it is paused, since its connection stays open. Another worker failing the
    paused worker's trial as stale would block on it, admission lock held, until the pause ends. A worker
    silent in a transaction for as long as its trial would be judged stale is treated as gone: the server
    rolls it back, and the paused worker, on resuming, meets the closed connection as a short outage.
    The admission lock (``sweep.storages.lock``) sits idle in its transaction on purpose, and lifts this for itself.
    """
    engine = storage.engine
    if engine.url.get_backend_name() != "postgresql":
        return  # SQLite's CURRENT_TIMESTAMP is UTC already; its locks end with the process's file handle

    @sqlalchemy.event.listens_for(engine, "connect")
    def _set(dbapi_conn: Any, record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        # pg_stat_activity shows which process holds which connection, from the moment its store is open
        # (set here, not at connect: the connections of Optuna's table set-up are closed before this).
        cur.execute(f"SET application_name = 'sweep-{os.getpid()}'")
        if idle_seconds is not None:
            cur.execute(f"SET idle_in_transaction_session_timeout = {int(idle_seconds * 1000)}")
        cur.close()
        dbapi_conn.commit()

    engine.dispose()  # connections made while the storage was set up predate the listener


def _rdb_storage(url: sqlalchemy.URL, extra: dict[str, Any], outage: Outage) -> RDBStorage:
    """RDBStorage, retrying the race of two processes that set up the same empty database at once
    ("UNIQUE constraint failed", "table ... already exists"): the other one won, so open it again."""
    for attempt in range(3):
        try:
            store = SweepStorage(url.render_as_string(hide_password=False), outage=outage,
                                 engine_kwargs=_engine_kwargs(url), **extra)
            _session_settings(store, extra.get("grace_period"))
            return store
        except (IntegrityError, OperationalError, ProgrammingError) as err:
            racing = isinstance(err, IntegrityError) or "already exists" in str(err)
            if attempt == 2 or not racing:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise StorageError("unreachable")  # the loop returns or raises


def _check_store(url: sqlalchemy.URL, shown: str) -> None:
    """For read-only commands: the store must exist and hold Optuna's tables; nothing is created or added."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.is_file():
            raise StoreNotFoundError(f"no study store at {shown}: {str(path)!r} does not exist; check --storage "
                                     "(or SWEEP_STORAGE) and the folder ('sweep run' and 'sweep submit' create it)")
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    if not tables:
        raise EmptyStoreError(f"{shown} holds no study store yet (no tables); submit a study there first "
                              "('sweep submit' or 'sweep run'), this command adds nothing to it")
    missing = sorted({"alembic_version", "studies", "trials", "version_info"} - tables)
    if missing:
        there = ", ".join(sorted(tables)[:8]) or "none"
        raise NotAStudyStoreError(f"{shown} holds no Optuna study store (tables there: {there}; missing: "
                                  f"{', '.join(missing)}); check --storage, this command adds nothing to it")


def open_storage(url: str | None = None, *, heartbeat: bool = True, read_only: bool = False) -> RDBStorage:
    """Optuna RDB storage for ``url``; stale RUNNING trials (dead workers) are failed and retried.

    ``read_only``: the store must already exist (no file, table or row is created); no heartbeats.
    """
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
    if read_only:
        heartbeat = False
        extra = {"skip_table_creation": True, "skip_compatibility_check": True}
    if heartbeat:
        interval, grace = heartbeat_settings()
        with experimental_allowed():
            callback = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        extra = {"heartbeat_interval": interval, "grace_period": grace, "heartbeat_stale_trial_callback": callback}
    shown = mask(raw)
    # Opening rides out an outage too (a fleet started while its server restarts); what is lasting fails at once.
    outage = Outage(outage_budget())
    try:
        if read_only:
            outage.call(lambda: _check_store(parsed, shown))
        return outage.call(lambda: _rdb_storage(parsed, extra, outage))
    except (OperationalError, DatabaseError) as err:
        raise StorageError(f"cannot open storage {shown}: {first_line(err)}; check the URL, the server and the file") from None
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise StorageError(f"cannot use storage {shown}: {first_line(err)}; check the URL") from None


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail the study's RUNNING trials whose heartbeat is older than the grace period, and queue their lambdas again.

    Optuna's ``fail_stale_trials``, plus the reason on each failed trial: ``fail_reason = "stale: no heartbeat
    for N s"``. The retried trial does not inherit that reason. Returns the numbers of the trials it failed.
    """
    storage, backend = storage_of(study), backend_of(study)
    if not isinstance(backend, SweepStorage) or backend.heartbeat_interval is None:
        return []
    grace = backend.grace_period or 2 * backend.heartbeat_interval
    failed = []
    for stale in backend.outage.call(lambda: stale_trial_ids(storage, study_id(study))):
        try:
            storage.set_trial_user_attr(stale, "fail_reason", f"stale: no heartbeat for {grace} s")
            if storage.set_trial_state_values(stale, state=optuna.trial.TrialState.FAIL):
                failed.append(stale)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first (or its own worker told it just now)
    callback = backend.get_heartbeat_stale_trial_callback()
    numbers = []
    for failed_id in failed:
        trial = storage.get_trial(failed_id)
        numbers.append(trial.number)
        if callback is not None:
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
            callback(study, trial)
    return numbers


def storage_failure(err: BaseException) -> StorageError:
    """A one-line StorageError for a database failure met while a command was running."""
    reason = first_line(err.__cause__ or err)
    return StorageError(f"the study store failed: {reason}; check that the database is reachable and writable")
