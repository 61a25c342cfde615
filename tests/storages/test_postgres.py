"""PostgreSQL storage: one-line connection errors, pool settings, and the study lock that keeps workers exact."""

from __future__ import annotations

import fcntl
import os
import zlib
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from sweep.cli import main
from sweep.errors import StorageError
from sweep.storages.lock import StudyLock
from sweep.storages.store import heartbeat_settings, open_storage
from tests.procs import end_lock_sessions

PG = os.environ.get("SWEEP_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(PG is None, reason="SWEEP_TEST_POSTGRES_URL is not set (.ci/postgres.sh starts a server)")


@pytest.mark.postgres
@needs_pg
def test_wrong_password_is_one_line_and_exit_1() -> None:
    assert PG is not None
    url = make_url(PG)
    bad = url.set(password="not-the-password").render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["worker", "--storage", bad])
    assert result.exit_code == 1
    shown = url.render_as_string(hide_password=True)
    assert result.stderr == (
        f"error: cannot open storage {shown}: connection failed: connection to server at \"{url.host}\", port {url.port} "
        f"failed: FATAL:  password authentication failed for user \"{url.username}\"; check the URL, the server and the file\n")
    assert "not-the-password" not in result.output


def test_unreachable_host_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(main, ["worker", "--storage", "postgresql://sweep:pw@db.invalid:5432/sweep"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot open storage postgresql://sweep:***@db.invalid:5432/sweep: failed to resolve host 'db.invalid': "
        "[Errno -2] Name or service not known; check the URL, the server and the file\n")


def test_closed_port_is_waited_for_within_the_outage_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that refuses connections may be restarting: opening waits for it (SWEEP_STORE_OUTAGE), then says so.
    result = CliRunner().invoke(main, ["submit", "x.toml", "--storage", "postgresql://sweep:pw@127.0.0.1:9/sweep"])
    assert result.exit_code == 2  # the study file is checked first
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "1")
    result = CliRunner().invoke(main, ["worker", "--storage", "postgresql://sweep:pw@127.0.0.1:9/sweep"])
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines)) == (1, 2), lines
    assert lines[0].startswith("sweep: store unavailable: connection failed: ")
    assert "port 9 failed: Connection refused" in lines[0]
    assert lines[0].endswith("; retrying for up to 1 s (SWEEP_STORE_OUTAGE)")
    assert lines[1].startswith("error: the study store has been unavailable for 1 s (SWEEP_STORE_OUTAGE = 1): ")
    assert lines[1].endswith("; this worker stops, and its running trials are retried once their heartbeats are older "
                             "than the grace period; check the database server and disk, then start the worker again")


@pytest.mark.postgres
@needs_pg
def test_pool_is_small_per_process_and_pings() -> None:
    store = open_storage(PG)
    pool = store.engine.pool
    assert isinstance(pool, sqlalchemy.pool.QueuePool)
    assert (pool.size(), pool._max_overflow, pool._pre_ping) == (3, 2, True)
    assert store.engine.url.drivername == "postgresql+psycopg"


@pytest.mark.postgres
@needs_pg
def test_study_lock_excludes_other_workers_on_postgres() -> None:
    a, b = open_storage(PG), open_storage(PG)
    probe = "SELECT pg_try_advisory_xact_lock(:k)"
    key = zlib.crc32(b"lambda-sweep:locked")
    with StudyLock(a, "locked"), b.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(probe), {"k": key}).scalar() is False
        conn.rollback()
    with b.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(probe), {"k": key}).scalar() is True


