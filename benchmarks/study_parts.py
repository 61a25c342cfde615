"""Where a population study's wall time goes, by wall clock: training steps, evaluation, batches, the rest.

    PYTHONPATH=. python benchmarks/study_parts.py [--quick] [--study quickstart|cv]

Runs one study's (c) row of ``study_speed.py`` (``sweep.workers.run.run`` with populations, no refit)
with timers around the population's parts: each cohort's epoch (``population._train_epoch``),
and inside it every training step (``stacks.step``), every evaluation (``stacks.evaluate``) and
every batch gathered (``Cohort.batch``). "outside the epochs" is the rest of the run: the sampler,
storage, the pruner, set-up. Unlike cProfile (``profile_breakdown.py``) it adds only a timer per
call, so the parts add up to the run's own wall time. Prints the matmul rate before and after, as
the machine's speed moves (docs/performance.md, "Run to run"), and the row's floor as
``study_speed.py`` computes it (over the better of the two rates), with the run and its steps against it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from study_speed import matmul_rate, study_configs, sweep_way  # benchmarks/ is the script's folder, on sys.path

from sweep.training import population, stacks

PARTS = ("epochs", "steps", "evaluation", "batches")


def timed(fn: Callable[..., Any], totals: dict[str, list[float]], part: str) -> Callable[..., Any]:
    """``fn`` with its calls counted and their wall time added to ``totals[part]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[part][0] += time.perf_counter() - start
            totals[part][1] += 1
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small studies of study_speed.py --quick")
    ap.add_argument("--study", default="quickstart", choices=("quickstart", "cv"))
    args = ap.parse_args()
    cfg = study_configs(args.quick)[args.study]
    batch = int(cfg.search.batch) if cfg.search.batch != "auto" else 32
    totals: dict[str, list[float]] = {p: [0.0, 0.0] for p in PARTS}  # seconds, calls
    # population.py imports step and evaluate by name, so they are wrapped where it looks them up.
    patches = [(population, "_train_epoch", "epochs"), (population, "step", "steps"),
               (population, "evaluate", "evaluation"), (stacks.Cohort, "batch", "batches")]
    saved = [getattr(owner, name) for owner, name, _ in patches]
    before = matmul_rate()
    for owner, name, part in patches:
        setattr(owner, name, timed(getattr(owner, name), totals, part))
    try:
        row = sweep_way(cfg, batch)
    finally:
        for (owner, name, _), fn in zip(patches, saved, strict=True):
            setattr(owner, name, fn)
    after = matmul_rate()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {row.study} {row.way}: "
          f"{row.wall_s:.1f} s, {row.model_epochs} model-epochs; matmul rate {before / 1e9:.0f} GFLOP/s before, "
          f"{after / 1e9:.0f} after")
    epochs = totals["epochs"][0]
    inside = epochs - sum(totals[p][0] for p in PARTS[1:])
    named = {"training steps": "steps", "evaluation": "evaluation", "gathering batches": "batches"}
    rows = [(name, totals[part][0], totals[part][1]) for name, part in named.items()]
    rows += [("rest of the epochs", inside, totals["epochs"][1]), ("outside the epochs", row.wall_s - epochs, 0.0)]
    print(f"{'part':<22} {'s':>7} {'share':>6} {'calls':>7} {'ms/call':>8}")
    for name, secs, calls in rows:
        per = f"{secs / calls * 1e3:8.3f}" if calls else f"{'-':>8}"
        print(f"{name:<22} {secs:7.1f} {100 * secs / row.wall_s:5.1f}% {int(calls):7d} {per}")
    print(f"{'total':<22} {row.wall_s:7.1f} 100.0%")
    floor = row.flops / max(before, after)  # study_speed's floor: the row's FLOPs over the better rate
    print(f"floor {floor:.1f} s (the row's FLOPs over {max(before, after) / 1e9:.0f} GFLOP/s): the run is "
          f"{row.wall_s / floor:.1f}x it, its training steps alone {totals['steps'][0] / floor:.1f}x")


if __name__ == "__main__":
    main()
