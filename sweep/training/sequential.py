"""A population trained member by member, for networks ``vmap`` cannot batch (recurrent layers, ...).

Same contract as ``functional.fit_population``: one member per (lambda, seed), the epoch callback
sees every member's figures after each epoch and names the members to stop, a member whose loss turns
NaN/inf fails alone. The members stay in one process on the device's tensors; each trains its epoch in
turn with exactly ``fit.fit``'s arithmetic: its seeded initialisation, its own data order generator,
its own global-generator stream (``rng.Streams``: the dropout masks it would draw alone), and
``fit.evaluate`` in eval mode. So member i equals ``fit.fit`` with its lambda and seed bit for bit.
It gains no speed over trials one at a time; it keeps a batch's bookkeeping (one population, one
pruning decision per epoch) for every network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from math import nan

import torch

from sweep.config import TrainConfig
from sweep.training import rng
from sweep.training.fit import evaluate, make_step, steps_per_epoch, train_epoch
from sweep.training.models import Net
from sweep.training.population import MemberResult, PopulationCallback, check_pairs, settle_epoch


def fit_population(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None,
                   *, lams: Sequence[float], seeds: Sequence[int], cfg: TrainConfig, net: Net,
                   on_epoch: PopulationCallback | None = None, return_models: bool = False) -> list[MemberResult]:
    """Train one ``net`` per (lambda, seed) pair, member by member each epoch; results in the order of ``lams``."""
    check_pairs(lams, seeds)
    device = x_fit.device
    models = [net.build(int(s)).to(device) for s in seeds]
    per_epoch = steps_per_epoch(int(y_fit.shape[0]), cfg)
    steps = [make_step(model, cfg, float(lam), y_fit, steps_per_epoch=per_epoch)
             for model, lam in zip(models, lams, strict=True)]
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    results = [MemberResult(lam=float(lam), seed=int(s)) for lam, s in zip(lams, seeds, strict=True)]
    training = set(range(len(models)))
    with rng.forked(device):
        streams = rng.Streams([int(s) for s in seeds], device)
        for epoch in range(1, cfg.epochs + 1):
            if not training:
                break
            start = time.perf_counter()
            figures: dict[int, tuple[float, float, float, float]] = {}
            for i in sorted(training):
                with streams.member(i):
                    train_loss, train_acc = train_epoch(models[i], steps[i], x_fit, y_fit, gens[i], cfg)
                val = evaluate(models[i], x_val, y_val, cfg) if x_val is not None and y_val is not None else (nan, nan)
                figures[i] = (train_loss, train_acc, *val)
            share = (time.perf_counter() - start) / len(figures)
            training = settle_epoch(epoch, figures, seconds=share, results=results, on_epoch=on_epoch)
    if return_models:
        for i in training:
            results[i].model = models[i].eval()
    return results
