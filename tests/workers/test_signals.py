"""Two stop signals in a row never lose a lambda: Ctrl-C on ``sweep run --workers N`` (the terminal's SIGINT, then
the parent's SIGTERM), and Slurm's ``scancel --signal=TERM`` followed by a requeue's TERM within one epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from sweep import config
from sweep.study import create_or_load as submit
from tests.procs import ROOT, env, start, sweep, trials

pytestmark = pytest.mark.slow

STUDY = """\
name = "sig"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = 30
lr = 0.1
device = "cpu"
[search]
sampler = "random"
n_trials = {n}
pruner = "none"
batch = {batch}
"""


def _requeued(ts: list[FrozenTrial]) -> None:
    """Every trial failed as interrupted has its lambda queued again (WAITING, or already run to the end)."""
    queued = [t.system_attrs.get("fixed_params") for t in ts if t.state == TrialState.WAITING]
    stopped = [t for t in ts if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs.get("fail_reason") == "interrupted" for t in stopped), [t.user_attrs for t in ts]
    for t in stopped:
        assert t.params in queued, (t.number, t.params, queued)
    assert TrialState.RUNNING not in [t.state for t in ts]


@pytest.mark.parametrize(("batch", "first", "second"), [(1, signal.SIGINT, signal.SIGTERM),
                                                        (2, signal.SIGTERM, signal.SIGTERM)])
def test_a_second_signal_keeps_the_lambda(tmp_path: Path, sqlite_url: str, batch: int, first: int, second: int) -> None:
    path = tmp_path / "sig.toml"
    path.write_text(STUDY.format(n=2, batch=batch), encoding="utf-8")
    submit(config.load(path), sqlite_url)
    # The worker holds after its first epoch's report (sweep.workers.testhook, never released here): both signals
    # land within that epoch however slowly this process sends them, not one on each side of the epoch's end.
    log, paused = tmp_path / "w.log", tmp_path / "paused"
    proc = start("worker", "--study", "sig", storage=sqlite_url, log=log, extra={
        "SWEEP_TEST_PAUSE_AT": "mid_epoch", "SWEEP_TEST_PAUSE_FILE": str(paused),
        "SWEEP_TEST_RELEASE_FILE": str(tmp_path / "release")})
    deadline = time.monotonic() + 180
    while not paused.exists():
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(first)
    while "received; the current trial ends" not in log.read_text():  # handled: a second one is not merged into it
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.01)
    proc.send_signal(second)  # within the same epoch: read as "stop now"
    assert proc.wait(timeout=120) == 130, log.read_text()[-2000:]  # stopped at once, not after the epoch
    _requeued(trials(sqlite_url, "sig"))


def test_ctrl_c_on_run_with_workers(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "sig.toml"
    path.write_text(STUDY.format(n=3, batch=1), encoding="utf-8")
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches the parent and its workers alike.
    proc = subprocess.Popen(sweep("run", str(path), "--workers", "2"), env=env(sqlite_url), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in _trials(sqlite_url)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "two trials never got under way"
        time.sleep(0.2)
    before = len(_trials(sqlite_url))  # a trial may have completed, and another begun, before the signal
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    ts = trials(sqlite_url, "sig")
    _requeued(ts)
    assert len([t for t in ts if t.state != TrialState.WAITING]) <= before  # no trial admitted after the signal


def _trials(url: str) -> list[FrozenTrial]:
    try:
        return trials(url, "sig")
    except KeyError:
        return []
