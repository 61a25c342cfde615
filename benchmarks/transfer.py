"""Tune small, train big: does a lambda tuned on 10% of Fashion-MNIST, carried over by a rule, land near the
full-size optimum? One run prints the whole table (docs/transfer.md holds the full run's output).

    PYTHONPATH=. python benchmarks/transfer.py            # the run recorded in docs/transfer.md
    PYTHONPATH=. python benchmarks/transfer.py --quick    # a tiny version (3,000 examples), < 1 min; a test runs it

Every network is SimpleNet (784-hidden-10) trained with SGD (``--lr``, ``--batch-size``, ``--epochs``) and
``weight_decay = lambda``, populations throughout (``sweep.training.population``), on the CPU:

1. reference curves: test accuracy against ``--grid`` lambdas log-spaced over 1e-5..1e-2, ``--ref-seeds`` training
   seeds each, trained on the whole training set ("full") and on the ``--fraction`` subset ("small", stratified,
   ``data.subset``); and at the small size, one curve with the batch size times ``--batch-factor`` and one with the
   learning rate times ``--lr-factor``;
2. studies (``sweep.workers.run.run``: TPE, ``--trials`` trials in populations of ``--batch``, holdout 1/6, rule
   min) at the small size, one per search seed (``--replicates``), and one at the full size;
3. each small study's lambda carried to the full size (and to the changed batch size and learning rate) by each
   rule of ``sweep.selection.transfer``; its gap = the reference curve's best mean test accuracy minus the curve at
   the carried lambda (linear in log10 lambda between grid points; a lambda outside the grid reads the end point
   and is flagged), in points of accuracy; the full-size study's own lambda gets the same gap.

The reference optimum is the best of a few noisy means, so it sits a little above the curve's true top: every
gap, the full-size study's included, carries that bias. Wall times are of this shared machine (its load average
is printed): compare them only within one run. "floor" is each figure's FLOPs over the 1024^3 matmul rate
measured before and after the run (the higher).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import optuna
import torch
from generic_speed import matmul_rate  # benchmarks/ is the script's folder, on sys.path

from sweep import config
from sweep.selection import best_record
from sweep.selection.transfer import REGISTRY, Run, transfer
from sweep.training import data
from sweep.training.fit import evaluate
from sweep.training.population import fit_population
from sweep.workers.run import run as run_study

LAMBDA_LOW, LAMBDA_HIGH = 1e-5, 1e-2


@dataclass(frozen=True)
class Setup:
    full: int | None  # examples of the full size (None: the whole training set)
    fraction: float
    hidden: int
    lr: float
    batch_size: int
    epochs: int
    grid: int
    ref_seeds: int
    trials: int
    batch: int
    replicates: int
    batch_factor: int
    lr_factor: float


def flops(n_fit: int, n_scored: int, hidden: int) -> float:
    """Training FLOPs per fit example (forward + backward, no input gradient) and forward FLOPs per scored one."""
    train = 2 * 2 * 784 * hidden + 3 * 2 * hidden * 10
    return n_fit * train + n_scored * 2 * (784 * hidden + hidden * 10)


def curve(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, s: Setup, run: Run,
          grid: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Mean test accuracy per grid lambda over ``s.ref_seeds`` seeds (one population), its wall seconds and FLOPs."""
    lams = [float(lam) for lam in grid for _ in range(s.ref_seeds)]
    seeds = [k for _ in grid for k in range(s.ref_seeds)]
    cfg = config.TrainConfig(lr=run.lr, batch_size=run.batch_size, epochs=run.epochs, device="cpu")
    start = time.perf_counter()
    results = fit_population(x, y, None, None, lams=lams, seeds=seeds, cfg=cfg, hidden=s.hidden, return_models=True)
    accs = [evaluate(r.model, xt, yt)[1] if r.state == "complete" else math.nan for r in results]
    seconds = time.perf_counter() - start
    work = len(lams) * (run.epochs * flops(len(y), 0, s.hidden) + flops(0, len(yt), s.hidden))
    return np.asarray(accs).reshape(len(grid), s.ref_seeds).mean(axis=1), seconds, work


