"""Any network: single training vs the torch.func population at several K, with the floor, in one run.

    PYTHONPATH=. python benchmarks/population_speed.py --arch mlp --hidden 512,256 --n 10000 --ks 1,8,32
    PYTHONPATH=. python benchmarks/population_speed.py --arch cnn --n 10000 --ks 1,8,32
    PYTHONPATH=. python benchmarks/population_speed.py --arch simplenet --generic --n 10000 --ks 1,8,32

All rows train the same network (SGD lr 0.01, batch 64, weight_decay = --lam, one shared seed
as a study uses) on the first --n Fashion-MNIST training images, training only (no evaluation):

- single: ``sweep.training.fit.fit`` for one lambda (autograd + torch.optim; SimpleNet's hand-written step);
- torch.func K: ``sweep.training.functional.fit_population`` with K lambdas;
- SimpleNet and the mlp also get the hand-written population (``sweep.training.population``) at the same K:
  what a study trains them with (penalty ``l2``, plain SGD); the torch.func row is what any other network gets.

ms/model-epoch is wall time per model per epoch. The floor is one model-epoch's FLOPs (counted by
``torch.utils.flop_counter.FlopCounterMode`` on one training step, times the steps per epoch)
divided by this machine's matmul rate (the median of --reps float32 matmuls of 1024x1024, timed
in the same run). A warm-up on 256 images runs first, outside the timings. "x floor" is
ms/model-epoch over the floor; "vs single" is single's time over the row's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sweep.config import ModelConfig, TrainConfig
from sweep.training import data, functional, population
from sweep.training.fit import fit, resolve_device
from sweep.training.models import Net, net_for


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, reps: int) -> float:
    """FLOP/s of float32 1024x1024 matmuls on ``device``: the median of ``reps`` timings."""
    a, b = torch.rand(1024, 1024, device=device), torch.rand(1024, 1024, device=device)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        times.append((time.perf_counter() - start) / 4)
    return 2 * 1024**3 / statistics.median(times)


def epoch_flops(net: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    """FLOPs of one training epoch of one model: one step's forward + backward, times the steps."""
    model = net.build(0).to(x.device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x[:batch_size]), y[:batch_size]).backward()
    return counter.get_total_flops() * (len(y) // batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["simplenet", "mlp", "cnn"], default="mlp")
    ap.add_argument("--generic", action="store_true")
    ap.add_argument("--hidden", default="512,256", help="mlp widths (simplenet: the first one)")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n", type=int, default=10000, help="training images used (the first N of 60,000)")
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--ks", default="1,8,32")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    device = resolve_device(args.device)
    widths = [int(h) for h in args.hidden.split(",")]
    model_cfg = ModelConfig(arch=args.arch, hidden=widths if args.arch == "mlp" else widths[0]) \
        if args.arch != "cnn" else ModelConfig(arch="cnn")
    net = net_for(model_cfg, in_shape=(784,), classes=10)
    ds = data.load("fashion-mnist", args.data_dir)
    x, y = data.to_device(ds.train, device)
    x, y = x[:args.n], y[:args.n]
    cfg = TrainConfig(epochs=args.epochs, device=str(device))
    ks = [int(k) for k in args.ks.split(",")]

    rate = matmul_rate(device, args.reps)
    floor = epoch_flops(net, x, y, cfg.batch_size) / rate
    rows: list[tuple[str, int, float]] = []
    # Warm-up outside the timings (first-call set-up of autograd, vmap and the thread pool).
    fit(x[:256], y[:256], None, None, lam=args.lam, cfg=cfg, seed=0, net=net)
    functional.fit_population(x[:256], y[:256], None, None, lams=[args.lam] * 2, seeds=[0] * 2, cfg=cfg, net=net)
    if population.supports(net, cfg):
        population.fit_population(x[:256], y[:256], None, None, lams=[args.lam] * 2, seeds=[0] * 2, cfg=cfg, net=net)
    sync(device)
    start = time.perf_counter()
    fit(x, y, None, None, lam=args.lam, cfg=cfg, seed=0, net=net)
    sync(device)
    rows.append(("single (fit)", 1, (time.perf_counter() - start) / args.epochs))
    for k in ks:
        lams = [args.lam] + [float(v) for v in np.geomspace(1e-5, 1e-2, k - 1)] if k > 1 else [args.lam]
        trainers = [("torch.func population", lambda lams=lams, k=k: functional.fit_population(
            x, y, None, None, lams=lams, seeds=[0] * k, cfg=cfg, net=net))]
        if population.supports(net, cfg):
            trainers.append(("hand-written population", lambda lams=lams, k=k: population.fit_population(
                x, y, None, None, lams=lams, seeds=[0] * k, cfg=cfg, net=net)))
        for label, train in trainers:
            sync(device)
            start = time.perf_counter()
            train()
            sync(device)
            rows.append((label, k, (time.perf_counter() - start) / (k * args.epochs)))

    load = os.getloadavg()
    print(f"arch {args.arch}{' ' + str(list(net.hidden)) if args.arch != 'cnn' else ''}; device {device} "
          f"({torch.get_num_threads()} threads); fashion-mnist first {len(y):,} train images; epochs {args.epochs}; "
          f"batch {cfg.batch_size}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"matmul rate {rate / 1e9:.1f} GFLOP/s; model-epoch {epoch_flops(net, x, y, cfg.batch_size) / 1e9:.2f} GFLOP; "
          f"floor {floor * 1000:.1f} ms/model-epoch")
    single = rows[0][2]
    print(f"{'method':<26} {'K':>4} {'ms/model-epoch':>15} {'vs single':>10} {'x floor':>8}")
    for method, k, sec in rows:
        print(f"{method:<26} {k:>4} {sec * 1000:>15.1f} {single / sec:>9.2f}x {sec / floor:>7.2f}x")


if __name__ == "__main__":
    main()
