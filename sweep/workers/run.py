"""Run a study end to end: create or resume it, train to its target with local workers, refit the choice.

``run`` is what ``sweep run`` does: ``study.create_or_load`` + ``loop.work`` in
this process (+ ``workers - 1`` extra ``sweep worker`` processes on the same
store) + the refit of the chosen lambda. It continues an interrupted study to its
target count of complete trials: it never starts over and never overshoots.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import optuna
from sqlalchemy.engine import make_url

from sweep.config import StudyConfig
from sweep.errors import ConfigError, StoreOutageError, SweepError
from sweep.objectives.prepared import prepare
from sweep.objectives.scheme import make_objective
from sweep.storages.outage import RUN_STOPS
from sweep.storages.store import resolve_url
from sweep.study import ProgressCallback, create_or_load, refit_best
from sweep.workers.batch import workers_per_device
from sweep.workers.loop import StopFlag, work
from sweep.workers.trust import factories_of


def run(cfg: StudyConfig, storage: str | None = None, *, on_trial: ProgressCallback | None = None,
        refit_after: bool = True, workers: int = 1, stop: StopFlag | None = None) -> optuna.Study:
    """Create or resume the study and run trials until it has ``n_trials`` complete ones, then refit.

    ``stop`` (a ``single.StopFlag``, set by a signal) ends the run cleanly, without the refit. A store away for
    longer than ``SWEEP_STORE_OUTAGE`` ends it with a line that says to run it again (not a worker's words).
    """
    try:
        return _run(cfg, storage, on_trial=on_trial, refit_after=refit_after, workers=workers, stop=stop)
    except StoreOutageError as err:
        raise err.saying(RUN_STOPS) from None


def _run(cfg: StudyConfig, storage: str | None, *, on_trial: ProgressCallback | None, refit_after: bool, workers: int,
         stop: StopFlag | None) -> optuna.Study:
    prep = prepare(cfg)  # data and device problems surface before anything is written to the store
    objective = make_objective(cfg, prep)  # so do fold problems (more folds than a class has examples)
    study = create_or_load(cfg, storage)
    stop = stop if stop is not None else StopFlag()
    trust = tuple(factories_of(cfg).values())  # the user's own study file: its factories, and only those
    # All local workers train on this machine's device: search.batch = "auto" gives each its share of the memory.
    per_device = workers_per_device(default=workers)
    with tempfile.TemporaryDirectory(prefix="sweep-workers-") as logs:
        procs = (spawn_workers(storage, cfg.name, workers - 1, log_dir=logs, trust=trust, per_device=per_device)
                 if workers > 1 else [])
        try:
            work(storage, study_name=cfg.name, refit=False, on_trial=on_trial, stop=stop, objective=objective, prep=prep,
                 trust=trust, per_device=per_device)
        except BaseException:
            join_workers(procs, terminate=True)
            raise
        join_workers(procs, terminate=bool(stop))
    if refit_after and not stop:
        refit_best(study, cfg, prep)
    return study


def spawn_workers(storage: str | None, study_name: str, n: int, *, log_dir: str, trust: tuple[str, ...] = (),
                  per_device: int | None = None) -> list[tuple[subprocess.Popen, str]]:
    """Start ``n`` ``sweep worker`` processes on one study (the URL goes by environment, not argv, so no password
    shows in ``ps``); their stderr goes to files in ``log_dir`` so a failure can be reported. ``per_device``: their
    SWEEP_WORKERS_PER_DEVICE (None: inherited)."""
    url = resolve_url(storage)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError("--workers needs a store that processes can share; an in-memory SQLite URL is not; "
                          "use sqlite:///sweeps.db or PostgreSQL")
    env = {**os.environ, "SWEEP_STORAGE": url}
    if per_device is not None:
        env["SWEEP_WORKERS_PER_DEVICE"] = str(per_device)
    procs = []
    for i in range(n):
        log = os.path.join(log_dir, f"worker-{i + 1}.log")
        with open(log, "wb") as err:
            cmd = [sys.executable, "-m", "sweep", "worker", "--study", study_name, "--no-refit",
                   *[arg for path in trust for arg in ("--trust", path)]]
            procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err), log))
    return procs


def join_workers(procs: list[tuple[subprocess.Popen, str]], *, terminate: bool = False) -> None:
    """Wait for spawned workers (after SIGTERM if ``terminate``); raise the first failure as one line."""
    if terminate:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    failures = []
    for i, (p, log) in enumerate(procs, start=1):
        try:
            code = p.wait(timeout=None if not terminate else 120)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        if code != 0 and not terminate:
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
            failures.append(f"worker process {i} exited with code {code}: {lines[-1] if lines else 'no message'}")
    if failures:
        raise SweepError(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))
