"""Generic workers: several processes on one study end with exactly its target of complete trials."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweep import config
from sweep.cli import main
from sweep.study import create_or_load as submit
from tests.procs import ROOT, env, start, study_file, sweep, trials, wait_until_mid_trial

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


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen, what: str, *, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"the worker exited (code {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_sigterm_fails_the_trial_as_interrupted_and_queues_its_lambda(tmp_path: Path, sqlite_url: str) -> None:
    cfg = config.load(study_file(tmp_path, n_trials=1, epochs=2))
    submit(cfg, sqlite_url)
    log, paused, release = tmp_path / "w.log", tmp_path / "paused", tmp_path / "release"
    # The worker holds after its first epoch's report until released (sweep.workers.testhook), so the signal lands
    # mid-trial however slowly this process looks: a short trial polled for can end before the signal is sent, and
    # then the worker rightly says it stopped "between trials".
    proc = start("worker", storage=sqlite_url, log=log, extra={
        "SWEEP_TEST_PAUSE_AT": "mid_epoch", "SWEEP_TEST_PAUSE_FILE": str(paused), "SWEEP_TEST_RELEASE_FILE": str(release)})
    _wait_for(paused.exists, proc, "the first epoch's report")
    [first] = [t for t in trials(sqlite_url, "dist") if t.state == TrialState.RUNNING]
    assert sorted(first.intermediate_values) == [1]
    proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: "SIGTERM received" in log.read_text(), proc, "the signal's line")  # its handler has run
    release.touch()
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


def _resolved_study(url: str, cfg: config.StudyConfig, accs: list[float]) -> optuna.Study:
    """A submitted study with hand-made complete trials on a grid: ``accs[i]`` of 1,000 validation examples right."""
    from optuna.distributions import FloatDistribution

    from sweep.objectives.attrs import binomial_se

    study = submit(cfg, url)
    lams = np.geomspace(cfg.search.lambda_low, cfg.search.lambda_high, len(accs))
    rng = np.random.default_rng(0)
    for lam, acc in zip(lams, accs, strict=True):
        correct = np.zeros(1000, dtype=np.uint8)
        correct[rng.permutation(1000)[: int(acc * 1000)]] = 1
        bits = base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=float(correct.mean()), params={"lambda": float(lam)},
            distributions={"lambda": FloatDistribution(cfg.search.lambda_low, cfg.search.lambda_high, log=True)},
            user_attrs={"val_correct": [bits], "n_val": 1000, "val_se": binomial_se(float(correct.mean()), 1000)},
        ))
    return study


# A smooth peak at lambda = 10^-3.5 sampled on a grid of 10: the curve is known well everywhere.
PEAK = [0.927, 0.936, 0.943, 0.947, 0.949, 0.949, 0.947, 0.943, 0.936, 0.927]
# The same range, but neighbours disagree by 6 points: the curve is not known anywhere.
ZIGZAG = [0.90, 0.96, 0.89, 0.97, 0.90, 0.95, 0.88, 0.96, 0.90, 0.95]


def test_stop_resolved_stops_before_n_trials_and_says_why(tmp_path: Path, sqlite_url: str) -> None:
    from sweep.workers.loop import work

    cfg = config.load(study_file(tmp_path, n_trials=30), ["search.stop=resolved"])
    _resolved_study(sqlite_url, cfg, PEAK)
    summary = work(sqlite_url, study_name="dist", refit=False)
    assert (summary.trials, summary.finished) == ([], ["dist"])  # no trial added: the answer is resolved
    stopped = optuna.load_study(study_name="dist", storage=sqlite_url).user_attrs["stopped"]
    assert stopped["complete"] == 10
    assert re.fullmatch(r"resolved after 10 complete trials: no lambda in the searched range can beat the best by "
                        r"more than 0\.00\d\d \(the smoothed curve's highest upper bound minus its highest lower "
                        r"bound\), which is within the best trial's standard error \(0\.00\d\d\)",
                        stopped["reason"]), stopped["reason"]
    # sweep run on the same study file says it too, then refits and prints the pick.
    res = CliRunner().invoke(main, ["run", str(tmp_path / "dist.toml"), "--storage", sqlite_url,
                                    "--set", "search.stop=resolved"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == f"stopped before n_trials = 30: {stopped['reason']}"
    assert res.stdout.splitlines()[1].startswith("best lambda ")


def test_stop_resolved_goes_on_while_the_answer_is_open(tmp_path: Path, sqlite_url: str) -> None:
    from sweep.selection import selection_of, stop_reason

    load = lambda name, *sets: config.load(study_file(tmp_path, name, n_trials=30), list(sets))  # noqa: E731
    # Too few trials: the rule does not act before the samplers' random start is done.
    few = load("few", "search.stop=resolved")
    assert stop_reason(selection_of(_resolved_study(sqlite_url, few, PEAK[::3]), few), few) is None
    # Enough trials, but the curve is not known: go on.
    zig = load("zig", "search.stop=resolved")
    assert stop_reason(selection_of(_resolved_study(sqlite_url, zig, ZIGZAG), zig), zig) is None
    # The default (stop = "n_trials") never stops early, whatever the trials say.
    plain = load("plain")
    assert stop_reason(selection_of(_resolved_study(sqlite_url, plain, PEAK), plain), plain) is None