def read_curve(grid: np.ndarray, acc: np.ndarray, lam: float) -> tuple[float, bool]:
    """The curve at ``lam`` (linear in log10 lambda), and whether ``lam`` lies outside the grid."""
    outside = not grid[0] <= lam <= grid[-1]
    return float(np.interp(math.log10(lam), np.log10(grid), acc)), outside


def study(s: Setup, subset: float | None, seed: int, folder: str) -> tuple[float, float, float]:
    """One sweep study (its lambda, wall seconds, FLOPs of its trials) at ``subset`` with search seed ``seed``."""
    name = f"transfer-{subset}-{seed}"
    raw = {"name": name, "data": {"dataset": "fashion-mnist", "subset": subset},
           "model": {"hidden": s.hidden},
           "train": {"lr": s.lr, "batch_size": s.batch_size, "epochs": s.epochs, "device": "cpu"},
           "search": {"sampler": "tpe", "n_trials": s.trials, "batch": s.batch, "pruner": "none", "seed": seed}}
    cfg = config.validate(raw, source="benchmarks/transfer.py")
    url = f"sqlite:///{folder}/{name}.db"
    start = time.perf_counter()
    run_study(cfg, url, refit_after=False)
    seconds = time.perf_counter() - start
    n = int(subset) if subset is not None else 60000
    n_val = round(n / 6)  # the default holdout, 1/6; each epoch scores it
    return best_record(name, storage=url).lam, seconds, s.trials * s.epochs * flops(n - n_val, n_val, s.hidden)


def measure(s: Setup) -> dict:
    """Every figure of the table, measured in this process."""
    load_start = os.getloadavg()
    rate = [matmul_rate(torch.device("cpu"), 20)]
    ds = data.load("fashion-mnist")
    x_all, y_all = data.to_device(ds.train, torch.device("cpu"))
    xt, yt = data.to_device(ds.test, torch.device("cpu"))
    n_full = s.full or len(y_all)
    n_small = round(s.fraction * n_full)
    full_i = data.subset_indices(ds.train.y, s.full, 0) if s.full else torch.arange(n_full)
    small_i = data.subset_indices(ds.train.y, n_small, 0)  # the examples the small studies see (split_seed 0)
    grid = np.geomspace(LAMBDA_LOW, LAMBDA_HIGH, s.grid)
    src = Run(n_small, s.epochs, s.batch_size, s.lr)
    targets = {"full size": Run(n_full, s.epochs, s.batch_size, s.lr),
               f"batch size x{s.batch_factor}": Run(n_small, s.epochs, s.batch_size * s.batch_factor, s.lr),
               f"lr x{s.lr_factor:g}": Run(n_small, s.epochs, s.batch_size, s.lr * s.lr_factor)}
    curves: dict[str, dict] = {}
    for label, run in {"small": src, **targets}.items():
        idx = full_i if label == "full size" else small_i
        acc, seconds, work = curve(x_all[idx], y_all[idx], xt, yt, s, run, grid)
        curves[label] = {"acc": acc.tolist(), "seconds": seconds, "flops": work}
    with tempfile.TemporaryDirectory(prefix="sweep-transfer-") as folder:
        small = [study(s, n_small, seed, folder) for seed in range(s.replicates)]
        whole = study(s, s.full, 0, folder)
    rate.append(matmul_rate(torch.device("cpu"), 20))
    rows = []
    for label, dst in targets.items():
        acc = np.asarray(curves[label]["acc"])
        best = float(acc.max())
        if label == "full size":
            got, outside = read_curve(grid, acc, whole[0])
            rows.append({"target": label, "approach": "full-size study", "lambdas": [whole[0]],
                         "gaps": [100 * (best - got)], "outside": [outside], "seconds": whole[1], "flops": whole[2]})
        for rule in REGISTRY:
            lams = [transfer(lam, src, dst)[rule] for lam, _, _ in small]
            read = [read_curve(grid, acc, lam) for lam in lams]
            rows.append({"target": label, "approach": f"small study + {rule}", "lambdas": lams,
                         "gaps": [100 * (best - got) for got, _ in read], "outside": [o for _, o in read],
                         "seconds": float(np.mean([t for _, t, _ in small])), "flops": small[0][2]})
    return {"setup": s.__dict__, "n_full": n_full, "n_small": n_small, "grid": grid.tolist(), "curves": curves,
            "rows": rows, "matmul_gflops": max(rate) / 1e9, "matmul_gflops_measured": [r / 1e9 for r in rate],
            "load_start": load_start, "load_end": os.getloadavg(),
            "default": recommend([r for r in rows if r["target"] == "full size"])}


