"""Seconds per epoch: the seed document's training loop against lambda-sweep's trainer, in one run.

Both train SimpleNet 784-128-10 with SGD lr 0.01, batch 64, weight_decay = lambda on
the same full-size data (Fashion-MNIST by default: same shapes as MNIST, and on disk
offline), then evaluate on its test set.

    python benchmarks/trial_speed.py [--dataset fashion-mnist] [--epochs 5] [--lambda 1e-4] [--data-dir data]
"""

from __future__ import annotations

import argparse
import time

import torch
from seed_eval import seed_accuracy  # benchmarks/ is the script's folder, on sys.path
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from sweep.config import TrainConfig
from sweep.training import data
from sweep.training.fit import fit
from sweep.training.model import SimpleNet

TV = {"fashion-mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}


def seed_loop(root: str, dataset: str, epochs: int, lam: float) -> tuple[list[float], float]:
    """The seed document's steps 2-6, verbatim apart from the dataset class and the timing."""
    torch.manual_seed(0)
    transform = transforms.ToTensor()
    train_dataset = TV[dataset](root=root, train=True, download=False, transform=transform)
    test_dataset = TV[dataset](root=root, train=False, transform=transform)
    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=64)
    model = SimpleNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=lam)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for data_, target in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(data_), target)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds, seed_accuracy(model, test_loader)


def ours(root: str, dataset: str, epochs: int, lam: float) -> tuple[list[float], float]:
    ds = data.load(dataset, root)
    device = torch.device("cpu")
    x, y = data.to_device(ds.train, device)
    xt, yt = data.to_device(ds.test, device)
    result = fit(x, y, xt, yt, lam=lam, cfg=TrainConfig(epochs=epochs), seed=0)
    # EpochStats.seconds includes the end-of-epoch evaluation of train and test accuracy
    return [h.seconds for h in result.history], result.final.val_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", choices=sorted(TV))
    ap.add_argument("--data-dir", default=str(data.default_data_dir()))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lambda", dest="lam", type=float, default=1e-4)
    args = ap.parse_args()
    data.load(args.dataset, args.data_dir)  # unpack the IDX files where torchvision looks for them
    print(f"{args.dataset}, {args.epochs} epochs, lambda {args.lam:g}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    for label, fn in (("seed loop (DataLoader + ToTensor)", seed_loop), ("lambda-sweep trainer", ours)):
        secs, acc = fn(args.data_dir, args.dataset, args.epochs, args.lam)
        rows.append((label, sum(secs) / len(secs), min(secs), acc))
    base = rows[0][1]
    print(f"{'trainer':36} {'s/epoch (mean)':>14} {'s/epoch (min)':>13} {'test acc':>9} {'speed-up':>9}")
    for label, mean, best, acc in rows:
        print(f"{label:36} {mean:>14.3f} {best:>13.3f} {acc:>9.4f} {base / mean:>8.1f}x")
    print(f"test accuracy difference: {abs(rows[0][3] - rows[1][3]) * 100:.2f} points")


if __name__ == "__main__":
    main()
