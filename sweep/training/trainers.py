"""Which population trainer a study's network uses, checked on one batch before any trial.

- SimpleNet and ``model.arch = "mlp"`` with ``l2``, plain SGD and plain cross-entropy: ``population`` (stacked weights,
  hand-derived gradients, the first layer's gradient accumulated by one wide GEMM; 2-3x faster than
  the generic path, docs/models.md).
- Any other network ``vmap`` can batch: ``functional`` (torch.func; SimpleNet and the mlp with any other
  recipe through its written-out stacked forward, ``linear_stack``), buffers (BatchNorm) stacked per
  member. A network that draws random numbers while training (dropout) trains one population per
  seed, so its members draw the masks they would draw alone (``randomness="same"``).
- A network ``vmap`` cannot batch (recurrent layers, an operation without a batching rule):
  ``sequential``, member by member in one process, with one line saying so.

``check`` finds which on a few examples (two members, one epoch) and remembers it per network,
so a population never fails at its first step.

``search.batch = "auto"`` (``auto_size``) keeps a population of a torch.func network only where ``measure``
times it faster per model than one at a time, on this device, over a few steps when the study starts: whether
it is depends on the network and the machine (a convolutional population was slower than one at a time on a
quiet 2-core CPU and faster on a loaded one; docs/models.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sweep.config import TrainConfig
from sweep.errors import first_line
from sweep.training import fit, functional, losses, population, rng, sequential, stream
from sweep.training.models import Net

log = logging.getLogger("sweep")


@dataclass(frozen=True)
class Traits:
    """What one batch showed about a network: whether it draws random numbers, and why vmap fails (None: it works)."""

    random: bool
    no_vmap: str | None


_TRAITS: dict[tuple[Net, TrainConfig], Traits] = {}


def uses_mlp_fast_path(net: Net, cfg: TrainConfig, x: torch.Tensor | None = None) -> bool:
    """Whether ``net`` trains on the stacked-MLP population (``population.py``: SimpleNet or mlp, penalty ``l2``,
    no momentum, plain cross-entropy: the one loss its steps derive by hand) rather than torch.func's. Not the single
    fit's choice (``fit.uses_manual_backward``). ``x``, the data it would train on: examples read batch by batch
    (``stream.Streamed``) are not, since its batches index a tensor."""
    return not stream.is_streamed(x) and population.supports(net, cfg) and losses.plain_cross_entropy(cfg)


def check(net: Net, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> Traits:
    """Train two members for one step on the examples ``x``, ``y`` (a few) with torch.func; remembered per network.
    A failure means vmap cannot batch this network: its populations train member by member (one line says so)."""
    key = (net, cfg)
    if key in _TRAITS:
        return _TRAITS[key]
    random = rng.draws_random(net.build(0).to(x.device), x)
    tiny = cfg.model_copy(update={"epochs": 1, "batch_size": int(y.shape[0])})
    try:
        functional.fit_population(x, y, x, y, lams=[0.0, 1e-3], seeds=[0, 0], cfg=tiny, net=net)
        no_vmap = None
    except Exception as err:  # noqa: BLE001 - any failure under vmap (a missing batching rule, ...) means the same
        no_vmap = f"{type(err).__name__}: {first_line(err)}"
        log.warning("%s: torch.func's vmap cannot batch this network (%s); a population trains member by member "
                    "in one process, no faster than search.batch = 1", net.source, no_vmap)
    _TRAITS[key] = Traits(random, no_vmap)
    return _TRAITS[key]


def unsupported(net: Net, cfg: TrainConfig) -> str | None:
    """Why ``net`` cannot train as a population: never now (networks vmap cannot batch train member by member)."""
    return None


def auto_size(device: torch.device, net: Net, cfg: TrainConfig, *, x: torch.Tensor, y: torch.Tensor,
              timer: Callable[[], float] = time.perf_counter) -> int:
    """Members per population for ``search.batch = "auto"``, never a population slower than one at a time.

    SimpleNet and the mlp on the hand-written population: sized by ``population.auto_size`` (measured faster at
    every K, docs/models.md). A network vmap cannot batch: 1 (member by member gains nothing). Any other: a
    candidate size (``CPU_AUTO_SIZE`` on a CPU, what fits half the free memory on CUDA), kept only where
    ``measure`` finds that population faster per model than one at a time on the fit set ``x``, ``y``."""
    n_fit = int(y.shape[0])
    if uses_mlp_fast_path(net, cfg, x):
        widths = [math.prod(net.in_shape), *net.hidden, net.classes]
        return population.auto_size(device, widths=widths, batch_size=cfg.batch_size, n_fit=n_fit)
    if check(net, x[:4], y[:4], cfg).no_vmap is not None:
        return 1
    if device.type != "cuda":
        k = population.CPU_AUTO_SIZE
    else:  # a member's training footprint: its parameters 4 times (weights, grads, optimiser state x2) plus its order
        params = sum(p.numel() for p in net.build(0).parameters())
        free, _ = torch.cuda.mem_get_info(device)
        k = max(1, min(population.CUDA_AUTO_CAP, int(free // 2 // (16 * params + 8 * n_fit))))
    return k if k > 1 and measure(net, cfg, x, y, k, timer=timer).faster else 1


@dataclass(frozen=True)
class Timing:
    """Seconds per model of ``AUTO_STEPS`` training steps: one at a time, and as a population of ``k``."""

    k: int
    one: float
    population: float

    @property
    def faster(self) -> bool:
        return self.population < self.one


AUTO_STEPS, AUTO_ROUNDS = 3, 2  # batches per timing; timings of each (the best kept: the machine may be shared)
_TIMINGS: dict[tuple[Net, TrainConfig, str, int], Timing] = {}


def measure(net: Net, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, k: int, *,
            timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``AUTO_STEPS`` steps of one member alone and of a population of ``k``, alternated ``AUTO_ROUNDS`` times
    after a warm-up, on the first examples of ``x``; remembered per network, device and ``k`` in this process."""
    key = (net, cfg, str(x.device), k)
    if key in _TIMINGS:
        return _TIMINGS[key]
    n = min(int(y.shape[0]), AUTO_STEPS * cfg.batch_size)
    xs, ys, tiny = x[:n], y[:n], cfg.model_copy(update={"epochs": 1})
    lams, seeds = [float(v) for v in torch.logspace(-5, -2, k)], [cfg.seed] * k
    runs: tuple[Callable[[], object], ...] = (
        lambda: fit.fit(xs, ys, None, None, lam=lams[0], cfg=tiny, seed=cfg.seed, net=net),
        lambda: fit_population(xs, ys, None, None, net=net, cfg=tiny, lams=lams, seeds=seeds))
    for run in runs:  # warm-up: first-call set-up (autograd, vmap, thread pool, CUDA kernels) outside the timings
        run()
    best = [math.inf, math.inf]
    for _ in range(AUTO_ROUNDS):
        for i, run in enumerate(runs):
            _sync(x.device)
            start = timer()
            run()
            _sync(x.device)
            best[i] = min(best[i], timer() - start)
    timing = _TIMINGS[key] = Timing(k, best[0], best[1] / k)
    log.info("search.batch = 'auto': %s trained %d steps in %.1f ms per model one at a time, %.1f ms as a population "
             "of %d on %s; training %s", net.source, n // cfg.batch_size or 1, timing.one * 1e3, timing.population * 1e3,
             k, x.device, f"{k} at a time" if timing.faster else "one at a time")
    return timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_population(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None,
                   *, net: Net, cfg: TrainConfig, lams: Sequence[float], seeds: Sequence[int],
                   on_epoch: population.PopulationCallback | None = None,
                   return_models: bool = False) -> list[population.MemberResult]:
    """Train a population of ``net`` on one fit set: the trainer ``check`` chose (module docstring)."""
    population.check_pairs(lams, seeds)
    members = [population.Member(float(lam), int(s)) for lam, s in zip(lams, seeds, strict=True)]
    return train_population([population.FitSet(x_fit, y_fit, x_val, y_val)], members, net=net, cfg=cfg,
                            on_epoch=on_epoch, return_models=return_models)