def recommend(rows: list[dict]) -> str:
    """The rule with the smallest mean gap at the full size; reuse unless a rule beats it by more than 0.05 points."""
    gaps = {r["approach"].split(" + ")[1]: float(np.mean(r["gaps"])) for r in rows if " + " in r["approach"]}
    best = min(gaps, key=gaps.get)
    return best if gaps[best] < gaps["reuse"] - 0.05 else "reuse"


def print_table(t: dict) -> None:
    s, rate = t["setup"], t["matmul_gflops"] * 1e9
    print(f"SimpleNet 784-{s['hidden']}-10, SGD lr {s['lr']}, batch {s['batch_size']}, {s['epochs']} epochs; "
          f"Fashion-MNIST full size {t['n_full']}, small {t['n_small']} (stratified data.subset); CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"load average at start {' '.join(f'{v:.2f}' for v in t['load_start'])}, at end "
          f"{' '.join(f'{v:.2f}' for v in t['load_end'])}; matmul rate {t['matmul_gflops']:.1f} GFLOP/s "
          f"(measured {', '.join(f'{v:.1f}' for v in t['matmul_gflops_measured'])})")
    labels = list(t["curves"])
    print(f"\nreference curves: test accuracy, mean of {s['ref_seeds']} seed(s)\n{'lambda':>9} " +
          " ".join(f"{lab:>16}" for lab in labels))
    for i, lam in enumerate(t["grid"]):
        print(f"{lam:9.2e} " + " ".join(f"{t['curves'][lab]['acc'][i]:16.4f}" for lab in labels))
    print(f"{'best at':>9} " + " ".join(f"{t['grid'][int(np.argmax(t['curves'][lab]['acc']))]:16.2e}" for lab in labels))
    print(f"{'wall s':>9} " + " ".join(f"{t['curves'][lab]['seconds']:16.1f}" for lab in labels))
    print(f"{'floor s':>9} " + " ".join(f"{t['curves'][lab]['flops'] / rate:16.1f}" for lab in labels))
    whole = next(r for r in t["rows"] if r["approach"] == "full-size study")
    print(f"\n{'target run':18} {'approach':26} {'mean gap':>8} {'gaps (points)':24} {'wall s':>7} {'floor s':>7} "
          f"{'wall/full':>9}  lambdas")
    for r in t["rows"]:
        gaps = " ".join(f"{g:.2f}{'*' if o else ''}" for g, o in zip(r["gaps"], r["outside"], strict=True))
        print(f"{r['target']:18} {r['approach']:26} {np.mean(r['gaps']):8.2f} {gaps:24} {r['seconds']:7.1f} "
              f"{r['flops'] / rate:7.1f} {r['seconds'] / whole['seconds']:9.2f}  "
              + " ".join(f"{lam:.2e}" for lam in r["lambdas"]))
    print("(* the lambda lies outside the grid: the curve's end point is read)")
    print(f"\ndefault rule from this table (smallest mean gap at the full size, reuse unless beaten by > 0.05 points): "
          f"{t['default']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3,000 examples, 2 epochs, a few lambdas: a test of the script")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--ref-seeds", type=int, default=2)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--batch-factor", type=int, default=4)
    ap.add_argument("--lr-factor", type=float, default=0.5)
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    a = ap.parse_args()
    s = Setup(None, a.fraction, a.hidden, a.lr, a.batch_size, a.epochs, a.grid, a.ref_seeds, a.trials, a.batch,
              a.replicates, a.batch_factor, a.lr_factor)
    if a.quick:
        s = replace(s, full=3000, hidden=16, epochs=2, grid=4, ref_seeds=1, trials=4, batch=4, replicates=2)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the table only
    table = measure(s)
    print_table(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
