"""Train many MLPs at once: members are (lambda, fit set, seed) triples, stacked, one batched matmul per layer.

A sweep trains the same small network for many lambdas, folds and seeds; one such
network leaves a CPU or GPU mostly idle on per-call overhead, so the population
stacks its members' weights and runs every layer as one batched matmul
(``sweep.training.stacks`` holds the arithmetic). The network is SimpleNet (784-hidden-10,
the default) or any ``model.arch = "mlp"`` (``net=``): ``nn.Linear`` layers with ReLU between.

Interface (what a trainer of another network can adopt as it is):

- ``FitSet(x, y, x_val, y_val, rows)``: one fit set and its validation set. A CV
  study passes k of them sharing the training set's tensor (``rows`` = the fold's fit indices).
- ``Member(lam, seed, fit_set=0)``: one training; ``fit_set`` indexes the sets.
  Members that share a fit set and a seed share every batch (a *group*); a study
  trains each fold with the same seeds for every lambda, so a CV batch of T trials
  x k folds x r repeats is k*r groups of T members.
- ``train_population(sets, members, cfg=, hidden=, net=, on_epoch=, return_models=)`` ->
  ``MemberResult`` per member, in the order of ``members``. ``on_epoch(PopulationEpoch)``
  sees each epoch's figures of the members still training (by member index) and those
  that failed, and returns the member indices to stop (pruned); they leave the stacks.
- ``fit_population(x_fit, y_fit, x_val, y_val, lams=, seeds=, ...)``: the one-fit-set form.

Each member keeps what makes ``fit.fit`` reproducible: its lambda, its initialisation
(``net.build(seed)``, SimpleNet's ``init_simplenet(hidden, seed)`` by default) and its data order (one ``torch.randperm(n,
generator=Generator().manual_seed(seed))`` per epoch over its fit set's rows). So
member i gives the weights and figures of ``fit.fit`` on its fit set with its seed,
up to float rounding. Only the seed's recipe (plain SGD, penalty ``l2``, constant rate, no
clipping) is written out; every other optimiser, schedule and penalty trains as a torch.func
population (``functional.py``) stepped by ``torch.optim``.

A member whose loss turns NaN/inf fails alone (the rest go on). The epoch loop has no
host synchronisation: losses stay on the device until the epoch's one read of its figures.
A wide CPU population whose members share batches trains in lanes (``cpu_lanes``): a thread
per part, one core each, every part keeping every group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import isfinite, nan
from typing import Literal

import torch
from torch import nn

from sweep.config import TrainConfig
from sweep.errors import ConfigError
from sweep.training.fit import EpochStats, diverged
from sweep.training.model import init_simplenet
from sweep.training.models import Net
from sweep.training.stacks import Cohort, FitSet, evaluate, step

__all__ = ["FitSet", "Member", "MemberResult", "PopulationEpoch", "auto_size", "fit_population", "train_population"]

CPU_AUTO_SIZE = 32  # "auto" on a CPU: measured gains flatten out around here on 2 cores
CPU_LANE_MEMBERS = 16  # members per CPU thread of a wide population (cpu_lanes); 0: one population on all threads
CUDA_AUTO_CAP = 4096

State = Literal["complete", "pruned", "failed"]


@dataclass(frozen=True)
class Member:
    """One training of a population: a lambda, a seed (initialisation and data order) and its fit set."""

    lam: float
    seed: int
    fit_set: int = 0  # index into the population's fit sets


@dataclass
class MemberResult:
    """One member's outcome; ``model`` only for complete members and only when asked for."""

    lam: float
    seed: int
    fit_set: int = 0
    state: State = "complete"
    history: list[EpochStats] = field(default_factory=list)
    fail_reason: str | None = None
    model: nn.Module | None = None


@dataclass(frozen=True)
class PopulationEpoch:
    """What the epoch callback sees: figures of the members still training, and those that failed now."""

    epoch: int
    stats: dict[int, EpochStats]  # member index (position in ``lams``) -> this epoch's figures
    failed: dict[int, str]  # member index -> reason, for members that diverged in this epoch


