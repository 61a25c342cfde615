"""deploy/slurm/worker.sbatch on a live one-node Slurm (munge, slurmctld, slurmd on this machine) with PostgreSQL.

The fixture runs ``.ci/setup-slurm.sh`` as CI does (it installs Debian's slurm-wlm and munge and starts the
daemons; idempotent) and skips with one reason where Slurm cannot start (not root and no Slurm answering).
Every test submits a tiny study (mnist-sample, ``sweep submit``), starts the array with ``sbatch`` exactly as
docs/slurm.md does (the store URL in a file named by SWEEP_STORAGE_FILE), acts on the tasks the way Slurm does
(``scancel --signal=TERM``, ``scontrol requeue``, SIGKILL), waits for states (squeue, scontrol, the store),
and cancels its own jobs by id at the end. Workers use 1 s heartbeats and a 3 s grace period (``procs.env``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from optuna.trial import TrialState

from tests.conftest import fresh_postgres_database
from tests.procs import ROOT, env, study_file, sweep, trials

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SCRIPT = ROOT / "deploy" / "slurm" / "worker.sbatch"
GPU_SCRIPT = ROOT / "deploy" / "slurm" / "worker-gpu.sbatch"
EPOCHS = 30  # a trial of several seconds, so a signal lands mid-trial
TIMEOUT = 300
T = TypeVar("T")


def _sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = _sh("sinfo", "-h", "-o", "%T", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc", "completing"))


@pytest.fixture(scope="module")
def slurm() -> None:
    """A live Slurm: started by .ci/setup-slurm.sh where this is root, else whatever answers (or skip)."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        done = subprocess.run(["bash", str(ROOT / ".ci" / "setup-slurm.sh")], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr  # root on Debian (CI): Slurm must start
    if not _slurm_answers():
        pytest.skip("no Slurm answers sinfo and this is not root on Debian, so .ci/setup-slurm.sh cannot start one")


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    yield from fresh_postgres_database(tmp_path, prefix="sweep_slurm")


