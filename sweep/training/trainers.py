"""Which population trainer a study's network uses: the hand-written MLP one, or torch.func for any network.

SimpleNet and ``model.arch = "mlp"`` with ``l2`` and plain SGD train with ``population`` (stacked
weights, hand-derived gradients, the first layer's gradient accumulated by one wide GEMM; 2-3x
faster than the generic path, docs/models.md); every other network, penalty and momentum
trains with ``functional.fit_population``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sweep.config import TrainConfig
from sweep.training import functional, population
from sweep.training.models import Net


def uses_mlp_fast_path(net: Net, cfg: TrainConfig) -> bool:
    """Whether ``net`` trains on the stacked-MLP population (``population.py``: SimpleNet or mlp, penalty ``l2``,
    no momentum) rather than torch.func's. Not the single fit's choice (``fit.uses_manual_backward``)."""
    return population.supports(net, cfg)


def unsupported(net: Net, cfg: TrainConfig) -> str | None:
    """Why ``net`` cannot train as a population (None when it can)."""
    if uses_mlp_fast_path(net, cfg) or functional.supports(net):
        return None
    return f"{net.source} has buffers (e.g. BatchNorm running statistics), which the population trainer does not stack"


def auto_size(device: torch.device, net: Net, cfg: TrainConfig, *, n_fit: int) -> int:
    """Members per population for ``search.batch = "auto"``."""
    if uses_mlp_fast_path(net, cfg):
        widths = [math.prod(net.in_shape), *net.hidden, net.classes]
        return population.auto_size(device, widths=widths, batch_size=cfg.batch_size, n_fit=n_fit)
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
    """Train a population of ``net``: the hand-written MLP trainer where it applies, else torch.func's."""
    if uses_mlp_fast_path(net, cfg):
        return population.fit_population(x_fit, y_fit, x_val, y_val, lams=lams, seeds=seeds, cfg=cfg,
                                         net=net, on_epoch=on_epoch, return_models=return_models)
    return functional.fit_population(x_fit, y_fit, x_val, y_val, lams=lams, seeds=seeds, cfg=cfg, net=net,
                                     on_epoch=on_epoch, return_models=return_models)


def train_population(sets: Sequence[population.FitSet], members: Sequence[population.Member], *, net: Net,
                     cfg: TrainConfig, on_epoch: population.PopulationCallback | None = None,
                     return_models: bool = False) -> list[population.MemberResult]:
    """Members on several fit sets (CV folds, seeds): the hand-written MLP trainer batches them all at once;
    torch.func's trains one population per fit set in turn (member indices stay those of ``members``)."""
    if uses_mlp_fast_path(net, cfg):
        return population.train_population(sets, members, cfg=cfg, net=net, on_epoch=on_epoch,
                                           return_models=return_models)
    results: list[population.MemberResult | None] = [None] * len(members)
    for k, s in enumerate(sets):
        index = [i for i, m in enumerate(members) if m.fit_set == k]
        if not index:
            continue
        x_fit, y_fit = (s.x, s.y) if s.rows is None else (s.x[s.rows], s.y[s.rows])

        def local(ep: population.PopulationEpoch, index: list[int] = index) -> list[int]:
            # The callback speaks in the indices of ``members``; this population in its own.
            seen = population.PopulationEpoch(ep.epoch, {index[j]: v for j, v in ep.stats.items()},
                                              {index[j]: v for j, v in ep.failed.items()})
            stop = set(on_epoch(seen) or ()) if on_epoch is not None else set()
            return [j for j, i in enumerate(index) if i in stop]

        part = functional.fit_population(x_fit, y_fit, s.x_val, s.y_val, lams=[members[i].lam for i in index],
                                         seeds=[members[i].seed for i in index], cfg=cfg, net=net,
                                         on_epoch=local, return_models=return_models)
        for i, r in zip(index, part, strict=True):
            results[i] = r
    return [r for r in results if r is not None]