def test_study_lock_excludes_other_workers_on_sqlite(tmp_path: Path) -> None:
    store = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    lock = StudyLock(store, "s").acquire()
    fd = os.open(tmp_path / "s.db.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.release()
        lock.release()  # idempotent: released early by the objective, again on exit
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_heartbeat_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEP_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("SWEEP_GRACE_PERIOD", raising=False)
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "3")
    assert heartbeat_settings() == (1, 3)
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "1")
    with pytest.raises(StorageError) as err:
        heartbeat_settings()
    assert str(err.value) == ("SWEEP_GRACE_PERIOD (1 s) must exceed SWEEP_HEARTBEAT_INTERVAL (1 s); "
                              "use about three intervals")
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(StorageError) as err:
        heartbeat_settings()
    assert str(err.value) == ("SWEEP_HEARTBEAT_INTERVAL must be a whole number of seconds, 1 or more, got 'soon'; "
                              "unset it or fix it")


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["sqlite", "postgresql"], indirect=True)
def test_stale_trials_get_a_reason_and_their_retry_does_not(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import optuna

    from sweep.storages.optuna_compat import trial_id
    from sweep.storages.store import fail_stale

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")
    store = open_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=store, direction="maximize")
    trial = study.ask({"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)})
    trial.set_user_attr("seed", 0)
    store.record_heartbeat(trial_id(trial))
    assert fail_stale(study) == []
    time.sleep(3.2)
    assert fail_stale(study) == [trial.number]
    failed, retry = study.get_trials()
    assert failed.state.name == "FAIL" and failed.user_attrs == {"seed": 0, "fail_reason": "stale: no heartbeat for 2 s"}
    assert retry.state.name == "WAITING" and retry.params == failed.params and retry.user_attrs == {"seed": 0}
    store.engine.dispose()


@pytest.mark.postgres
@needs_pg
@pytest.mark.parametrize("pgtz", ["Etc/GMT-14", "Etc/GMT+12"])
def test_heartbeats_are_utc_whatever_the_session_time_zone(pgtz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from sweep.storages.optuna_compat import trial_id

    monkeypatch.setenv("PGTZ", pgtz)  # libpq sends it to the server at connect
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    store = open_storage(PG)
    study = optuna.create_study(storage=store, direction="maximize")
    trial = study.ask()
    store.record_heartbeat(trial_id(trial))
    plain = sqlalchemy.create_engine(PG)  # a session in PGTZ's zone, not ours
    with plain.connect() as conn:
        assert conn.execute(sqlalchemy.text("show timezone")).scalar() == pgtz  # the test's premise holds
        lag = conn.execute(sqlalchemy.text(
            "select extract(epoch from (now() at time zone 'UTC') - heartbeat) from trial_heartbeats "
            "where trial_id = :t"), {"t": trial_id(trial)}).scalar()
    assert 0 <= lag < 60  # stored in UTC: not 14 h ahead, not 12 h behind
    with store.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("show timezone")).scalar() == "UTC"
    optuna.delete_study(study_name=study.study_name, storage=store)
    plain.dispose()
    store.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_paused_worker_mid_transaction_does_not_block_the_stale_check(
        storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker paused between Optuna's row lock on its trial and the commit (seen in CI): the server ends
    that transaction after the grace period, so another worker can fail the trial as stale."""
    import threading
    import time

    import optuna

    from sweep.storages.optuna_compat import trial_id
    from sweep.storages.outage import transient
    from sweep.storages.store import fail_stale

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")
    paused, other = open_storage(storage_url), open_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=paused, direction="maximize")
    trial = study.ask({"lambda": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)})
    paused.record_heartbeat(trial_id(trial))
    held = paused.engine.connect()  # as set_trial_intermediate_value does, then silence
    held.execute(sqlalchemy.text("SELECT trial_id FROM trials WHERE trial_id = :t FOR UPDATE"), {"t": trial_id(trial)})
    failed: list[list[int]] = []
    started = time.monotonic()
    checker = threading.Thread(target=lambda: failed.append(
        fail_stale(optuna.load_study(study_name="s", storage=other))), daemon=True)
    time.sleep(2.5)  # the heartbeat is stale now
    checker.start()
    checker.join(timeout=30)
    assert not checker.is_alive(), "the stale check blocked on the paused worker's row lock"
    assert failed == [[trial.number]] and time.monotonic() - started < 15
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="idle-in-transaction timeout") as err:
        held.execute(sqlalchemy.text("SELECT 1"))
    assert transient(err.value)  # resumed: the store ended its transaction, an outage the worker rides out
    held.close()
    assert optuna.load_study(study_name="s", storage=other).trials[0].state.name == "FAIL"
    paused.engine.dispose()
    other.engine.dispose()


@pytest.mark.postgres
@needs_pg
def test_the_study_lock_outlives_the_idle_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The admission lock idles in its transaction while the worker asks: it keeps ten grace periods, not one."""
    import time

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")
    a, b = open_storage(PG), open_storage(PG)
    key = zlib.crc32(b"lambda-sweep:idle")
    with StudyLock(a, "idle"):
        with a.engine.connect() as conn:  # the premise: the store's sessions have the grace period as idle limit
            assert conn.execute(sqlalchemy.text("SHOW idle_in_transaction_session_timeout")).scalar() == "2s"
        time.sleep(3)
        with b.engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar() is False
            conn.rollback()
    with b.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar() is True
    a.engine.dispose()
    b.engine.dispose()


@pytest.mark.postgres
@needs_pg
def test_the_study_lock_knows_when_the_server_ended_it() -> None:
    """A restart or a cut connection ends the lock's transaction without a word: ``held`` asks that transaction."""
    a, b = open_storage(PG), open_storage(PG)
    key = zlib.crc32(b"lambda-sweep:cut")
    lock = StudyLock(a, "cut").acquire()
    assert lock.held()
    with b.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert len(end_lock_sessions(conn, key)) == 1
        assert conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar() is True
        assert not lock.held()  # another session holds it now
        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    assert lock.acquire().held()  # taken again on a new connection
    lock.release()
    a.engine.dispose()
    b.engine.dispose()


def test_a_file_lock_is_held_until_released(tmp_path: Path) -> None:
    lock = StudyLock(open_storage(f"sqlite:///{tmp_path / 's.db'}"), "s").acquire()
    assert lock.held()
    lock.release()