@pytest.fixture
def array(slurm: None, pg: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``array(name, tasks, n_trials, extra_env)``: submit the study, sbatch the array as docs/slurm.md does; its job id.
    Every job started here is cancelled (by id) at the end and waited for, so the next test finds the node free."""
    started: list[str] = []
    url_file = tmp_path / "store-url"
    url_file.write_text(pg + "\n")
    url_file.chmod(0o600)

    def start(name: str, tasks: int, n_trials: int, extra: dict[str, str] | None = None) -> str:
        path = study_file(tmp_path, name, n_trials=n_trials, epochs=EPOCHS)
        _sh(*sweep("submit", str(path), "--storage", pg), timeout=120)
        environ = {**env(), **(extra or {})}
        environ.pop("SWEEP_STORAGE", None)  # the URL goes by file, as the docs say
        environ["SWEEP_STORAGE_FILE"] = str(url_file)
        environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
        out = subprocess.run(["sbatch", "--parsable", f"--array=1-{tasks}", f"--chdir={tmp_path}",
                              f"--output={tmp_path}/task-%a.out", str(SCRIPT), "--study", name],
                             env=environ, capture_output=True, text=True, check=True, timeout=60)
        job = out.stdout.strip().split(";")[0]
        started.append(job)
        return job

    yield start
    for job in started:
        subprocess.run(["scancel", job], capture_output=True, timeout=60)
    deadline = time.monotonic() + 120
    while started and _sh("squeue", "-h", "-j", ",".join(started), check=False).stdout.strip():
        assert time.monotonic() < deadline, "jobs did not end after scancel"
        time.sleep(0.5)


def tasks_of(job: str) -> dict[int, dict[str, str]]:
    """Array task number -> its fields in ``scontrol show job -o`` (JobId, JobState, ExitCode, Restarts, ...)."""
    out = _sh("scontrol", "show", "job", "-o", job, check=False).stdout
    found = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "ArrayTaskId" in fields and fields["ArrayTaskId"].isdigit():
            found[int(fields["ArrayTaskId"])] = fields
    return found


def wait_for(what: str, cond: Callable[[], T | None], timeout: float = TIMEOUT, tmp_path: Path | None = None) -> T:
    """Poll ``cond`` until it returns something true, and return that; on timeout fail with the tasks' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    logs = "" if tmp_path is None else "\n".join(
        p.read_text(errors="replace")[-1500:] for p in sorted(tmp_path.glob("task-*.out")))
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def all_done(job: str, n: int) -> Callable[[], dict[int, dict[str, str]] | None]:
    def check() -> dict[int, dict[str, str]] | None:
        ts = tasks_of(job)
        ended = len(ts) == n and all(t["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for t in ts.values())
        return ts if ended else None
    return check


def mid_trial(url: str, name: str, n: int) -> Callable[[], bool | None]:
    """``n`` trials RUNNING, each past its first epoch and at least 5 epochs from its end: with one trial per
    task, ``n`` = the tasks, every task is training now and stays so for a few seconds."""
    def check() -> bool | None:
        try:
            running = [t for t in trials(url, name) if t.state == TrialState.RUNNING]
        except KeyError:
            return False
        return sum(1 <= len(t.intermediate_values) <= EPOCHS - 5 for t in running) >= n
    return check


def log(tmp_path: Path, task: int) -> str:
    return (tmp_path / f"task-{task}.out").read_text(errors="replace")


def assert_exact(url: str, name: str, n: int) -> list:
    ts = trials(url, name)
    states = [t.state for t in ts]
    assert states.count(TrialState.COMPLETE) == n, states
    assert TrialState.RUNNING not in states, states
    complete = [t.params["lambda"] for t in ts if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == n  # no lambda trained to completion twice
    return ts


def test_an_array_of_4_tasks_finishes_the_study_and_sweep_best_reads_it(array, pg: str, tmp_path: Path) -> None:
    job = array("slurm-array", tasks=4, n_trials=8)  # 4 tasks starting in the same second, one store
    ts = wait_for("the array to end", all_done(job, 4), tmp_path=tmp_path)
    assert {t["JobState"] for t in ts.values()} == {"COMPLETED"}, ts
    assert {t["ExitCode"] for t in ts.values()} == {"0:0"}
    logs = [log(tmp_path, i) for i in range(1, 5)]
    assert not any("Traceback" in t for t in logs), logs
    assert sum("refits: slurm-array" in t for t in logs) == 1  # one task refit the chosen lambda
    done = assert_exact(pg, "slurm-array", 8)
    best = json.loads(_sh(*sweep("best", "slurm-array", "--storage", pg, "--format", "json")).stdout)
    assert best["lambda"] in {t.params["lambda"] for t in done if t.state == TrialState.COMPLETE}
    assert best["test_acc"] is not None


def test_tasks_stopped_by_scancel_signal_and_by_requeue_hand_back_their_trials(array, pg: str, tmp_path: Path) -> None:
    job = array("slurm-preempt", tasks=4, n_trials=8)
    wait_for("every task mid-trial", mid_trial(pg, "slurm-preempt", 4), tmp_path=tmp_path)
    ids = tasks_of(job)
    _sh("scancel", "--signal=TERM", ids[1]["JobId"])  # to the worker only: the script requeues the task
    _sh("scontrol", "requeue", ids[2]["JobId"])  # Slurm ends the task (TERM, KillWait, KILL) and requeues it
    def requeued_and_done() -> dict[int, dict[str, str]] | None:
        t = all_done(job, 4)()
        return t if t and all(t[i]["Restarts"] == "1" for i in (1, 2)) else None

    ts = wait_for("the array to end, the two requeued tasks on their second start", requeued_and_done, tmp_path=tmp_path)
    assert {t["JobState"] for t in ts.values()} == {"COMPLETED"}, ts  # the requeued tasks too, second time round
    assert {t["ExitCode"] for t in ts.values()} == {"0:0"}, ts
    assert ts[3]["Restarts"] == ts[4]["Restarts"] == "0"
    for i in (1, 2):
        text = log(tmp_path, i)
        assert "Traceback" not in text, text
        assert re.search(r"error: stopped by SIGTERM; trial \d+ was failed as 'interrupted' and its lambda queued again",
                         text), text
        assert "start 2)" in text, text  # it started again, joined the study and ended with exit 0
    assert "requeueing job" in log(tmp_path, 1)  # the script asked for it; for scontrol requeue Slurm did
    done = assert_exact(pg, "slurm-preempt", 8)
    interrupted = [t for t in done if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == 2, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in done]
    for t in interrupted:  # each handed-back lambda was trained to completion exactly once, later
        again = [d for d in done if d.state == TrialState.COMPLETE and d.params["lambda"] == t.params["lambda"]]
        assert len(again) == 1 and again[0].user_attrs.get("retried_from") == t.number


def minutes(elapsed: str) -> int:
    """Whole minutes of a RunTime such as 0:41, 1:02:03 or 1-00:00:00 (scontrol's D-HH:MM:SS)."""
    days, _, clock = elapsed.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1]


def test_tasks_at_their_time_limit_hand_back_their_trials(array, pg: str, tmp_path: Path) -> None:
    # The time limit, brought near with `scontrol update TimeLimit` on running tasks (Slurm keeps limits in minutes
    # and looks at them every 30 s or so). Task 1: its limit less than the script's --signal lead (120 s) away, so
    # Slurm sends TERM to the worker ahead of it and the script requeues the task. Task 2: its limit already past,
    # so Slurm ends the task itself (TERM to every process, SIGKILL after KillWait): TIMEOUT, not requeued.
    # Each worker holds after its first epoch's report until the test releases it (sweep.workers.testhook), so
    # the TERM lands mid-trial however long Slurm takes to send it; both hand their trial back. Task 2 gets two
    # TERMs at once (the --signal one, due too, and the time limit's): the second ends its trial at once.
    release = tmp_path / "release"
    job = array("slurm-timelimit", tasks=2, n_trials=4, extra={
        "SWEEP_TEST_PAUSE_AT": "mid_epoch", "SWEEP_TEST_PAUSE_FILE": str(tmp_path / "paused"),
        "SWEEP_TEST_RELEASE_FILE": str(release)})
    wait_for("both tasks held mid-trial", mid_trial(pg, "slurm-timelimit", 2), tmp_path=tmp_path)
    one = tasks_of(job)[1]
    # 2 to 3 minutes left: under the lead, so TERM comes at Slurm's next look, and time to end the epoch after it.
    _sh("scontrol", "update", f"JobId={job}_1", f"TimeLimit={minutes(one['RunTime']) + 3}")

    def a_minute_in() -> dict[str, str] | None:
        task = tasks_of(job)[2]
        return task if minutes(task["RunTime"]) >= 1 else None

    wait_for("task 2 a minute in", a_minute_in, tmp_path=tmp_path)
    _sh("scontrol", "update", f"JobId={job}_2", "TimeLimit=1")  # by task: the last task's own id is the array's
    wait_for("task 1's TERM", lambda: "SIGTERM received" in log(tmp_path, 1), tmp_path=tmp_path)
    # Task 2's two signals come as Slurm ends the step, and its "received" line may not reach the task's output
    # (seen once: only the second signal's "interrupted" line did). Either shows the worker got them.
    wait_for("task 2's signals", lambda: any(s in log(tmp_path, 2) for s in ("received;", "error: interrupted")),
             tmp_path=tmp_path)
    release.touch()  # within KillWait (30 s) of task 2's TERM: its worker ends its epoch before SIGKILL
    wait_for("task 1 requeued", lambda: tasks_of(job)[1]["JobState"] == "PENDING", tmp_path=tmp_path)
    # Its next start would get the same short limit: give it back a long one, as a real partition's would be.
    _sh("scontrol", "update", f"JobId={job}_1", "TimeLimit=60")

    def both_ended() -> dict[int, dict[str, str]] | None:
        t = all_done(job, 2)()
        return t if t and t[1]["Restarts"] == "1" else None

    ts = wait_for("the array to end, task 1 on its second start", both_ended, tmp_path=tmp_path)
    assert (ts[1]["JobState"], ts[1]["ExitCode"]) == ("COMPLETED", "0:0"), ts
    assert ts[2]["JobState"] == "TIMEOUT" and ts[2]["Restarts"] == "0", ts
    assert "requeueing job" in log(tmp_path, 1) and "requeueing job" not in log(tmp_path, 2)
    assert "Traceback" not in log(tmp_path, 1) + log(tmp_path, 2)
    done = assert_exact(pg, "slurm-timelimit", 4)
    interrupted = [t for t in done if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == 2, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in done]
    for t in interrupted:  # each handed-back lambda was trained to completion exactly once, later
        again = [d for d in done if d.state == TrialState.COMPLETE and d.params["lambda"] == t.params["lambda"]]
        assert len(again) == 1 and again[0].user_attrs.get("retried_from") == t.number


def worker_pid(jobid: str) -> int:
    """The pid of the ``sweep worker`` process of one task (scontrol listpids lists the task's processes)."""
    def find() -> int | None:
        out = _sh("scontrol", "listpids", jobid, check=False).stdout.split()
        for pid in filter(str.isdigit, out):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(c.endswith(b"python") or b"python3" in c for c in cmd[:1]) and b"worker" in cmd:
                return int(pid)
        return None
    return wait_for(f"the worker process of job {jobid}", find, timeout=60)


def test_a_task_killed_with_sigkill_has_its_trial_retried_by_another(array, pg: str, tmp_path: Path) -> None:
    # Each worker holds after its first epoch's report until the test releases it (sweep.workers.testhook): short
    # trials on a quiet machine could otherwise end before all three were seen training at once.
    release = tmp_path / "release"
    job = array("slurm-kill", tasks=3, n_trials=6, extra={
        "SWEEP_TEST_PAUSE_AT": "mid_epoch", "SWEEP_TEST_PAUSE_FILE": str(tmp_path / "paused"),
        "SWEEP_TEST_RELEASE_FILE": str(release)})
    wait_for("every task held mid-trial", mid_trial(pg, "slurm-kill", 3), tmp_path=tmp_path)
    victim = tasks_of(job)[1]["JobId"]
    os.kill(worker_pid(victim), signal.SIGKILL)  # as the OOM killer, or Slurm after KillWait
    release.touch()
    ts = wait_for("the array to end", all_done(job, 3), tmp_path=tmp_path)
    assert ts[1]["JobState"] == "FAILED", ts  # the killed task is not requeued: the others carry on
    assert ts[2]["JobState"] == ts[3]["JobState"] == "COMPLETED", ts
    done = assert_exact(pg, "slurm-kill", 6)
    stale = [t for t in done if t.state == TrialState.FAIL]
    assert len(stale) == 1 and str(stale[0].user_attrs.get("fail_reason", "")).startswith("stale"), \
        [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in done]
    again = [t for t in done if t.state == TrialState.COMPLETE and t.params["lambda"] == stale[0].params["lambda"]]
    assert len(again) == 1  # retried by a task that lived, and completed once
    assert "Traceback" not in log(tmp_path, 2) + log(tmp_path, 3)


def test_the_gpu_variant_runs_the_same_body() -> None:
    """worker-gpu.sbatch differs from worker.sbatch only in its header (resources), and parses."""
    body = "# ---- the body below"
    cpu, gpu = SCRIPT.read_text(), GPU_SCRIPT.read_text()
    assert cpu[cpu.index(body):] == gpu[gpu.index(body):]
    assert "#SBATCH --gres=gpu:1" in gpu and "#SBATCH --requeue" in gpu and "#SBATCH --signal=TERM@" in gpu
    for path in (SCRIPT, GPU_SCRIPT):
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
        assert "SWEEP_STORAGE_FILE" in path.read_text()
