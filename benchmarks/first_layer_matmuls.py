"""The quick start's first-layer matmuls against the 1024^3 matmul that sets the floor, in one run.

    PYTHONPATH=. python benchmarks/first_layer_matmuls.py [--k 5] [--rounds 5]

At K = 5 members of SimpleNet 784-128-10 and a batch of 64, each population step does two big
matmuls: the forward (64, 784) x (784, 640) (``torch.mm``) and the weight gradient accumulated into
the weights (``w.addmm_(x.t(), g)``). Each round times, alternated: the 1024^3 matmul (best of 4),
that pair (best of 5 x 200, the same batch and weights each time, so in cache), and the forward
through oneDNN's fp32 inner product (``torch.ops.mkldnn._linear_pointwise``, a private op that
inductor uses) beside ``torch.mm``. Prints GFLOP/s and the 1024^3 rate over the pair's: how far
these shapes alone sit above the floor.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=5, help="members (the quick start's population: 5)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    cols = 128 * args.k
    x, w, g = torch.rand(64, 784), torch.rand(784, cols), torch.rand(64, cols) * 1e-3
    wt = w.t().contiguous()  # (out, in): the layout an inner product reads
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    flops = 2 * 64 * 784 * cols  # one of the two matmuls

    def pair() -> None:
        torch.mm(x, w)
        w.addmm_(x.t(), g, alpha=-1e-3)

    def onednn() -> object:
        return torch.ops.mkldnn._linear_pointwise(x, wt, None, "none", [], "")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; K = {args.k}: (64, 784) x (784, {cols})")
    print(f"{'round':>5} {'1024^3 GF/s':>12} {'pair GF/s':>10} {'ratio':>6} {'mm us':>7} {'oneDNN us':>10}")
    for r in range(1, args.rounds + 1):
        big = 2 * 1024**3 / best(lambda: torch.mm(a, b), 4)
        small = 2 * flops / best(pair, 200)
        mm, dnn = best(lambda: torch.mm(x, w), 200), best(onednn, 200)
        print(f"{r:>5} {big / 1e9:>12.0f} {small / 1e9:>10.0f} {big / small:>6.2f} {mm * 1e6:>7.0f} {dnn * 1e6:>10.0f}")


if __name__ == "__main__":
    main()
