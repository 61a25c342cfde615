"""Why a CPU population of LeNet-5 gains little: the torch.func population against other forms, in one run.

    PYTHONPATH=. python benchmarks/conv_population_forms.py [--net lenet5-bn-dropout|lenet5] [--k 16] [--n 640]

Times, per model-epoch of --n images (batch 64, SGD lr 0.01), alternated for --rounds rounds (best kept,
so rows compare under the same load; the load average is printed):

- one at a time: ``fit.fit`` (autograd, torch.optim), what ``search.batch = 1`` trains per trial;
- torch.func: ``functional.fit_population`` of K, what a study's population trains;
- 2 lanes of torch.func: two threads of one core each, K/2 members each (timing only: with dropout two
  threads draw from one global generator, so the masks are not reproducible, and the trainer does not do it);
- grouped by hand: the same network written for K members at once, without vmap: the first convolution
  one conv of K*6 maps, the second one grouped conv (groups = K), BatchNorm2d over K*C channels (per channel
  is per member), max-pool on that layout, the linear layers as ``baddbmm`` over (K, batch, features), one
  dropout mask of (batch, features) shared by the members (as ``randomness="same"`` draws it), and one
  backward of the members' summed losses. It is a timing of the layout vmap does not reach, not a trainer.

The floor is one model-epoch's FLOPs over the matmul rate (``generic_speed``), as in network_speed.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from generic_speed import epoch_flops, matmul_rate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ (the repository root) for the factory

from sweep.config import ModelConfig, TrainConfig  # noqa: E402 - after the path set-up
from sweep.training import data, functional  # noqa: E402
from sweep.training.fit import fit  # noqa: E402
from sweep.training.models import net_for  # noqa: E402

NETS = {"lenet5": ModelConfig(arch="cnn"), "lenet5-bn-dropout": ModelConfig(factory="examples.networks:cnn_bn_dropout")}


def grouped(k: int, bn: bool, p: float = 0.25) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step of K LeNet-5 members (with BatchNorm2d and dropout when ``bn``) laid out for K at once."""
    def par(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape) * 0.1).requires_grad_()

    convs = [(par(k * 6, 1, 5, 5), par(k * 6)), (par(k * 16, 6, 5, 5), par(k * 16))]
    norms = [(par(k * c), par(k * c), torch.zeros(k * c), torch.ones(k * c)) for c in (6, 16)]
    linears = [(par(k, i, o), par(k, 1, o)) for i, o in ((400, 120), (120, 84), (84, 10))]
    params = [t for pair in convs + linears for t in pair] + [t for n in norms for t in n[:2]]

    def drop(h: torch.Tensor) -> torch.Tensor:
        return h * torch.empty(h.shape[1:]).bernoulli_(1 - p).div_(1 - p) if bn else h

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        h = x.reshape(-1, 1, 28, 28)
        for (w, b), (g, beta, mean, var), groups, pad in zip(convs, norms, (1, k), (2, 0), strict=True):
            h = F.conv2d(h, w, b, padding=pad, groups=groups)
            h = F.max_pool2d(F.relu(F.batch_norm(h, mean, var, g, beta, True) if bn else h), 2)
        h = h.reshape(len(y), k, 400).transpose(0, 1)  # (K, batch, 400)
        for i, (w, b) in enumerate(linears):
            h = torch.baddbmm(b, drop(h) if i < 2 else h, w)
            h = F.relu(h) if i < 2 else h
        F.cross_entropy(h.reshape(-1, 10), y.repeat(k), reduction="sum").div(len(y)).backward()
        with torch.no_grad():
            for t in params:
                t.sub_(t.grad, alpha=0.01)
                t.grad = None

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=list(NETS), default="lenet5-bn-dropout")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    k, cfg = args.k, TrainConfig(epochs=1, device="cpu")
    sample = data.load("mnist-sample")
    x, y = data.to_device(sample.train, torch.device("cpu"))
    x, y = x[:args.n].reshape(args.n, 1, 28, 28), y[:args.n]
    net = net_for(NETS[args.net], in_shape=(1, 28, 28), classes=10)
    x = x if net.factory is not None else x.reshape(args.n, -1)
    lams = [1e-4] * k
    pool = ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,))
    step = grouped(k, bn=net.factory is not None)

    def lanes() -> None:
        for f in [pool.submit(functional.fit_population, x, y, None, None, lams=lams[:k // 2], seeds=[0] * (k // 2),
                              cfg=cfg, net=net) for _ in range(2)]:
            f.result()

    forms: dict[str, tuple[int, Callable[[], object]]] = {
        "one at a time": (1, lambda: fit(x, y, None, None, lam=1e-4, cfg=cfg, net=net)),
        "torch.func": (k, lambda: functional.fit_population(x, y, None, None, lams=lams, seeds=[0] * k, cfg=cfg, net=net)),
        "2 lanes of torch.func": (k, lanes),
        "grouped by hand": (k, lambda: [step(x[s:s + 64], y[s:s + 64]) for s in range(0, args.n, 64)]),
    }
    load_before, rate = os.getloadavg(), matmul_rate(torch.device("cpu"), 5)
    best = dict.fromkeys(forms, float("inf"))
    for rnd in range(args.rounds + 1):  # round 0 is a warm-up
        for name, (members, run) in forms.items():
            start = time.perf_counter()
            run()
            if rnd:
                best[name] = min(best[name], (time.perf_counter() - start) / members)
    pool.shutdown()
    rate, load = max(rate, matmul_rate(torch.device("cpu"), 5)), os.getloadavg()
    floor = epoch_flops(net, x, y, 64) / rate
    print(f"{args.net}, K = {k}, {args.n} images per epoch, {torch.get_num_threads()} threads, best of {args.rounds} "
          f"rounds; load average before {load_before[0]:.2f}, after {load[0]:.2f}; matmul rate {rate / 1e9:.1f} GFLOP/s")
    print(f"{'form':<24} {'ms/model-epoch':>15} {'vs one':>7} {'floor ms':>9} {'x floor':>8}")
    for name, sec in best.items():
        print(f"{name:<24} {sec * 1e3:>15.1f} {best['one at a time'] / sec:>6.2f}x {floor * 1e3:>9.2f} {sec / floor:>7.1f}x")


if __name__ == "__main__":
    main()
