"""The crash-point suite: a real worker process SIGKILLed at each point of a trial's life, then a fresh worker.

The worker stops at a named point through the test hook (``sweep.workers.testhook``: it writes its PID to a
marker file and blocks), and the test kills it there with SIGKILL. A fresh worker (in this process, 1 s
heartbeats, a 2 s grace period) then finishes the study: exactly ``n_trials`` COMPLETE, none RUNNING, the
refit stored, and no lambda trained twice to completion. Single trials and batches, SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep import config
from sweep.study import create_or_load as submit
from tests.procs import ROOT, env, sweep, trials
from tests.workers.helpers import work_within

pytestmark = pytest.mark.slow
GRACE = 2
POINTS = ["after_ask", "after_suggest", "mid_epoch", "before_tell", "after_tell", "mid_refit"]
STUDY = """\
name = "crash"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = 2
lr = 0.1
device = "cpu"
[search]
sampler = "tpe"
n_trials = 2
pruner = "none"
batch = {batch}
"""
# Every point for single trials and batches on SQLite (the refit is the same after either: once); every point on
# PostgreSQL too, each once, single trials and batches in turn (its advisory lock and row locks are what differ).
CASES = ([("sqlite", p, b) for b in (1, 2) for p in POINTS if (p, b) != ("mid_refit", 2)]
         + [("postgresql", "after_ask", 1), ("postgresql", "after_suggest", 2), ("postgresql", "mid_epoch", 2),
            ("postgresql", "before_tell", 1), ("postgresql", "after_tell", 2), ("postgresql", "mid_refit", 1)])


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", str(GRACE))


def _kill_at(point: str, url: str, tmp_path: Path) -> None:
    """Start a worker that stops at ``point``; SIGKILL it there."""
    marker, log = tmp_path / "paused", tmp_path / "worker.log"
    extra = {"SWEEP_TEST_PAUSE_AT": point, "SWEEP_TEST_PAUSE_FILE": str(marker), "SWEEP_GRACE_PERIOD": str(GRACE)}
    with open(log, "wb") as f:
        proc = subprocess.Popen(sweep("worker", "--study", "crash", "--poll", "0.2"), env={**env(url), **extra},
                                stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert proc.poll() is None, f"the worker ended before {point}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"the worker never reached {point}"
        time.sleep(0.05)
    assert int(marker.read_text()) == proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _wait_claim_dead(url: str) -> None:
    """After a kill mid-refit: wait until the dead worker's claim has had no beat for the grace period."""
    deadline = time.monotonic() + 60
    while True:
        claim = optuna.load_study(study_name="crash", storage=url).user_attrs["refit_claim"]
        if time.time() - claim["beat"] > GRACE + 0.5:
            return
        assert time.monotonic() < deadline, claim
        time.sleep(0.2)


@pytest.mark.parametrize(("storage_url", "point", "batch"), CASES, indirect=["storage_url"],
                         ids=[f"{b}-{p}-batch{k}" for b, p, k in CASES])
def test_a_worker_killed_at_each_point(tmp_path: Path, storage_url: str, point: str, batch: int) -> None:
    url = storage_url
    path = tmp_path / "crash.toml"
    path.write_text(STUDY.format(batch=batch), encoding="utf-8")
    submit(config.load(path), url)
    _kill_at(point, url, tmp_path)
    if point == "mid_refit":
        _wait_claim_dead(url)
    work_within(180, storage=url, study_name="crash")
    ts = trials(url, "crash")
    states = [t.state for t in ts]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states, [(t.number, t.state) for t in ts]
    done = [t.params["lambda"] for t in ts if t.state == TrialState.COMPLETE]
    assert len(set(done)) == len(done)  # no lambda trained twice to completion
    refit = optuna.load_study(study_name="crash", storage=url).user_attrs["refit"]
    assert refit["min"]["test_acc"] is not None