# Returns the member indices to stop (pruned) after this epoch; None or empty keeps all.
PopulationCallback = Callable[[PopulationEpoch], Iterable[int] | None]


def settle_epoch(epoch: int, figures: dict[int, tuple[float, float, float, float]], *, seconds: float,
                 results: list[MemberResult], on_epoch: PopulationCallback | None) -> set[int]:
    """The end of a population's epoch, the same for every population trainer; returns the members training on.

    ``figures``: member index -> (train loss, train accuracy, validation loss, validation accuracy), in the
    order the callback sees them; ``seconds``: each member's share of the epoch. A member whose training
    loss is NaN or infinite fails alone (the message ``fit.fit`` raises); the others' figures join their
    histories; the callback names the members to stop, which are pruned."""
    stats: dict[int, EpochStats] = {}
    failed: dict[int, str] = {}
    for member, (train_loss, train_acc, val_loss, val_acc) in figures.items():
        if not isfinite(train_loss):
            failed[member] = diverged(train_loss, epoch=epoch, lam=results[member].lam)
            results[member].state, results[member].fail_reason = "failed", failed[member]
            continue
        stats[member] = EpochStats(epoch, train_loss, train_acc, val_loss, val_acc, seconds)
        results[member].history.append(stats[member])
    stop = set(on_epoch(PopulationEpoch(epoch, stats, failed)) or ()) if on_epoch is not None else set()
    for member in stop & stats.keys():
        results[member].state = "pruned"
    return stats.keys() - stop


def supports(net: Net, cfg: TrainConfig) -> bool:
    """Whether this trainer applies: SimpleNet or a built-in mlp, the seed's recipe (plain SGD, ``l2``, constant rate,
    no clipping)."""
    return net.arch in ("simplenet", "mlp") and cfg.seed_recipe


def train_population(sets: Sequence[FitSet], members: Sequence[Member], *, cfg: TrainConfig, hidden: int = 128,
                     net: Net | None = None, on_epoch: PopulationCallback | None = None,
                     return_models: bool = False) -> list[MemberResult]:
    """Train every member together; results in the order of ``members`` (see the module docstring).
    ``net``: a SimpleNet or mlp ``Net``; None is SimpleNet 784-``hidden``-10."""
    if not cfg.seed_recipe:
        raise ConfigError(
            f"this population trainer supports train.penalty = 'l2' with plain SGD at a constant rate only, got "
            f"penalty {cfg.penalty!r}, optimizer {cfg.optimizer!r}, momentum {cfg.momentum}, schedule "
            f"{cfg.schedule!r}, clip_grad_norm {cfg.clip_grad_norm}; train through sweep.training.trainers, which "
            "picks the torch.func population for them"
        )
    if net is not None and net.arch not in ("simplenet", "mlp"):
        raise ValueError(f"{net.source} is not a stack of Linear layers; train it with sweep.training.functional")
    if not members:
        raise ValueError("a population needs at least one member")
    if any(not 0 <= m.fit_set < len(sets) for m in members):
        raise ValueError(f"a member's fit_set is outside the {len(sets)} fit sets given")
    device = sets[0].x.device
    by_size: dict[int, list[tuple[int, float, int, int]]] = {}
    for i, m in enumerate(members):  # one cohort per fit-set size: its members step with one batch size
        by_size.setdefault(sets[m.fit_set].n, []).append((i, m.lam, m.seed, m.fit_set))
    def build(seed: int) -> nn.Module:
        return net.build(seed) if net is not None else init_simplenet(hidden, seed)

    lanes = cpu_lanes(members, device)
    cohorts = [Cohort(sets, part, build=build, lr=cfg.lr, decay_bias=cfg.decay_bias, device=device)
               for spec in by_size.values() for part in _split(spec, lanes) if part]
    with lane_pool(lanes) as pool:
        results = _train(sets, members, cohorts, cfg, on_epoch, pool)
    if return_models:
        for c in cohorts:
            for row, member in enumerate(c.members):
                results[member].model = c.model(row)
    return results


