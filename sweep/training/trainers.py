"""Which population trainer a study's network uses: SimpleNet's hand-written one, or torch.func for any network.

SimpleNet with ``l2`` and plain SGD keeps ``population.fit_population`` (stacked weights,
hand-derived gradients; faster than the generic path, docs/models.md); every other
network, penalty and momentum trains with ``functional.fit_population``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sweep.config import TrainConfig
from sweep.training import functional, population
from sweep.training.models import Net


def hand_written(net: Net, cfg: TrainConfig) -> bool:
    """SimpleNet's own population (penalty ``l2``, no momentum)."""
    return net.is_simplenet and cfg.penalty == "l2" and cfg.momentum == 0


def unsupported(net: Net, cfg: TrainConfig) -> str | None:
    """Why ``net`` cannot train as a population (None when it can)."""
    if hand_written(net, cfg) or functional.supports(net):
        return None
    return f"{net.source} has buffers (e.g. BatchNorm running statistics), which the population trainer does not stack"


def auto_size(device: torch.device, net: Net, cfg: TrainConfig, *, n_fit: int) -> int:
    """Members per population for ``search.batch = "auto"``."""
    if hand_written(net, cfg):
        return population.auto_size(device, hidden=net.hidden[0], batch_size=cfg.batch_size, n_fit=n_fit)
    if device.type != "cuda":
        return population.CPU_AUTO_SIZE
    # A member's training footprint: its parameters 4 times (weights, grads, optimiser state x2) plus its order.
    params = sum(p.numel() for p in net.build(0).parameters())
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(population.CUDA_AUTO_CAP, int(free // 2 // (16 * params + 8 * n_fit))))


def fit_population(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None,
                   *, net: Net, cfg: TrainConfig, lams: Sequence[float], seeds: Sequence[int],
                   on_epoch: population.PopulationCallback | None = None,
                   return_models: bool = False) -> list[population.MemberResult]:
    """Train a population of ``net``: SimpleNet's hand-written trainer where it applies, else torch.func's."""
    if hand_written(net, cfg):
        return population.fit_population(x_fit, y_fit, x_val, y_val, lams=lams, seeds=seeds, cfg=cfg,
                                         hidden=net.hidden[0], on_epoch=on_epoch, return_models=return_models)
    return functional.fit_population(x_fit, y_fit, x_val, y_val, lams=lams, seeds=seeds, cfg=cfg, net=net,
                                     on_epoch=on_epoch, return_models=return_models)
