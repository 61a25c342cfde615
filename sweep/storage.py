"""Storage URLs to Optuna's RDB storage: defaults, SQLite and PostgreSQL settings, heartbeats, masking.

The URL comes from ``--storage``, else ``SWEEP_STORAGE``, else ``sqlite:///sweeps.db``
in the working folder. Passwords are masked wherever a URL is shown.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError, SQLAlchemyError

from sweep.errors import StorageError

DEFAULT_URL = "sqlite:///sweeps.db"
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
# Heartbeats and their retry callback are "experimental" in Optuna; they are what we rely on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
MAX_RETRY = 3


def resolve_url(url: str | None) -> str:
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
        return {"pool_size": 5, "max_overflow": 10, "pool_pre_ping": True, "pool_recycle": 1800,
                "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _explain(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds from the environment (tests shorten the heartbeat), else ``default``."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise StorageError(f"{name} must be a whole number of seconds >= 1, got {text!r}; unset it or fix it")
    return int(text)


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
        extra = {
            "heartbeat_interval": _env_seconds("SWEEP_HEARTBEAT_INTERVAL", HEARTBEAT_SECONDS),
            "grace_period": _env_seconds("SWEEP_GRACE_PERIOD", GRACE_SECONDS),
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        }
    shown = mask(raw)
    try:
        return RDBStorage(parsed.render_as_string(hide_password=False), engine_kwargs=_engine_kwargs(parsed), **extra)
    except (OperationalError, DatabaseError) as err:
        raise StorageError(f"cannot open storage {shown}: {_explain(err)}; check the URL, the server and the file") from None
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise StorageError(f"cannot use storage {shown}: {_explain(err)}; check the URL") from None


def storage_failure(err: BaseException) -> StorageError:
    """A one-line StorageError for a database failure met while a command was running."""
    cause = err.__cause__ or err
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    reason = text[0] if text else type(cause).__name__
    return StorageError(f"the study store failed: {reason}; check that the database is reachable and writable")


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
