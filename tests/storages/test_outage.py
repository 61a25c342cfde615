"""sweep.storages.outage: which failures are retried, the budget, and one line when the store goes and comes back."""

from __future__ import annotations

import logging

import optuna
import pytest
from sqlalchemy import exc as sa_exc

from sweep.errors import StorageError, StoreOutageError
from sweep.storages.outage import Outage, outage_budget, transient


def _op(msg: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("select 1", {}, Exception(msg))


def test_transient_failures_are_told_from_permanent_ones() -> None:
    assert transient(_op("server closed the connection unexpectedly"))
    assert transient(_op("database or disk is full"))
    assert transient(_op("database is locked"))
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = _op("connection refused")
    assert transient(wrapped)
    assert not transient(_op("attempt to write a readonly database"))
    assert not transient(_op('password authentication failed for user "sweep"'))
    assert not transient(ValueError("x"))
    assert not transient(optuna.exceptions.UpdateFinishedTrialError("finished"))


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
    assert not transient(_pending_rollback_after(_op('password authentication failed for user "sweep"')))
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


def test_permanent_failures_are_not_retried() -> None:
    calls = []

    def readonly() -> None:
        calls.append(1)
        raise _op("attempt to write a readonly database")

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
