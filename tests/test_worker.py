"""Generic workers: several processes on one study end with exactly its target of complete trials."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from procs import ROOT, env, start, study_file, sweep, trials, wait_until_mid_trial

from sweep import config
from sweep.cli import main
from sweep.study import create_or_load as submit

pytestmark = pytest.mark.slow


def _ran(log: Path) -> int:
    m = re.search(r"^worker ran (\d+) trials?;", log.read_text(), re.M)
    assert m, log.read_text()[-2000:]
    return int(m.group(1))


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)  # SQLite: the run --workers 4 test below
def test_four_workers_reach_exactly_the_target(tmp_path: Path, storage_url: str) -> None:
    cfg = config.load(study_file(tmp_path, n_trials=8))
    submit(cfg, storage_url)
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = [start("worker", "--poll", "0.2", storage=storage_url, log=log) for log in logs]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0, 0, 0], [log.read_text()[-1500:] for log in logs]
    ts = trials(storage_url, "dist")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 8  # none lost, none extra, none left running
    assert sorted(t.number for t in ts) == list(range(8))
    assert len({t.params["lambda"] for t in ts}) == 8  # no duplicated lambda
    assert sum(_ran(log) for log in logs) == 8  # every trial a worker ran is in the store, once
    assert sum("refits: dist" in log.read_text() for log in logs) == 1  # one refit, by one worker
    attrs = optuna.load_study(study_name="dist", storage=storage_url).user_attrs
    assert attrs["refit"]["min"]["trial"] == attrs["refit_claim"]["trial"]


def test_run_with_four_local_processes_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    path = study_file(tmp_path, n_trials=8)
    out = subprocess.run(sweep("run", str(path), "--workers", "4"), env=env(sqlite_url), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "database is locked" not in out.stderr
    assert out.stdout.startswith("best lambda ")
    ts = trials(sqlite_url, "dist")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 8
    assert len({t.params["lambda"] for t in ts}) == 8
    refit = optuna.load_study(study_name="dist", storage=sqlite_url).user_attrs["refit"]["min"]
    assert 0.5 < refit["test_acc"] <= 1.0


def test_worker_killed_mid_trial_is_retried(tmp_path: Path, storage_url: str) -> None:
    cfg = config.load(study_file(tmp_path, n_trials=1, epochs=12))
    submit(cfg, storage_url)
    victim = start("worker", "--poll", "0.2", storage=storage_url, log=tmp_path / "victim.log")
    doomed = wait_until_mid_trial(storage_url, "dist", victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    # A second worker finds the trial RUNNING without heartbeats; after the grace period it is failed and retried.
    rescuer = start("worker", "--poll", "0.2", storage=storage_url, log=tmp_path / "rescuer.log")
    assert rescuer.wait(timeout=300) == 0, (tmp_path / "rescuer.log").read_text()[-2000:]
    ts = trials(storage_url, "dist")
    assert ts[doomed.number].state == TrialState.FAIL
    retries = [t for t in ts if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == doomed.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == doomed.params
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE]  # exactly the target, nothing left over


def test_sigterm_fails_the_trial_as_interrupted_and_queues_its_lambda(tmp_path: Path, sqlite_url: str) -> None:
    cfg = config.load(study_file(tmp_path, n_trials=1, epochs=12))
    submit(cfg, sqlite_url)
    log = tmp_path / "w.log"
    proc = start("worker", storage=sqlite_url, log=log)
    first = wait_until_mid_trial(sqlite_url, "dist", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert log.read_text().splitlines()[-1] == (
        "error: stopped by SIGTERM; trial 0 was failed as 'interrupted' and its lambda queued again")
    ts = trials(sqlite_url, "dist")
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.WAITING]
    assert ts[0].user_attrs["fail_reason"] == "interrupted" and ts[1].system_attrs["fixed_params"] == first.params
    # The next worker takes the queued lambda and the study reaches its target.
    result = CliRunner().invoke(main, ["worker", "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    ts = trials(sqlite_url, "dist")
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert ts[1].params == first.params


def test_worker_on_a_missing_study(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["worker", "--storage", sqlite_url, "--study", "nope"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: no study named 'nope' in {sqlite_url}; "
                             "submit it first with 'sweep submit STUDY.toml --storage URL'\n")


def test_worker_with_no_work_exits_at_once(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["worker", "--storage", sqlite_url])
    assert (result.exit_code, result.stdout) == (0, "worker ran 0 trials; studies at target: none; refits: none\n")


def test_submit_prints_the_name_and_runs_nothing(tmp_path: Path, sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["submit", str(study_file(tmp_path)), "--storage", sqlite_url, "--set",
                                       "search.n_trials=5", "--name", "other"])
    assert (result.exit_code, result.stdout) == (0, "other\n")
    study = optuna.load_study(study_name="other", storage=sqlite_url)
    assert study.get_trials() == []
    assert config.from_json(study.user_attrs["config"]).search.n_trials == 5