def train_population(sets: Sequence[population.FitSet], members: Sequence[population.Member], *, net: Net,
                     cfg: TrainConfig, on_epoch: population.PopulationCallback | None = None,
                     return_models: bool = False) -> list[population.MemberResult]:
    """Members on several fit sets (CV folds, seeds): the hand-written MLP trainer batches them all at once;
    the others train one population per fit set in turn (and per seed, for a random network), member indices
    staying those of ``members``."""
    if uses_mlp_fast_path(net, cfg, sets[0].x):
        return population.train_population(sets, members, cfg=cfg, net=net, on_epoch=on_epoch,
                                           return_models=return_models)
    first = sets[0]
    traits = check(net, first.x[:4], first.y[:4], cfg)
    train = sequential.fit_population if traits.no_vmap else functional.fit_population
    results: list[population.MemberResult | None] = [None] * len(members)
    groups: dict[tuple[int, int | None], list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault((m.fit_set, m.seed if traits.random else None), []).append(i)
    for (k, _), index in sorted(groups.items(), key=lambda g: (g[0][0], -1 if g[0][1] is None else g[0][1])):
        s = sets[k]
        x_fit, y_fit = (s.x, s.y) if s.rows is None else (stream.rows(s.x, s.rows), s.y[s.rows])

        def local(ep: population.PopulationEpoch, index: list[int] = index) -> list[int]:
            # The callback speaks in the indices of ``members``; this population in its own.
            seen = population.PopulationEpoch(ep.epoch, {index[j]: v for j, v in ep.stats.items()},
                                              {index[j]: v for j, v in ep.failed.items()})
            stop = set(on_epoch(seen) or ()) if on_epoch is not None else set()
            return [j for j, i in enumerate(index) if i in stop]

        part = train(x_fit, y_fit, s.x_val, s.y_val, lams=[members[i].lam for i in index],
                     seeds=[members[i].seed for i in index], cfg=cfg, net=net, on_epoch=local,
                     return_models=return_models)
        for i, r in zip(index, part, strict=True):
            r.fit_set = members[i].fit_set
            results[i] = r
    return [r for r in results if r is not None]
