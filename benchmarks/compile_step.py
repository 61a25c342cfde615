"""Does ``torch.compile`` or the fused C tail speed up the population step on this machine? In one run.

    PYTHONPATH=. python benchmarks/compile_step.py [--ks 5,32,80] [--hidden 128] [--steps 46] [--reps 5]

Times ``sweep.training.stacks.step`` (one SGD step of K SimpleNets sharing a batch of 64, as a
holdout population trains) three ways, alternating them, best of --reps passes of --steps steps:
eager (PyTorch calls only: a cohort without its fused view, as ``SWEEP_FUSED=0`` builds it), fused (the C tail of
``sweep.training.fused``, what a CPU population runs) and the eager step under ``torch.compile``
(inductor, default mode, ``dynamic=False``). Prints ms per step, GFLOP/s of the step's matmul
FLOPs, the compile time (the first compiled pass minus a compiled pass; inductor caches compiled
code on disk, so a second run of this script compiles faster than a fresh machine), and how many
steps the compiled step needs to pay its compile time back against the faster of the other two.
K = 5 is the quick start's population; 80 is a CV study's 16 lambdas x 5 folds.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sweep.training import fused
from sweep.training.model import init_simplenet
from sweep.training.stacks import Cohort, FitSet, step


def cohort(fs: FitSet, k: int, hidden: int, *, fuse: bool) -> Cohort:
    lams = torch.logspace(-5, -2, k).tolist()  # the study range, so no member diverges
    c = Cohort([fs], [(i, lam, 0, 0) for i, lam in enumerate(lams)], build=lambda s: init_simplenet(hidden, s),
               lr=0.1, decay_bias=True, device=torch.device("cpu"))
    if not fuse:
        c.fused = None  # the step then takes stacks._tail, as with SWEEP_FUSED=0
    return c


def one_pass(fn, c: Cohort, x: torch.Tensor, y: torch.Tensor, batches: torch.Tensor) -> float:  # noqa: ANN001
    losses = torch.zeros(len(batches), len(c), batches.shape[1], 1)
    hits = torch.zeros(len(batches), len(c), batches.shape[1], 1, dtype=torch.bool)
    start = time.perf_counter()
    with torch.no_grad():
        for i, idx in enumerate(batches):
            fn(c, x[idx].unsqueeze(0), y[idx].unsqueeze(0), 0.1, losses[i], hits[i])
    return time.perf_counter() - start


def drift(a: Cohort, b: Cohort) -> float:
    """The largest difference between two cohorts' first-layer weights."""
    return float((a.w1 * a.scale - b.w1 * b.scale).abs().max())


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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SimpleNet 784-{args.hidden}-10, batch 64; "
          f"fused tail: {fused.why_not() or 'compiled'}")
    print(f"{'K':>4} {'eager ms/step':>14} {'fused':>7} {'compiled':>9} {'eager GFLOP/s':>14} {'fused':>7} {'compiled':>9} "
          f"{'compile s':>10} {'break-even steps':>17}")
    for k in [int(v) for v in args.ks.split(",")]:
        torch._dynamo.reset()  # each K compiles afresh, as a study's first population would
        compiled = torch.compile(step, dynamic=False)
        eager_c, comp_c = cohort(fs, k, args.hidden, fuse=False), cohort(fs, k, args.hidden, fuse=False)
        fused_c = cohort(fs, k, args.hidden, fuse=True)
        one_pass(step, eager_c, x, y, batches)  # warm-up, and all cohorts then take the same steps
        one_pass(step, fused_c, x, y, batches)
        first = one_pass(compiled, comp_c, x, y, batches)
        times: dict[str, list[float]] = {"eager": [], "fused": [], "compiled": []}
        for _ in range(args.reps):
            times["eager"].append(one_pass(step, eager_c, x, y, batches) / args.steps)
            times["fused"].append(one_pass(step, fused_c, x, y, batches) / args.steps)
            times["compiled"].append(one_pass(compiled, comp_c, x, y, batches) / args.steps)
        e, f, c = (min(times[w]) for w in ("eager", "fused", "compiled"))
        compile_s = first - c * args.steps
        flops = k * 64 * (2 * 2 * 784 * args.hidden + 3 * 2 * args.hidden * 10)
        gain = min(e, f) - c
        even = f"{compile_s / gain:,.0f}" if gain > 0 else "never"
        print(f"{k:>4} {e * 1e3:>14.3f} {f * 1e3:>7.3f} {c * 1e3:>9.3f} {flops / e / 1e9:>14.1f} {flops / f / 1e9:>7.1f} "
              f"{flops / c / 1e9:>9.1f} {compile_s:>10.1f} {even:>17}")
        # Same arithmetic: after the same steps the cohorts hold the same weights, up to float rounding.
        print(f"     (after {(args.reps + 1) * args.steps} steps each, first-layer weights differ from eager's by at most "
              f"{drift(eager_c, fused_c):.1e} fused, {drift(eager_c, comp_c):.1e} compiled)")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
