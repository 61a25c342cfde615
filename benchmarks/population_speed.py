"""Seed loop vs single trainer vs population trainer, on the same full-size data, in one run.

    PYTHONPATH=. python benchmarks/population_speed.py --epochs 1 --device cpu --ks 1,8,32,64
    PYTHONPATH=. python benchmarks/population_speed.py --arch mlp --hidden 512,256 --n 10000 --ks 1,8,32

``--arch mlp`` or ``cnn`` (and ``simplenet`` with ``--generic``) times any network instead
(``benchmarks/generic_speed.py``): single training vs the torch.func population, with the floor.

``--recipes`` times the mlp (``--hidden 512,256``, first ``--n 10000`` images, training only) at
K = ``--k 32``: the hand-written population beside the torch.optim one (``functional``) for plain
SGD + l2, the torch.optim population for Adam + L2 + cosine + clip_grad_norm 1, one at a time for
both, and the floor (``generic_speed.epoch_flops`` over the best matmul rate measured before and
after the rows), each row the best of ``--rounds 5`` alternated timings, and the update alone
(``optimizers.Stepper`` on the stacks, its gradients given); it states whether the torch.optim population
is within 1.2x of the hand-written one:

    PYTHONPATH=. python benchmarks/population_speed.py --recipes --device cpu --data-dir /usr/share/datasets

All methods train SimpleNet 784-128-10 (SGD lr 0.01, batch 64, weight_decay = --lam) on the
60,000 Fashion-MNIST training images and are scored on the 10,000 test images:

- seed: the seed document's loop as written (torchvision dataset + ToTensor + DataLoader,
  optimizer.step per batch, loss.item() per batch), model and batches moved to --device;
- single: ``sweep.training.fit.fit`` (tensors on the device, hand-written SGD step);
- population K: ``sweep.training.population.fit_population`` with K lambdas (geometric over 1e-5..1e-2,
  member 0 at --lam), one shared seed as a study uses; "own seeds" gives each member its seed.
  Where a CPU population trains in lanes (``population.cpu_lanes``: threads of one core each), it is
  timed again right after as one population on all threads ("N lanes" and "1 lane" rows).

Times are wall seconds per model-epoch, training plus each method's per-epoch evaluation
(the seed loop tests on the test set; fit and the population also score the training set).
The accuracy column is the --lam model's test accuracy after --epochs epochs. "x floor" is
ms/model-epoch over the floor: a model-epoch's FLOPs (``study_speed.TRAIN_FLOPS`` per training
image, ``EVAL_FLOPS`` per scored test image) over the 1024^3 matmul rate measured before and
after the timings in this run (the higher of the two).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import generic_speed  # benchmarks/ is the script's folder, on sys.path
import numpy as np
import torch
from generic_speed import matmul_rate, sync
from seed_eval import seed_accuracy
from study_speed import EVAL_FLOPS, TRAIN_FLOPS
from torch import nn, optim
from torch.func import stack_module_state
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from sweep.config import ModelConfig, TrainConfig
from sweep.training import data, functional, optimizers, population
from sweep.training.fit import fit, resolve_device
from sweep.training.model import init_simplenet
from sweep.training.models import Net, net_for
from sweep.training.population import fit_population


def seed_loop(data_dir: str, device: torch.device, *, lam: float, epochs: int) -> tuple[float, float]:
    """The seed document's Steps 2-6 (FashionMNIST for MNIST), timed; returns (seconds/epoch, test acc)."""
    transform = transforms.ToTensor()
    train_dataset = datasets.FashionMNIST(root=data_dir, train=True, download=False, transform=transform)
    test_dataset = datasets.FashionMNIST(root=data_dir, train=False, transform=transform)
    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=64)
    model = init_simplenet(128, 0).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=lam)
    accuracy = 0.0
    start = time.perf_counter()
    for _epoch in range(1, epochs + 1):
        model.train()
        total_loss = 0.0
        for batch_data, target in train_loader:
            batch_data, target = batch_data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(batch_data)
            loss = criterion(output, target)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        accuracy = seed_accuracy(model, test_loader, device)
    return (time.perf_counter() - start) / epochs, accuracy


