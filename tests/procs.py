"""Helpers for tests that run real ``sweep`` processes against one store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from sweep.storages.store import open_storage

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
name = "{name}"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = {epochs}
lr = 0.1
device = "cpu"
[search]
sampler = "{sampler}"
n_trials = {n_trials}
pruner = "none"
"""


def study_file(dir: Path, name: str = "dist", *, n_trials: int = 8, epochs: int = 1, sampler: str = "random") -> Path:
    path = dir / f"{name}.toml"
    path.write_text(STUDY.format(name=name, n_trials=n_trials, epochs=epochs, sampler=sampler), encoding="utf-8")
    return path


def env(storage: str | None = None) -> dict[str, str]:
    """The environment of a worker process: this checkout first on the path, fast heartbeats.

    The URL goes by SWEEP_STORAGE (as in docker-compose), so no password shows in ``ps``.
    """
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    out["SWEEP_HEARTBEAT_INTERVAL"] = "1"
    out["SWEEP_GRACE_PERIOD"] = "3"
    out["PYTHONUNBUFFERED"] = "1"
    if storage is not None:
        out["SWEEP_STORAGE"] = storage
    return out


def sweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *args]


def start(*args: str, storage: str, log: Path, extra: dict[str, str] | None = None) -> subprocess.Popen:
    """A ``sweep`` process on ``storage``, its output in ``log``; ``extra``: more environment (test hooks)."""
    with open(log, "wb") as f:
        return subprocess.Popen(sweep(*args), env={**env(storage), **(extra or {})}, stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT)


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    store = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=store).get_trials()
    finally:
        store.engine.dispose()  # tests poll often: no connections left open to the store


def wait_until_connected(url: str, procs: list[subprocess.Popen], *, timeout: float = 120) -> None:
    """Wait until every worker process has a connection to the PostgreSQL database of ``url`` (its
    ``application_name`` is ``sweep-<pid>``, set once the store is open, see sweep.storages.store): each has
    opened the store, so a server stop from now on is an outage it rides out, not a failed start."""
    import sqlalchemy

    want = {f"sweep-{p.pid}" for p in procs}
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                names = {row[0] for row in conn.execute(sqlalchemy.text(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"))}
            if want <= names:
                return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"workers did not all connect: {sorted(want - names)}")


def wait_until_mid_trial(url: str, name: str, proc: subprocess.Popen, *, timeout: float = 120) -> optuna.trial.FrozenTrial:
    """Wait until a trial is RUNNING and has reported an epoch (training is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early with code {proc.returncode}")
        try:
            running = [t for t in trials(url, name) if t.state.name == "RUNNING" and t.intermediate_values]
        except KeyError:
            running = []
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no trial got under way")


def end_lock_sessions(conn: Any, key: int, *, timeout: float = 10) -> list[int]:
    """End the server sessions that hold advisory lock ``key`` (as a server restart does) and wait until they are
    gone: ``pg_terminate_backend`` only signals, so a session can still hold its lock for a moment after it returns.
    ``conn``: an AUTOCOMMIT SQLAlchemy connection. Returns the ended sessions' pids."""
    pids = conn.execute(sqlalchemy.text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND granted"), {"k": key}).scalars().all()
    for pid in pids:
        conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    deadline = time.monotonic() + timeout
    while conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:p)"),
                       {"p": list(pids)}).scalar():
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions {pids} did not end within {timeout} s")
        time.sleep(0.02)
    return list(pids)
