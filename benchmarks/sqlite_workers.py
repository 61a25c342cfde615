"""Several local worker processes on one SQLite file: do they ever hit "database is locked"?

    PYTHONPATH=$PWD python benchmarks/sqlite_workers.py [--trials 16] [--workers 1 2 4] [--postgres URL]

Each row: N ``sweep worker`` processes on a fresh study of tiny trials (mnist-sample, 1 epoch),
with 1 s heartbeats (ten times the default write rate). Prints wall time, complete trials,
and how many lines of the workers' logs mention a locked database.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from procs import ROOT, env, study_file, sweep, trials  # noqa: E402


def one(url: str, workers: int, n_trials: int, tmp: Path) -> tuple[float, int, int, list[int]]:
    name = f"bench{workers}"
    path = study_file(tmp, name, n_trials=n_trials)
    subprocess.run(sweep("submit", str(path)), env=env(url), cwd=ROOT, check=True, capture_output=True)
    logs = [tmp / f"{name}-{i}.log" for i in range(workers)]
    t0 = time.perf_counter()
    procs = []
    for log in logs:
        with open(log, "wb") as f:
            procs.append(subprocess.Popen(sweep("worker", "--study", name, "--poll", "0.5"), env=env(url), cwd=ROOT,
                                          stdout=f, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    locked = sum(log.read_text().lower().count("database is locked") for log in logs)
    complete = sum(t.state.name == "COMPLETE" for t in trials(url, name))
    return wall, complete, locked, codes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        stores = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")] + ([("postgresql", args.postgres)] if args.postgres else [])
        print(f"{'store':10} {'workers':>7} {'trials':>6} {'complete':>8} {'locked':>6} {'exit codes':>12} {'wall s':>7}")
        for label, url in stores:
            for n in args.workers:
                wall, complete, locked, codes = one(url, n, args.trials, tmp)
                codes_text = ",".join(map(str, codes))
                print(f"{label:10} {n:>7} {args.trials:>6} {complete:>8} {locked:>6} {codes_text:>12} {wall:>7.1f}")


if __name__ == "__main__":
    main()