def recipe_speed(args: argparse.Namespace, rest: list[str]) -> None:
    """``--recipes``: the mlp at K members, training only, on the first --n images: the hand-written population
    (plain SGD + l2, constant rate), the torch.optim population (``functional``: one optimiser over the stacks)
    for that recipe and for Adam + L2 + cosine + clipping, one at a time (``fit``) for both, and the floor."""
    ap = argparse.ArgumentParser(prog="population_speed.py --recipes")
    ap.add_argument("--hidden", default="512,256")
    ap.add_argument("--n", type=int, default=10000, help="training images used (the first N of 60,000)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5, help="matmul timings per rate measurement")
    ap.add_argument("--rounds", type=int, default=5, help="timings of each row, alternated; the best is printed")
    more = ap.parse_args(rest)
    device = resolve_device(args.device)
    net = net_for(ModelConfig(arch="mlp", hidden=[int(h) for h in more.hidden.split(",")]), in_shape=(784,), classes=10)
    ds = data.load("fashion-mnist", args.data_dir)
    x, y = data.to_device(ds.train, device)
    x, y = x[:more.n], y[:more.n]
    sgd = TrainConfig(epochs=args.epochs, device=str(device))
    adam = sgd.model_copy(update={"optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "clip_grad_norm": 1.0})
    lams = [args.lam] + [float(v) for v in np.geomspace(1e-5, 1e-2, more.k - 1)]
    seeds = [0] * more.k
    runs = [  # (method, recipe, K, trainer)
        ("hand-written population", "sgd l2 constant", more.k, lambda: population.fit_population(
            x, y, None, None, lams=lams, seeds=seeds, cfg=sgd, net=net)),
        ("torch.optim population", "sgd l2 constant", more.k, lambda: functional.fit_population(
            x, y, None, None, lams=lams, seeds=seeds, cfg=sgd, net=net)),
        ("torch.optim population", "adam l2 cosine clip", more.k, lambda: functional.fit_population(
            x, y, None, None, lams=lams, seeds=seeds, cfg=adam, net=net)),
        ("one at a time (fit)", "sgd l2 constant", 1, lambda: fit(x, y, None, None, lam=args.lam, cfg=sgd, net=net)),
        ("one at a time (fit)", "adam l2 cosine clip", 1, lambda: fit(x, y, None, None, lam=args.lam, cfg=adam,
                                                                      net=net)),
    ]
    for cfg in (sgd, adam):  # first-call set-up (autograd, vmap, the thread pool) outside the timings
        functional.fit_population(x[:256], y[:256], None, None, lams=lams[:2], seeds=seeds[:2], cfg=cfg, net=net)
    population.fit_population(x[:256], y[:256], None, None, lams=lams[:2], seeds=seeds[:2], cfg=sgd, net=net)
    rates = [matmul_rate(device, more.reps)]
    best = [float("inf")] * len(runs)
    for _ in range(more.rounds):  # rows alternated, the best of the rounds kept: a shared machine's noise is one-sided
        for i, (_, _, k, train) in enumerate(runs):
            sync(device)
            start = time.perf_counter()
            train()
            sync(device)
            best[i] = min(best[i], (time.perf_counter() - start) / (k * args.epochs))
    rows = [(method, recipe, k, sec) for (method, recipe, k, _), sec in zip(runs, best, strict=True)]
    update = update_cost(net, sgd, more.k, -(-len(y) // sgd.batch_size), device)
    rates.append(matmul_rate(device, more.reps))
    flops = generic_speed.epoch_flops(net, x, y, sgd.batch_size)
    floor = flops / max(rates)
    load = os.getloadavg()
    print(f"mlp {list(net.hidden)}; device {device} ({torch.get_num_threads()} threads); fashion-mnist first "
          f"{len(y):,} train images, training only; epochs {args.epochs}; batch {sgd.batch_size}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"matmul rate {max(rates) / 1e9:.1f} GFLOP/s (best of {len(rates)}); model-epoch {flops / 1e9:.2f} GFLOP; "
          f"floor {floor * 1000:.1f} ms/model-epoch")
    hand = rows[0][3]
    print(f"best of {more.rounds} alternated rounds per row")
    print(f"{'method':<26} {'recipe':<21} {'K':>4} {'ms/model-epoch':>15} {'vs hand':>8} {'x floor':>8}")
    for method, recipe, k, sec in rows:
        print(f"{method:<26} {recipe:<21} {k:>4} {sec * 1000:>15.1f} {sec / hand:>7.2f}x {sec / floor:>7.2f}x")
    print(f"of which the torch.optim update alone (per-member g += lambda*w, SGD step; the hand-written step folds "
          f"both into its gradient matmul): {update * 1000:.1f} ms/model-epoch ({update / hand:.2f}x hand)")
    ratio = rows[1][3] / hand
    print(f"target: the torch.optim population within 1.2x of the hand-written one (same recipe, K = {more.k}): "
          f"{ratio:.2f}x, {'met' if ratio <= 1.2 else 'not met'}")


def update_cost(net: Net, cfg: TrainConfig, k: int, steps: int, device: torch.device) -> float:
    """Seconds per model-epoch of ``steps`` updates (``optimizers.Stepper``: coupled l2, then ``torch.optim``'s step)
    of K stacked members of ``net``, their gradients given: what the torch.optim population adds to its gradients."""
    params, _ = stack_module_state([net.build(0).to(device) for _ in range(k)])
    stacks = [p.detach() for p in params.values()]
    for p in stacks:
        p.grad = torch.full_like(p, 1e-4)
    lam = torch.full((k,), 1e-4, dtype=torch.float64, device=device)
    stepper = optimizers.Stepper(stacks, [True] * len(stacks), cfg, lam, steps_per_epoch=steps)
    stepper.step()  # first-call set-up outside the timing
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    sync(device)
    return (time.perf_counter() - start) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data", help="where fashion-mnist is (or is unpacked to)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--ks", default=None, help="population sizes, e.g. 1,8,32,64 (default: that on CPU, up to 2048 on CUDA)")
    ap.add_argument("--own-seeds-k", type=int, default=32, help="also time this K with one seed per member (0: skip)")
    ap.add_argument("--skip-seed", action="store_true", help="leave out the (slow) seed loop")
    ap.add_argument("--arch", choices=["simplenet", "mlp", "cnn"], default="simplenet")
    ap.add_argument("--generic", action="store_true", help="with --arch simplenet: the any-network table instead")
    ap.add_argument("--recipes", action="store_true",
                    help="the mlp at K = 32: hand-written vs torch.optim populations (--hidden, --n, --k)")
    args, rest = ap.parse_known_args()
    if args.recipes:
        recipe_speed(args, rest)
        return
    if args.arch != "simplenet" or args.generic:
        generic_speed.main()
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    device = resolve_device(args.device)
    ks = [int(k) for k in args.ks.split(",")] if args.ks else ([1, 8, 32, 64] if device.type == "cpu"
                                                                  else [1, 64, 256, 1024, 2048])
    ds = data.load("fashion-mnist", args.data_dir)  # also unpacks the IDX files where torchvision looks
    x, y = data.to_device(ds.train, device)
    x_test, y_test = data.to_device(ds.test, device)
    cfg = TrainConfig(epochs=args.epochs, device=str(device))
    rows: list[tuple[str, int, float, float]] = []  # method, K, seconds per model-epoch, accuracy
    rate = matmul_rate(device, 10)

    if not args.skip_seed:
        sec, acc = seed_loop(str(Path(args.data_dir)), device, lam=args.lam, epochs=args.epochs)
        rows.append(("seed loop (DataLoader)", 1, sec, acc))

    sync(device)
    start = time.perf_counter()
    single = fit(x, y, x_test, y_test, lam=args.lam, cfg=cfg, seed=0)
    sync(device)
    rows.append(("single (train.fit)", 1, (time.perf_counter() - start) / args.epochs, single.final.val_acc))

    if device.type == "cuda":  # first-call set-up (cuBLAS handles, kernels) outside the timings
        fit_population(x[:4096], y[:4096], x_test, y_test, lams=[args.lam] * 8, seeds=[0] * 8, cfg=cfg)
    runs = [(k, False) for k in ks] + ([(args.own_seeds_k, True)] if args.own_seeds_k else [])
    for k, own in runs:
        lams = [args.lam] + [float(v) for v in np.geomspace(1e-5, 1e-2, k - 1)] if k > 1 else [args.lam]
        seeds = list(range(k)) if own else [0] * k
        # Where the population trains in CPU lanes (population.cpu_lanes), also time it without, right after.
        lanes = population.cpu_lanes([population.Member(lam, seed) for lam, seed in zip(lams, seeds, strict=True)], device)
        for lane_members in [population.CPU_LANE_MEMBERS] + ([0] if lanes > 1 else []):
            saved, population.CPU_LANE_MEMBERS = population.CPU_LANE_MEMBERS, lane_members
            try:
                sync(device)
                start = time.perf_counter()
                members = fit_population(x, y, x_test, y_test, lams=lams, seeds=seeds, cfg=cfg)
                sync(device)
            finally:
                population.CPU_LANE_MEMBERS = saved
            label = f"population{' (own seeds)' if own else ''}"
            if lanes > 1:
                label += f" {lanes} lanes" if lane_members else " 1 lane"
            rows.append((label, k, (time.perf_counter() - start) / (k * args.epochs), members[0].history[-1].val_acc))

    rate = max(rate, matmul_rate(device, 10))
    floor = (len(y) * TRAIN_FLOPS + len(y_test) * EVAL_FLOPS) / rate
    base = rows[0][2] if not args.skip_seed else None
    print(f"device: {device} ({torch.get_num_threads()} CPU threads); fashion-mnist 60,000 train / 10,000 test; "
          f"epochs {args.epochs}; lambda {args.lam:g}")
    print(f"matmul rate {rate / 1e9:.1f} GFLOP/s; floor {floor * 1000:.1f} ms/model-epoch")
    print(f"{'method':<28} {'K':>5} {'ms/model-epoch':>15} {'vs seed':>9} {'x floor':>8} {'test acc':>9}")
    for method, k, sec, acc in rows:
        ratio = f"{base / sec:8.1f}x" if base else "       -"
        print(f"{method:<28} {k:>5} {sec * 1000:>15.1f} {ratio:>9} {sec / floor:>7.2f}x {acc:>9.4f}")


if __name__ == "__main__":
    main()
