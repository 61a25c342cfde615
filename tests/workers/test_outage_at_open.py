"""A store that is down when workers start is waited for (SWEEP_STORE_OUTAGE); a wrong login fails at once.

Real processes on a PostgreSQL cluster of the test's own (tests/pgcluster.py): workers, ``sweep run``,
``sweep worker --wait`` and ``sweep dashboard`` started while the server is stopped reach it once it starts;
on a server whose messages are in German, a wrong password or database name still fails at once, since
failures are told apart by their codes, not their text. Each test ends only the processes it started.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweep import config
from sweep.storages.outage import transient
from sweep.study import create_or_load as submit
from tests.pgcluster import Cluster, cluster, free_port
from tests.procs import ROOT, env, study_file, sweep, trials, wait_until_connected

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DOWN_SECONDS = 10  # how long the server stays down in the scenario of issue #28 (not a wait for a state)


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


def launch(*args: str, url: str, log: Path) -> subprocess.Popen:
    environ = {**env(url), "SWEEP_STORE_OUTAGE": "90"}
    with open(log, "wb") as f:
        return subprocess.Popen(sweep(*args), env=environ, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for_line(procs: list[subprocess.Popen], logs: list[Path], text: str, timeout: float = 60) -> None:
    """Until every log holds ``text`` (each process has met the state it names); a process that exits fails it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            assert p.poll() is None, f"{log.name} exited {p.returncode}: {log.read_text()[-1500:]}"
        if all(text in log.read_text() for log in logs):
            return
        time.sleep(0.1)
    raise AssertionError(f"not every process logged {text!r}: {[log.read_text()[-500:] for log in logs]}")


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_four_workers_started_while_the_server_is_down_finish_the_study(tmp_path: Path, pg: Cluster) -> None:
    url = pg.create_db("fleet")
    path = study_file(tmp_path, n_trials=8, epochs=1)
    submit(config.load(path), url)
    pg.pg_ctl("stop", "-m", "fast")
    stopped = time.monotonic()
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    commands = [("worker", "--poll", "0.2"), ("worker", "--poll", "0.2"), ("worker", "--study", "dist", "--poll", "0.2"),
                ("run", str(path))]
    procs = [launch(*c, url=url, log=log) for c, log in zip(commands, logs, strict=True)]
    try:
        wait_for_line(procs, logs, "sweep: store unavailable: ")
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped)))
        pg.pg_ctl("start")
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        stop_all(procs)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0, 0, 0], [t[-1500:] for t in texts]
    assert not any("Traceback" in t for t in texts)
    for t in texts:
        assert "retrying for up to 90 s (SWEEP_STORE_OUTAGE)" in t and "sweep: store available again after " in t, t
    states = [t.state for t in trials(url, "dist")]
    assert states.count(TrialState.COMPLETE) == 8 and TrialState.RUNNING not in states, states


def test_a_waiting_worker_and_the_dashboard_start_while_the_server_is_down(tmp_path: Path, pg: Cluster) -> None:
    url = pg.create_db("watch")
    submit(config.load(study_file(tmp_path, n_trials=1, epochs=1)), url)
    pg.pg_ctl("stop", "-m", "fast")
    logs = [tmp_path / "wait.log", tmp_path / "dash.log"]
    port = free_port()
    procs = [launch("worker", "--wait", "--poll", "0.2", url=url, log=logs[0]),
             launch("dashboard", "--port", str(port), url=url, log=logs[1])]
    try:
        wait_for_line(procs, logs, "sweep: store unavailable: ")
        pg.pg_ctl("start")
        wait_until_connected(url, procs)  # each has opened the store: sweep-<pid> sessions on the server
        wait_for_line(procs[1:], logs[1:], f"at http://127.0.0.1:{port}/")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        stop_all(procs)
    assert codes[0] in (0, 128 + signal.SIGTERM), logs[0].read_text()[-1500:]
    assert "Traceback" not in logs[0].read_text() + logs[1].read_text()


def test_on_a_german_server_a_wrong_login_fails_at_once(tmp_path: Path) -> None:
    with cluster(german=True) as de:
        good = sqlalchemy.engine.make_url(de.create_db("deutsch"))
        cases = {"password": good.set(password="falsch"), "database": good.set(database="gibtsnicht"),
                 "user": good.set(username="niemand")}
        for what, bad in cases.items():
            log = tmp_path / f"{what}.log"
            start = time.monotonic()
            proc = launch("worker", url=bad.render_as_string(hide_password=False), log=log)
            assert proc.wait(timeout=60) == 1, log.read_text()
            took, text = time.monotonic() - start, log.read_text()
            lines = text.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: cannot open storage "), lines
            assert "fehlgeschlagen" in text or "existiert nicht" in text, text  # the server did speak German
            assert "store unavailable" not in text and took < 30, (took, text)
            # Within a running worker too (a reconnect after an outage meets a changed password): lasting.
            engine = sqlalchemy.create_engine(bad)
            with pytest.raises(sqlalchemy.exc.OperationalError) as info, engine.connect():
                pass
            engine.dispose()
            assert not transient(info.value), what
