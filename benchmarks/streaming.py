"""Data loaded once against data read batch by batch (``data.stream``), ms per model-epoch with the floor, in one run.

    PYTHONPATH=. python benchmarks/streaming.py [--n 2048] [--k 8] [--rounds 3]

The built-in CNN (LeNet-5) trains one epoch on the first --n digits of the shipped sample (SGD lr 0.01,
batch 64, penalty ``l2``) from three sources of the same examples:

- ``loaded``: tensors on the device (what ``data.stream = "auto"`` does with a plain Dataset);
- ``streamed``: a ``stream.Streamed`` over a ``TensorDataset`` of them (``data.stream = "always"``);
- ``streamed + RandomAffine``: over ``examples/augmented.py``'s training Dataset, which shifts and turns
  each digit at random (what ``"auto"`` streams, so each epoch draws fresh augmentations).

Each is timed one at a time (``fit.fit``) and as a population of --k (``trainers.fit_population``: every member
consumes the same batch, read once per lane), and the read alone (one epoch's batches, no training). Each
round times every row once, one right after the other; the table keeps each row's best round. The floor is
one model-epoch's FLOPs over this machine's float32 matmul rate (``generic_speed``), as in network_speed.py.
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
from generic_speed import epoch_flops, matmul_rate  # benchmarks/ is the script's folder, on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ (the repository root)

from examples.augmented import mnist_augmented  # noqa: E402 - after the path set-up
from sweep.config import ModelConfig, TrainConfig  # noqa: E402
from sweep.training import data, stream, trainers  # noqa: E402
from sweep.training.fit import fit  # noqa: E402
from sweep.training.models import net_for  # noqa: E402


def sources(n: int) -> dict[str, torch.Tensor]:
    """The three sources of the first ``n`` digits, flat as the built-in CNN reads them."""
    part = data.load("mnist-sample").train
    x, _ = data.to_device(part, torch.device("cpu"))
    plain = torch.utils.data.TensorDataset(x[:n].reshape(n, 1, 28, 28), part.y[:n])
    cpu = torch.device("cpu")

    def streamed(ds: torch.utils.data.Dataset) -> torch.Tensor:
        view = stream.Streamed(ds, torch.arange(n), (1, 28, 28), cpu, "benchmark", "train")
        return view.reshape(n, -1)  # type: ignore[return-value]  # a Streamed stands for a tensor

    return {"loaded": x[:n].clone(), "streamed": streamed(plain),
            "streamed + RandomAffine": streamed(mnist_augmented(n)[0])}


def best_of(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def read_epoch(x: torch.Tensor, batch: int) -> None:
    for idx in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(batch):
        x[idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048, help="training digits per epoch (the sample's first N)")
    ap.add_argument("--k", type=int, default=8, help="population size")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = TrainConfig(epochs=1, device="cpu")
    net = net_for(ModelConfig(arch="cnn"), in_shape=(784,), classes=10)
    y = data.load("mnist-sample").train.y[:args.n]
    xs = sources(args.n)
    lams = [float(v) for v in np.geomspace(1e-5, 1e-2, args.k)]
    runs: dict[str, Callable[[], object]] = {}
    for name, x in xs.items():
        runs[f"{name}|read"] = lambda x=x: read_epoch(x, cfg.batch_size)
        runs[f"{name}|1"] = lambda x=x: fit(x, y, None, None, lam=1e-4, cfg=cfg, seed=0, net=net)
        runs[f"{name}|{args.k}"] = lambda x=x: trainers.fit_population(x, y, None, None, net=net, cfg=cfg, lams=lams,
                                                                       seeds=[0] * args.k)
    load_before = os.getloadavg()
    rate = matmul_rate(torch.device("cpu"), 5)
    best_of({k: v for k, v in runs.items() if k.startswith("loaded")}, 1)  # warm-up
    best = best_of(runs, args.rounds)
    rate = max(rate, matmul_rate(torch.device("cpu"), 5))
    floor = epoch_flops(net, xs["loaded"], y, cfg.batch_size) / rate
    load = os.getloadavg()
    print(f"cpu ({torch.get_num_threads()} threads); torch {torch.__version__}; built-in cnn (LeNet-5), mnist-sample "
          f"first {args.n:,} digits, batch {cfg.batch_size}; best of {args.rounds} rounds")
    print(f"load average before {load_before[0]:.2f}, after {load[0]:.2f}; matmul rate {rate / 1e9:.1f} GFLOP/s; "
          f"floor {floor * 1000:.1f} ms/model-epoch")
    print(f"{'source':<24} {'run':<15} {'ms/model-epoch':>15} {'vs loaded':>10} {'x floor':>8}")
    for name in xs:
        rows = (("read", "read alone", 1), ("1", "one at a time", 1), (str(args.k), f"population {args.k}", args.k))
        for kind, label, models in rows:
            sec = best[f"{name}|{kind}"] / models
            base = best[f"loaded|{kind}"] / models
            ratio = f"{sec / base:>9.2f}x" if name != "loaded" else f"{'':>10}"
            over = f"{sec / floor:>7.1f}x" if kind != "read" else f"{'':>8}"
            print(f"{name:<24} {label:<15} {sec * 1000:>15.1f} {ratio} {over}")


if __name__ == "__main__":
    main()
