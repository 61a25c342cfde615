"""sweep.storages.outage: which failures are retried, the budget, and one line when the store goes and comes back."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from sqlalchemy import exc as sa_exc

from sweep.errors import StorageError, StoreOutageError
from sweep.storages.outage import Outage, outage_budget, transient


def _op(msg: str, code: str = "57P01") -> sa_exc.OperationalError:
    """A SQLAlchemy error around a psycopg error of SQLSTATE ``code`` (the text plays no part)."""
    return sa_exc.OperationalError("select 1", {}, psycopg.errors.lookup(code)(msg))


def _sqlite(msg: str, code: int) -> sa_exc.OperationalError:
    orig = sqlite3.OperationalError(msg)
    orig.sqlite_errorcode = code  # type: ignore[attr-defined]  # what the sqlite3 module sets on a real one
    return sa_exc.OperationalError("select 1", {}, orig)


def test_transient_failures_are_told_by_code_not_text() -> None:
    assert transient(_op("server closed the connection unexpectedly", "08006"))
    assert transient(_op("Verbindung beendet wegen Anweisung des Administrators", "57P01"))
    assert transient(_op("the database system is starting up", "57P03"))
    assert transient(_op("sorry, too many clients already", "53300"))
    assert transient(_op("could not extend file: No space left on device", "53100"))
    assert transient(_sqlite("database is locked", 5))
    assert transient(_sqlite("database or disk is full", 13))
    assert transient(_sqlite("disk I/O error", 778))  # SQLITE_IOERR_WRITE: the primary code in the low byte
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = _op("x", "08001")
    assert transient(wrapped)
    # A message that reads like an outage does not make a lasting code one, in any language.
    assert not transient(_op("connection refused", "28P01"))
    assert not transient(_op('Passwort-Authentifizierung für Benutzer »sweep« fehlgeschlagen', "28P01"))
    assert not transient(_op('database "nope" does not exist', "3D000"))
    assert not transient(_op("relation trials does not exist", "42P01"))
    assert not transient(_sqlite("attempt to write a readonly database", 8))
    assert not transient(_sqlite("database is locked, they say", 26))  # SQLITE_NOTADB
    assert not transient(_sqlite("no code", 1))
    assert not transient(ValueError("x"))
    assert not transient(optuna.exceptions.UpdateFinishedTrialError("finished"))


def test_real_sqlite_errors_carry_their_code(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database, just notes\n" * 20)
    with pytest.raises(sqlite3.DatabaseError) as info:
        sqlite3.connect(notes).execute("select * from sqlite_master")
    assert not transient(sa_exc.DatabaseError("select", {}, info.value))
    a = sqlite3.connect(tmp_path / "s.db", timeout=0, isolation_level=None)
    a.execute("create table t (x)")
    a.execute("begin exclusive")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(tmp_path / "s.db", timeout=0).execute("select * from t")
    a.execute("rollback")
    assert transient(sa_exc.OperationalError("select", {}, locked.value))


def _connect_error(url: str) -> sa_exc.OperationalError:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with pytest.raises(sa_exc.OperationalError) as info, engine.connect():
            pass
    finally:
        engine.dispose()
    return info.value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_connection_is_an_outage_only_where_nobody_answers() -> None:
    # No SQLSTATE comes with a failed connection attempt: nobody listening is an outage, a bad host name is not.
    assert transient(_connect_error(f"postgresql+psycopg://u:p@127.0.0.1:{_free_port()}/db"))
    assert not transient(_connect_error("postgresql+psycopg://u:p@no-such-host.invalid:5432/db"))


@pytest.mark.postgres
def test_a_wrong_password_or_database_on_a_live_server_is_lasting() -> None:
    url = os.environ.get("SWEEP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set")
    real = sqlalchemy.engine.make_url(url)
    assert not transient(_connect_error(real.set(password="wrong").render_as_string(hide_password=False)))
    assert not transient(_connect_error(real.set(database="no_such_db").render_as_string(hide_password=False)))
    assert not transient(_connect_error(real.set(username="nobody").render_as_string(hide_password=False)))


def _pending_rollback_after(first: BaseException) -> optuna.exceptions.StorageInternalError:
    """What Optuna's RDB storage raises when its get_trials fallback query runs on a session whose first
    query failed: PendingRollbackError raised while handling ``first``, wrapped by the scoped session."""
    try:
        try:
            raise first
        except BaseException:
            raise sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back") from None
    except sa_exc.PendingRollbackError as pending:
        wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
        wrapped.__cause__ = pending
        return wrapped


def test_a_pending_rollback_is_as_transient_as_the_failure_it_follows() -> None:
    # Seen in the PostgreSQL restart fault test: a worker exited 1 on this instead of riding out the outage.
    assert transient(_pending_rollback_after(_op("server closed the connection unexpectedly")))
    assert not transient(_pending_rollback_after(_op('password authentication failed for user "sweep"', "28P01")))
    assert not transient(_pending_rollback_after(ValueError("bad data")))
    assert not transient(sa_exc.PendingRollbackError("no context"))


def test_an_outage_within_the_budget_is_ridden_out_with_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise _op("connection refused")
        return "ok"

    outage = Outage(30)
    with caplog.at_level(logging.WARNING, logger="sweep"):
        assert outage.call(flaky) == "ok"
        assert outage.call(lambda: "again") == "again"
    lines = [r.getMessage() for r in caplog.records]
    assert len(calls) == 4
    assert lines[0] == "store unavailable: connection refused; retrying for up to 30 s (SWEEP_STORE_OUTAGE)"
    assert lines[1].startswith("store available again after ") and len(lines) == 2


def test_past_the_budget_one_error_line() -> None:
    outage = Outage(0.5)

    def down() -> None:
        raise _op("connection refused")

    with pytest.raises(StoreOutageError) as info:
        outage.call(down)
    text = str(info.value)
    assert text.startswith("the study store has been unavailable for ") and "\n" not in text
    assert "(SWEEP_STORE_OUTAGE = 0.5): connection refused; this worker stops" in text
    # sweep run says what stops and the fix in its own words, after the same outage (sweep.workers.run).
    run = str(info.value.saying("the run stops; run it again"))
    assert run == text[: text.index("; this worker stops")] + "; the run stops; run it again"


def test_permanent_failures_are_not_retried() -> None:
    calls = []

    def readonly() -> None:
        calls.append(1)
        raise _sqlite("attempt to write a readonly database", 8)

    with pytest.raises(sa_exc.OperationalError):
        Outage(30).call(readonly)
    assert calls == [1]


def test_heartbeats_try_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(30)

    def down() -> None:
        raise _op("connection refused")

    with caplog.at_level(logging.WARNING, logger="sweep"):
        assert outage.once(down) is False
        assert outage.once(down) is False  # the same outage: no second line
        assert outage.once(lambda: None) is True
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["store unavailable", "store available again after 0 s"]


def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEP_STORE_OUTAGE", raising=False)
    assert outage_budget() == 120
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "7.5")
    assert outage_budget() == 7.5
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "-1")
    with pytest.raises(StorageError, match="SWEEP_STORE_OUTAGE must be a number of seconds, 0 or more, got '-1'"):
        outage_budget()
