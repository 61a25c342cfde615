"""The quick start's first-layer matmuls against the 1024^3 matmul that sets the floor, in one run.

    PYTHONPATH=. python benchmarks/first_layer_matmuls.py [--k 5] [--rounds 5]

At K = 5 members of SimpleNet 784-128-10 and a batch of 64, each population step does two big
matmuls: the forward (64, 784) x (784, 640) (``torch.mm``) and the weight gradient accumulated into
the weights (``w.addmm_(x.t(), g)``). Each round times, alternated: the 1024^3 matmul (best of 4),
that pair (best of 5 x 200, the same batch and weights each time, so in cache), and the forward
through oneDNN's fp32 inner product (``torch.ops.mkldnn._linear_pointwise``, a private op that
inductor uses) beside ``torch.mm``. Prints GFLOP/s and the 1024^3 rate over the pair's: how far
these shapes alone sit above the floor.

It also times the pair *blocked*, per step, for s = 2 and 4 steps (``sequential`` and ``blocked``
below; the same products, a test checks): one forward over s batches from the weights before them,
each later batch's output corrected for the updates before it through the batches' Gram matrix
(x_j x_i^T, 64 x 64), and one update with an inner dimension of 64 s. Fewer, larger matmuls and
fewer passes over the 2 MB weights, for 12-26% more FLOPs at K = 5: "x2 us" and "x4 us" against
"pair us" show whether that pays on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def best(fn: Callable[[], object], n: int, reps: int = 5) -> float:
    """Seconds per call of ``fn``, best of ``reps`` passes of ``n`` calls, after one warm-up call."""
    fn()
    out = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        out = min(out, (time.perf_counter() - start) / n)
    return out


def sequential(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, rate: float) -> list[torch.Tensor]:
    """s steps as the population takes them: forward of batch j (rows 64j..) on the current weights, then
    ``w -= rate * x_j^T g_j``. Returns the s forward products; updates ``w`` in place."""
    out = []
    for xj, gj in zip(x.split(64), g.split(64), strict=True):
        out.append(torch.mm(xj, w))
        w.addmm_(xj.t(), gj, alpha=-rate)
    return out


def blocked(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, rate: float) -> list[torch.Tensor]:
    """The same s steps with one forward and one update: x_j w_j = x_j w_0 - rate * sum_{i<j} (x_j x_i^T) g_i.
    (In a real step g_j depends on output j; here g is given, which is what the timing needs.)"""
    p = torch.mm(x, w)
    gram = torch.mm(x, x.t())
    for j in range(1, x.shape[0] // 64):
        rows = slice(64 * j, 64 * (j + 1))
        p[rows].addmm_(gram[rows, :64 * j], g[:64 * j], alpha=-rate)
    w.addmm_(x.t(), g, alpha=-rate)
    return list(p.split(64))


def steps(fn: Callable[..., list[torch.Tensor]], x: torch.Tensor, w: torch.Tensor,
          g: torch.Tensor) -> Callable[[], object]:
    """``fn``'s steps over the batches ``x`` (64 rows each), as a call for ``best``."""
    return lambda: fn(x, w, g, 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=5, help="members (the quick start's population: 5)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.k < 1 or args.rounds < 1:
        ap.error(f"--k and --rounds must be at least 1, got --k {args.k} --rounds {args.rounds}")
    torch.manual_seed(0)
    cols = 128 * args.k
    x, w, g = torch.rand(64, 784), torch.rand(784, cols), torch.rand(64, cols) * 1e-3
    xs, gs = torch.rand(256, 784), torch.rand(256, cols) * 1e-3  # four batches, for the blocked pair
    wt = w.t().contiguous()  # (out, in): the layout an inner product reads
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    flops = 2 * 64 * 784 * cols  # one of the two matmuls

    def onednn() -> object:
        return torch.ops.mkldnn._linear_pointwise(x, wt, None, "none", [], "")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; K = {args.k}: (64, 784) x (784, {cols})")
    print(f"{'round':>5} {'1024^3 GF/s':>12} {'pair GF/s':>10} {'ratio':>6} {'mm us':>7} {'oneDNN us':>10} "
          f"{'pair us':>8} {'x2 us':>6} {'x4 us':>6}")
    for r in range(1, args.rounds + 1):
        big = 2 * 1024**3 / best(lambda: torch.mm(a, b), 4)
        small = 2 * flops / best(steps(sequential, x, w, g), 200)  # the pair: one step on one batch
        mm, dnn = best(lambda: torch.mm(x, w), 200), best(onednn, 200)
        # Per step: the same four batches and gradients, taken one at a time, two at a time, four at a time.
        per = [best(steps(fn, xs[:64 * s], w, gs[:64 * s]), 50) / s
               for fn, s in ((sequential, 4), (blocked, 2), (blocked, 4))]
        print(f"{r:>5} {big / 1e9:>12.0f} {small / 1e9:>10.0f} {big / small:>6.2f} {mm * 1e6:>7.0f} {dnn * 1e6:>10.0f} "
              + " ".join(f"{v * 1e6:>{n}.0f}" for v, n in zip(per, (8, 6, 6), strict=True)))


if __name__ == "__main__":
    main()