def cpu_lanes(members: Sequence[Member], device: torch.device) -> int:
    """How many threads train ``members`` on ``device``, each its own part on one core.

    Why: a wide population's step on a 2-core CPU ran 1.1-1.7x faster as two halves on one core each
    than as one matmul split over both cores (K = 32 and 64; narrower it was no faster). One lane per
    ``CPU_LANE_MEMBERS`` members, at most one per intra-op thread; on a GPU, one. Members that each have
    their own seed (own data order) train in one population: in lanes they ran 0.85x as fast."""
    if device.type != "cpu" or CPU_LANE_MEMBERS < 1 or len({(m.fit_set, m.seed) for m in members}) == len(members):
        return 1
    return max(1, min(torch.get_num_threads(), len(members) // CPU_LANE_MEMBERS))


@contextmanager
def lane_pool(lanes: int) -> Iterator[ThreadPoolExecutor | None]:
    """A thread per lane (``cpu_lanes``), each running its operations on one core; None for one lane."""
    if lanes < 2:
        yield None
        return
    pool = ThreadPoolExecutor(lanes, initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield pool
    finally:
        pool.shutdown()


def _split(spec: list[tuple[int, float, int, int]], lanes: int) -> list[list[tuple[int, float, int, int]]]:
    """``spec`` in ``lanes`` parts. A group's (fit set, seed) members are dealt round the lanes, so each lane
    keeps every group, and each group stays one wide matmul; groups of one member (own seeds) are dealt whole."""
    parts: list[list[tuple[int, float, int, int]]] = [[] for _ in range(lanes)]
    keys = [(s[3], s[2]) for s in spec]
    singles = len(set(keys)) == len(keys)
    dealt: dict[tuple[int, int], int] = {}
    for i, (s, key) in enumerate(zip(spec, keys, strict=True)):
        dealt[key] = dealt.get(key, -1) + 1  # this member's rank in its group
        parts[(i if singles else dealt[key]) % lanes].append(s)
    return parts


def _train(sets: Sequence[FitSet], members: Sequence[Member], cohorts: list[Cohort], cfg: TrainConfig,
           on_epoch: PopulationCallback | None, pool: ThreadPoolExecutor | None) -> list[MemberResult]:
    """The epoch loop of ``train_population``: every cohort's epoch (on ``pool``'s threads, if any), then one read."""
    results = [MemberResult(lam=float(m.lam), seed=int(m.seed), fit_set=m.fit_set) for m in members]
    n_val = [max(int(fs.y_val.shape[0]), 1) if (fs := sets[m.fit_set]).y_val is not None else 0 for m in members]
    for epoch in range(1, cfg.epochs + 1):
        cohorts = [c for c in cohorts if len(c)]
        if not cohorts:
            break
        start = time.perf_counter()
        if pool is None:
            cols = [_train_epoch(c, cfg) for c in cohorts]
        else:
            cols = [f.result() for f in [pool.submit(_train_epoch, c, cfg) for c in cohorts]]
        # One read of every cohort's figures; divided in double, as fit.fit's float(sum) / n does.
        sums = torch.cat([col.double() for col in cols], 1).tolist()
        share = (time.perf_counter() - start) / sum(len(c) for c in cohorts)  # each member's share of the wall time
        training = settle_epoch(epoch, _figures(sums, cohorts, n_val), seconds=share, results=results, on_epoch=on_epoch)
        for c in cohorts:
            rows = [row for row, member in enumerate(c.members) if member in training]
            if len(rows) < len(c):
                c.keep_rows(rows)
    return results


def _figures(sums: list[list[float]], cohorts: list[Cohort], n_val: list[int]) -> dict[int, tuple[float, float, float, float]]:
    """Each member's (train loss, train accuracy, val loss, val accuracy) from the cohorts' summed columns
    (``n_val``: each member's validation size, 0 for none), in cohort and row order."""
    figures: dict[int, tuple[float, float, float, float]] = {}
    members = [(c, member) for c in cohorts for member in c.members]
    for j, (c, member) in enumerate(members):
        val_loss, val_acc = (sums[2][j] / n_val[member], sums[3][j] / n_val[member]) if n_val[member] else (nan, nan)
        figures[member] = (sums[0][j] / c.n, sums[1][j] / c.n, val_loss, val_acc)
    return figures


def _train_epoch(c: Cohort, cfg: TrainConfig) -> torch.Tensor:
    """One epoch of a cohort; (4, K) on the device: summed train loss, train hits, val loss, val hits."""
    order = c.order()
    steps = -(-c.n // cfg.batch_size)
    # Each step's per-example losses and hits, summed once at the epoch's end (not two sums per step).
    losses = torch.zeros(steps, len(c), cfg.batch_size, 1, device=order.device)
    right = torch.zeros(steps, len(c), cfg.batch_size, 1, device=order.device, dtype=torch.bool)
    with torch.no_grad():
        for i, s in enumerate(range(0, c.n, cfg.batch_size)):
            b = min(cfg.batch_size, c.n - s)
            step(c, *c.batch(order[:, s:s + b]), cfg.lr, losses[i, :, :b], right[i, :, :b])
            if (i + 1) % c.renorm_every == 0:
                c.fold_scale()
        c.fold_scale()
    total, fit_correct = losses.sum((0, 2, 3)), right.sum((0, 2, 3))
    val = torch.zeros(2, len(c), device=order.device)
    for s, first, end in c.set_slices():
        fs = c.sets[s]
        if fs.x_val is not None and fs.y_val is not None:
            loss, hits = evaluate(c, first, end, fs.x_val, fs.y_val)
            val[0, first:end], val[1, first:end] = loss, hits.to(val.dtype)
    return torch.cat([torch.stack([total, fit_correct.to(total.dtype)]), val])


def fit_population(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_val: torch.Tensor | None,
    y_val: torch.Tensor | None,
    *,
    lams: Sequence[float],
    seeds: Sequence[int],
    cfg: TrainConfig,
    hidden: int = 128,
    net: Net | None = None,
    on_epoch: PopulationCallback | None = None,
    return_models: bool = False,
) -> list[MemberResult]:
    """One network per (lambda, seed) pair on one fit set (SimpleNet unless ``net``); results in the order of ``lams``."""
    check_pairs(lams, seeds)
    members = [Member(float(lam), int(s)) for lam, s in zip(lams, seeds, strict=True)]
    return train_population([FitSet(x_fit, y_fit, x_val, y_val)], members, cfg=cfg, hidden=hidden, net=net,
                            on_epoch=on_epoch, return_models=return_models)


def check_pairs(lams: Sequence[float], seeds: Sequence[int]) -> None:
    """A one-fit-set population is one member per (lambda, seed) pair, at least one."""
    if len(lams) != len(seeds) or not lams:
        raise ValueError(f"need one seed per lambda and at least one member, got {len(lams)} and {len(seeds)}")


def member_bytes(widths: Sequence[int], *, batch_size: int, n_fit: int) -> int:
    """Rough device memory one member needs while training: weights x3, step temporaries, its data order
    (8 bytes per fit example) and its epoch's per-example loss and hit (5 bytes).
    ``widths``: inputs, each hidden width, classes (SimpleNet: 784, hidden, 10)."""
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    step = batch_size * (widths[0] + 4 * sum(widths[1:]))
    return 4 * (3 * params + step) + 13 * n_fit


def auto_size(device: torch.device, *, widths: Sequence[int], batch_size: int, n_fit: int) -> int:
    """Members per population for ``search.batch = "auto"``: half the free CUDA memory, or a CPU default."""
    if device.type != "cuda":
        return CPU_AUTO_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    per = member_bytes(widths, batch_size=batch_size, n_fit=n_fit)
    return max(1, min(CUDA_AUTO_CAP, int(free // 2 // per)))
