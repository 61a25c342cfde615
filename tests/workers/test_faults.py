"""Faults with real processes: a PostgreSQL restart mid-study, a paused worker, mixed time zones, a full disk.

Each case ends with exactly ``n_trials`` COMPLETE trials and none RUNNING after the grace period.
Workers use 1 s heartbeats and a 3 s grace period (``procs.env``). The restart cases run their own
throwaway PostgreSQL cluster on a free port (the shared test server is never touched), and stop it
at the end; every test ends only the processes it started, by PID.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from sweep import config
from sweep.study import create_or_load as submit
from tests.procs import ROOT, env, study_file, sweep, trials, wait_until_connected, wait_until_mid_trial

pytestmark = pytest.mark.slow
GRACE = 3


def start(*args: str, storage: str, log: Path, extra: dict[str, str] | None = None,
          no_files: bool = False) -> subprocess.Popen:
    """A worker logging to ``log``; ``no_files``: through a pipe (its own writes to files may then be refused)."""
    environ = {**env(storage), "SWEEP_STORE_OUTAGE": "90", **(extra or {})}
    if not no_files:
        with open(log, "wb") as f:
            return subprocess.Popen(sweep(*args), env=environ, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    proc = subprocess.Popen(sweep(*args), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))  # EFBIG, not death
    out = proc.stdout
    assert out is not None

    def copy() -> None:
        with open(log, "wb") as f:
            for line in out:
                f.write(line)
                f.flush()

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    proc.copier = copier  # type: ignore[attr-defined]
    return proc


def finish(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> list[str]:
    """Wait for every worker; each must exit 0 with no traceback. Returns their logs."""
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p in procs:
        if hasattr(p, "copier"):
            p.copier.join(timeout=10)
    texts = [log.read_text(errors="replace") for log in logs]
    assert codes == [0] * len(procs), [t[-1500:] for t in texts]
    assert not any("Traceback" in t for t in texts), [t[-3000:] for t in texts if "Traceback" in t]
    return texts


def assert_exact(url: str, name: str, n: int) -> list:
    """Exactly ``n`` COMPLETE, and no trial still RUNNING once the grace period has passed."""
    time.sleep(GRACE + 1)
    ts = trials(url, name)
    states = [t.state for t in ts]
    assert states.count(TrialState.COMPLETE) == n, states
    assert TrialState.RUNNING not in states, states
    complete = [t.params["lambda"] for t in ts if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == n  # no lambda completed twice
    return ts


# --- a PostgreSQL cluster of our own, to restart mid-study -------------------------------------------


@dataclass
class Cluster:
    bin: Path
    dir: Path
    port: int

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-l", str(self.dir / "server.log"), "-w", "-t", "60", *args],
                       check=True, capture_output=True, timeout=90)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs Debian's postgresql (scripts/install-debian.sh postgresql) and root, as .ci/postgres.sh")
    folder = Path(tempfile.mkdtemp(prefix="sweep-faults-pg-", dir="/var/tmp"))
    shutil.chown(folder, "postgres", "postgres")
    folder.chmod(0o700)
    c = Cluster(Path(bins[-1]), folder, _free_port())
    subprocess.run(["runuser", "-u", "postgres", "--", str(c.bin / "initdb"), "-D", str(folder / "data"),
                    "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    with open(folder / "data" / "postgresql.conf", "a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {c.port}\nunix_socket_directories = '{folder}'\n"
                   "fsync = off\nsynchronous_commit = off\nmax_connections = 60\n")
    c.pg_ctl("start")
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            c.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_db(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    db = f"faults_{abs(hash(str(tmp_path))) % 10**8}"
    engine = sqlalchemy.create_engine(cluster.url())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    engine.dispose()
    yield cluster.url(db)


@pytest.mark.postgres
@pytest.mark.parametrize("batch", [1, 2])
def test_server_restart_mid_study_with_four_workers(batch: int, tmp_path: Path, cluster: Cluster, own_db: str) -> None:
    path = study_file(tmp_path, n_trials=8, epochs=3)
    path.write_text(path.read_text() + f"batch = {batch}\n")
    submit(config.load(path), own_db)
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = [start("worker", "--poll", "0.2", storage=own_db, log=log) for log in logs]
    # Every worker has reached the store before it goes away (a worker must reach it once to start:
    # docs/workers.md), and training is under way.
    wait_until_connected(own_db, procs)
    wait_until_mid_trial(own_db, "dist", procs[0])
    cluster.pg_ctl("stop", "-m", "fast")  # every connection is cut, mid-trial
    time.sleep(8)  # longer than the grace period: heartbeats lapse too
    cluster.pg_ctl("start")
    texts = finish(procs, logs)
    assert_exact(own_db, "dist", 8)
    assert any("sweep: store unavailable: " in t for t in texts), texts
    assert any("sweep: store available again after " in t for t in texts), texts


@pytest.mark.postgres
def test_outage_past_the_budget_exits_with_one_line_and_the_trial_is_retried(tmp_path: Path, cluster: Cluster,
                                                                              own_db: str) -> None:
    submit(config.load(study_file(tmp_path, n_trials=3, epochs=10)), own_db)  # long enough to be caught mid-trial
    log = tmp_path / "w.log"
    proc = start("worker", storage=own_db, log=log, extra={"SWEEP_STORE_OUTAGE": "2"})
    running = wait_until_mid_trial(own_db, "dist", proc)
    cluster.pg_ctl("stop", "-m", "fast")
    try:
        assert proc.wait(timeout=120) == 1
    finally:
        cluster.pg_ctl("start")
    # Our lines only: progress lines ("#0 complete ...") of trials that finished before the stop, and
    # Optuna's own warnings ("[W ...] Caught an error from sqlalchemy ..."), may come between them.
    lines = [line for line in log.read_text().splitlines() if line.startswith(("sweep: ", "error: "))]
    assert lines[0].startswith("sweep: store unavailable: "), lines
    assert lines[-1].startswith("error: the study store has been unavailable for "), lines
    assert lines[-1].endswith("check the database server and disk, then start the worker again"), lines
    assert "Traceback" not in log.read_text()
    time.sleep(GRACE + 1)  # the dead worker's heartbeat goes stale
    again = tmp_path / "w2.log"
    finish([start("worker", storage=own_db, log=again)], [again])
    ts = assert_exact(own_db, "dist", 3)
    # The trial under way at the stop (``running``, or a later one if it finished first) was failed as stale.
    (first,) = [t for t in ts if t.state == TrialState.FAIL]
    assert first.number >= running.number and first.user_attrs["fail_reason"] == f"stale: no heartbeat for {GRACE} s"
    assert any(t.system_attrs.get("failed_trial") == first.number and t.state == TrialState.COMPLETE for t in ts)


# --- a paused worker, clocks --------------------------------------------------------------------------


def pause_mid_trial(url: str, proc: subprocess.Popen) -> FrozenTrial:
    """SIGSTOP ``proc`` while one of its trials is under way, and return that trial. A trial can end
    between the store read and the signal (seen in CI under load): then resume and pause the next."""
    for _ in range(3):
        victim = wait_until_mid_trial(url, "dist", proc)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the signal has landed; a commit in flight has reached the store
        if next(t for t in trials(url, "dist") if t.number == victim.number).state == TrialState.RUNNING:
            return victim
        proc.send_signal(signal.SIGCONT)
    raise AssertionError("three trials ended before the worker could be paused mid-trial")


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("batch", [1, 2])
def test_paused_worker_drops_its_result_and_goes_on(batch: int, tmp_path: Path, storage_url: str) -> None:
    path = study_file(tmp_path, n_trials=4, epochs=12)
    path.write_text(path.read_text() + f"batch = {batch}\n")
    submit(config.load(path), storage_url)
    logs = [tmp_path / "paused.log", tmp_path / "other.log"]
    paused = start("worker", "--poll", "0.2", storage=storage_url, log=logs[0])
    victim = pause_mid_trial(storage_url, paused)  # a suspended laptop: alive, silent
    try:
        other = start("worker", "--poll", "0.2", storage=storage_url, log=logs[1])
        deadline = time.monotonic() + 120
        while next(t for t in trials(storage_url, "dist") if t.number == victim.number).state == TrialState.RUNNING:
            assert time.monotonic() < deadline, "the paused worker's trial was never failed as stale"
            time.sleep(0.2)
    finally:
        paused.send_signal(signal.SIGCONT)
    texts = finish([paused, other], logs)
    assert f"sweep: trial {victim.number} was taken over after a pause; result discarded" in texts[0], texts[0]
    assert f"#{victim.number} " not in texts[0]  # no progress line, and not counted as run by the paused worker
    ts = assert_exact(storage_url, "dist", 4)
    stale = next(t for t in ts if t.number == victim.number)
    assert stale.state == TrialState.FAIL and stale.user_attrs["fail_reason"] == f"stale: no heartbeat for {GRACE} s"


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_workers_in_different_time_zones_share_one_clock(tmp_path: Path, storage_url: str) -> None:
    submit(config.load(study_file(tmp_path, n_trials=6, epochs=5)), storage_url)
    ahead = start("worker", "--poll", "0.2", storage=storage_url, log=tmp_path / "ahead.log",
                  extra={"PGTZ": "Etc/GMT-14", "TZ": "Pacific/Kiritimati"})  # UTC+14
    killed = wait_until_mid_trial(storage_url, "dist", ahead)
    ahead.send_signal(signal.SIGKILL)  # at once, mid-trial: its last heartbeat must go stale in 3 s, not 14 h
    ahead.wait()
    logs = [tmp_path / "behind.log", tmp_path / "utc.log"]
    others = [start("worker", "--poll", "0.2", storage=storage_url, log=logs[0],
                    extra={"PGTZ": "Etc/GMT+12", "TZ": "Etc/GMT+12"}),  # UTC-12
              start("worker", "--poll", "0.2", storage=storage_url, log=logs[1],
                    extra={"PGTZ": "UTC", "TZ": "America/New_York"})]
    finish(others, logs, timeout=240)
    ts = assert_exact(storage_url, "dist", 6)
    failed = [t for t in ts if t.state == TrialState.FAIL]
    # Only the killed worker's trial failed: the worker behind UTC never had a live trial failed as stale.
    assert [(t.number, t.user_attrs["fail_reason"]) for t in failed] == [(killed.number, f"stale: no heartbeat for {GRACE} s")]


# --- a full disk for SQLite -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[str]:
    """A 4 MiB tmpfs at ``folder`` ("tmpfs"), or, where mounting is not allowed, nothing ("rlimit")."""
    folder.mkdir()
    mounted = not os.environ.get("SWEEP_TEST_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            # Lazy: an engine of this test process may still hold the database file open; it detaches now.
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def test_full_disk_for_sqlite(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as how:
        url = f"sqlite:///{tmp_path / 'disk' / 'sweeps.db'}"
        submit(config.load(study_file(tmp_path, n_trials=4, epochs=3)), url)
        logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
        procs = [start("worker", "--poll", "0.2", storage=url, log=log, no_files=how == "rlimit") for log in logs]
        wait_until_mid_trial(url, "dist", procs[0])
        if how == "tmpfs":
            filler = fill(tmp_path / "disk")
            time.sleep(6)
            filler.unlink()
        else:  # a file-size limit of 0 bytes on the workers: every write to a file fails (EFBIG)
            for p in procs:
                resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            time.sleep(6)
            for p in procs:
                resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        texts = finish(procs, logs)
        assert any("sweep: store unavailable: " in t for t in texts), texts
        assert_exact(url, "dist", 4)
