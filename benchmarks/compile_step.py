"""Does ``torch.compile`` speed up the population step on this machine? Eager vs compiled, in one run.

    PYTHONPATH=. python benchmarks/compile_step.py [--ks 5,32,80] [--hidden 128] [--steps 46] [--reps 5]

Times ``sweep.training.stacks.step`` (one SGD step of K SimpleNets sharing a batch of 64, as a
holdout population trains) eager and under ``torch.compile`` (inductor, default mode,
``dynamic=False``), alternating the two, best of --reps passes of --steps steps. Prints
ms per step, GFLOP/s of the step's matmul FLOPs, the compile time (the first compiled pass
minus a compiled pass; inductor caches compiled code on disk, so a second run of this script
compiles faster than a fresh machine), and how many steps the compiled step needs to pay
its compile time back.
K = 5 is the quick start's population; 80 is a CV study's 16 lambdas x 5 folds.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sweep.training.model import init_simplenet
from sweep.training.stacks import Cohort, FitSet, step


def cohort(fs: FitSet, k: int, hidden: int) -> Cohort:
    lams = torch.logspace(-5, -2, k).tolist()  # the study range, so no member diverges
    return Cohort([fs], [(i, lam, 0, 0) for i, lam in enumerate(lams)], build=lambda s: init_simplenet(hidden, s),
                  lr=0.1, decay_bias=True, device=torch.device("cpu"))


def one_pass(fn, c: Cohort, x: torch.Tensor, y: torch.Tensor, batches: torch.Tensor) -> float:  # noqa: ANN001
    losses = torch.zeros(len(batches), len(c), batches.shape[1], 1)
    hits = torch.zeros(len(batches), len(c), batches.shape[1], 1, dtype=torch.bool)
    start = time.perf_counter()
    with torch.no_grad():
        for i, idx in enumerate(batches):
            fn(c, x[idx].unsqueeze(0), y[idx].unsqueeze(0), 0.1, losses[i], hits[i])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", default="5,32,80")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=46, help="steps per timed pass (the quick start's epoch is 46)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    x, y = torch.rand(3000, 784), torch.randint(0, 10, (3000,))
    batches = torch.randperm(3000)[:64 * args.steps].view(args.steps, 64)
    fs = FitSet(x, y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SimpleNet 784-{args.hidden}-10, batch 64")
    print(f"{'K':>4} {'eager ms/step':>14} {'compiled':>9} {'eager GFLOP/s':>14} {'compiled':>9} {'compile s':>10} "
          f"{'break-even steps':>17}")
    for k in [int(v) for v in args.ks.split(",")]:
        torch._dynamo.reset()  # each K compiles afresh, as a study's first population would
        compiled = torch.compile(step, dynamic=False)
        eager_c, comp_c = cohort(fs, k, args.hidden), cohort(fs, k, args.hidden)
        one_pass(step, eager_c, x, y, batches)  # warm-up, and both cohorts then take the same steps
        first = one_pass(compiled, comp_c, x, y, batches)
        eager, comp = [], []
        for _ in range(args.reps):
            eager.append(one_pass(step, eager_c, x, y, batches) / args.steps)
            comp.append(one_pass(compiled, comp_c, x, y, batches) / args.steps)
        e, c = min(eager), min(comp)
        compile_s = first - c * args.steps
        flops = k * 64 * (2 * 2 * 784 * args.hidden + 3 * 2 * args.hidden * 10)
        gain = e - c
        even = f"{compile_s / gain:,.0f}" if gain > 0 else "never"
        print(f"{k:>4} {e * 1e3:>14.3f} {c * 1e3:>9.3f} {flops / e / 1e9:>14.1f} {flops / c / 1e9:>9.1f} "
              f"{compile_s:>10.1f} {even:>17}")
        # Same arithmetic: after the same steps both cohorts hold the same weights, up to float rounding.
        drift = float((eager_c.w1 * eager_c.scale - comp_c.w1 * comp_c.scale).abs().max())
        print(f"     (after {(args.reps + 1) * args.steps} steps each, first-layer weights differ by at most {drift:.1e})")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
