"""Where a CPU population of a convolutional network spends its time, op by op, against one at a time.

    PYTHONPATH=. python benchmarks/conv_population_profile.py [--net lenet5-bn-dropout|lenet5] [--k 16] [--threads 1]

Profiles (``torch.profiler``, self CPU time) one epoch of --n images of the torch.func population of K
(``functional.fit_population``) and --singles epochs of one at a time (``fit.fit``), after a warm-up,
and prints each op's milliseconds per model-epoch in both, largest first, and the totals. With
``--threads 1`` the figures are the work each op does, free of the thread pool's waiting.
"""

from __future__ import annotations

import argparse

import torch
from conv_population_forms import NETS  # benchmarks/ is the script's folder, on sys.path
from torch.profiler import profile

from sweep.config import TrainConfig
from sweep.training import data, functional
from sweep.training.fit import fit
from sweep.training.models import net_for


def per_op(prof: profile, models: int) -> dict[str, float]:
    """Self CPU milliseconds per model by op name."""
    return {e.key: e.self_cpu_time_total / 1e3 / models for e in prof.key_averages()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=list(NETS), default="lenet5-bn-dropout")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n", type=int, default=640)
    ap.add_argument("--singles", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=1, device="cpu")
    x, y = data.to_device(data.load("mnist-sample").train, torch.device("cpu"))
    net = net_for(NETS[args.net], in_shape=(1, 28, 28), classes=10)
    x, y = x[:args.n].reshape(args.n, 1, 28, 28) if net.factory is not None else x[:args.n].reshape(args.n, -1), y[:args.n]
    lams = [1e-4] * args.k

    def population() -> None:
        functional.fit_population(x, y, None, None, lams=lams, seeds=[0] * args.k, cfg=cfg, net=net)

    def single() -> None:
        fit(x, y, None, None, lam=1e-4, cfg=cfg, net=net)

    population(), single()  # warm-up
    with profile() as prof_pop:
        population()
    with profile() as prof_one:
        for _ in range(args.singles):
            single()
    pop, one = per_op(prof_pop, args.k), per_op(prof_one, args.singles)
    print(f"{args.net}, K = {args.k}, {args.n} images, {torch.get_num_threads()} thread(s); self CPU ms per model-epoch")
    print(f"{'op':<42} {'population':>11} {'one':>8}")
    for op in sorted(set(pop) | set(one), key=lambda o: -(pop.get(o, 0) + one.get(o, 0)))[:args.rows]:
        print(f"{op:<42} {pop.get(op, 0):>11.1f} {one.get(op, 0):>8.1f}")
    print(f"{'total':<42} {sum(pop.values()):>11.1f} {sum(one.values()):>8.1f}")


if __name__ == "__main__":
    main()
