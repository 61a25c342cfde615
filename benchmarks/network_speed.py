"""Every network kind: one at a time against populations of K, ms per model-epoch with the floor, in one run.

    PYTHONPATH=. python benchmarks/network_speed.py [--ks 8,16,32] [--n 640] [--rounds 2] [--nets mlp,lenet5,...]

Networks (docs/models.md, "Network kinds"): the built-in ``mlp`` [512, 256] and ``cnn`` (LeNet-5), and
``examples/networks.py``'s LeNet-5 with BatchNorm2d and Dropout, GRU and Transformer encoder. Each trains
on the first --n images of the shipped MNIST sample (SGD lr 0.01, batch 64, penalty ``l2``, one shared seed
as a study uses), training only:

- one at a time: ``fit.fit`` for one lambda (what ``search.batch = 1`` runs per trial);
- population K: ``trainers.fit_population`` with K lambdas, the trainer a study picks for the network
  (hand-written for the mlp, torch.func for the CNNs and the Transformer, member by member for the GRU).

The machine may be shared: each round times every row once, one right after the other, and the table
keeps each row's best round, so the ratios compare rows measured under the same load. A warm-up (two
steps of each trainer) runs first. The load average is printed before and after.

ms/model-epoch is wall time per model per epoch of --n images. The floor is one model-epoch's FLOPs
(``generic_speed.epoch_flops``: ``FlopCounterMode`` on one training step, times the steps) over this
machine's float32 matmul rate (``generic_speed.matmul_rate``, 1024^3, the higher of before and after).
"x floor" is ms/model-epoch over the floor; "vs one" is one at a time's time over the row's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from generic_speed import epoch_flops, matmul_rate, sync  # benchmarks/ is the script's folder, on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ (the repository root) for the factories

from sweep.config import ModelConfig, TrainConfig  # noqa: E402 - after the path set-up
from sweep.training import data, trainers  # noqa: E402
from sweep.training.fit import fit, resolve_device  # noqa: E402
from sweep.training.models import Net, net_for  # noqa: E402

NETWORKS = {  # name: (model section, examples as the network reads them: flat for built-ins, 1x28x28 for factories)
    "mlp": ModelConfig(arch="mlp", hidden=[512, 256]),
    "lenet5": ModelConfig(arch="cnn"),
    "lenet5-bn-dropout": ModelConfig(factory="examples.networks:cnn_bn_dropout"),
    "gru": ModelConfig(factory="examples.networks:gru"),
    "transformer": ModelConfig(factory="examples.networks:transformer"),
}


def trainer_name(net: Net, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor) -> str:
    """Which population trainer a study uses for ``net`` (``trainers`` module docstring)."""
    if trainers.uses_mlp_fast_path(net, cfg):
        return "hand-written"
    return "member by member" if trainers.check(net, x[:4], y[:4], cfg).no_vmap else "torch.func"


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(net: Net, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, ks: list[int], rounds: int,
            device: torch.device) -> dict[int, float]:
    """Best seconds per model-epoch over ``rounds`` for one at a time (key 1) and each population size."""
    lams = {k: [float(v) for v in np.geomspace(1e-5, 1e-2, k)] for k in ks}
    runs: dict[int, Callable[[], object]] = {1: lambda: fit(x, y, None, None, lam=1e-4, cfg=cfg, seed=0, net=net)}
    for k in ks:
        runs[k] = lambda k=k: trainers.fit_population(x, y, None, None, net=net, cfg=cfg, lams=lams[k], seeds=[0] * k)
    warm = cfg.model_copy(update={"epochs": 1})
    fit(x[:128], y[:128], None, None, lam=1e-4, cfg=warm, seed=0, net=net)
    trainers.fit_population(x[:128], y[:128], None, None, net=net, cfg=warm, lams=lams[ks[0]], seeds=[0] * ks[0])
    best = {k: float("inf") for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            best[k] = min(best[k], timed(run, device) / (k * cfg.epochs))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default=",".join(NETWORKS), help=f"any of {', '.join(NETWORKS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=640, help="training images per epoch (the sample's first N; 64 per step)")
    ap.add_argument("--ks", default="8,16,32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="matmul timings for the rate")
    args = ap.parse_args()
    names = args.nets.split(",")
    if unknown := [n for n in names if n not in NETWORKS]:
        ap.error(f"--nets: unknown {unknown}; expected any of {list(NETWORKS)}")
    device = resolve_device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    cfg = TrainConfig(epochs=1, device=str(device))
    sample = data.load("mnist-sample")
    x_all, y = data.to_device(sample.train, device)
    x_all, y = x_all[:args.n], y[:args.n]
    load_before = os.getloadavg()
    rate = matmul_rate(device, args.reps)
    rows = []
    for name in names:
        net = net_for(NETWORKS[name], in_shape=tuple(x_all.shape[1:]), classes=10)
        x = x_all.reshape(len(y), -1) if net.factory is None else x_all.reshape(len(y), 1, 28, 28)
        trainer = trainer_name(net, cfg, x, y)
        rows.append((name, trainer, epoch_flops(net, x, y, cfg.batch_size), measure(net, x, y, cfg, ks, args.rounds, device)))
    rate = max(rate, matmul_rate(device, args.reps))
    load = os.getloadavg()
    print(f"device {device} ({torch.get_num_threads()} threads, {os.cpu_count()} CPUs); torch {torch.__version__}; "
          f"mnist-sample first {len(y):,} images per epoch; batch {cfg.batch_size}; best of {args.rounds} rounds")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; matmul rate {rate / 1e9:.1f} GFLOP/s")
    print(f"{'network':<18} {'population trainer':<18} {'K':>3} {'ms/model-epoch':>15} {'vs one':>7} "
          f"{'floor ms':>9} {'x floor':>8}")
    for name, trainer, flops, best in rows:
        floor = flops / rate
        for k, sec in best.items():
            print(f"{name:<18} {'one at a time' if k == 1 else trainer:<18} {k:>3} {sec * 1000:>15.1f} "
                  f"{best[1] / sec:>6.2f}x {floor * 1000:>9.2f} {sec / floor:>7.1f}x")


if __name__ == "__main__":
    main()
