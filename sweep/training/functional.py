"""Train K copies of any network at once with ``torch.func``: one lambda, seed and data order per member.

The members' parameters are stacked (``stack_module_state``: each tensor gains a leading
K axis) and one step is ``vmap(grad(loss))`` over the stack, with ``functional_call``
running the user's own ``forward`` on each member's slice, with each member's own buffers
(BatchNorm's running statistics) stacked beside its parameters. So any ``nn.Module`` that
``vmap`` can batch trains as a population (``trainers.py`` checks that on one batch first);
SimpleNet and the built-in mlp with ``l2`` and plain SGD train on the hand-written population
(``population.py``), which measures faster (docs/models.md).

Training runs in training mode and evaluation in eval mode (dropout off, BatchNorm on each
member's running statistics). Members sharing a seed draw their random numbers (dropout masks)
with ``randomness="same"`` from the global generator seeded as ``fit.fit`` seeds it, so each
draws the masks it would draw alone (``trainers.py`` gives a random network one population per seed).

Each member is what ``fit.fit`` would train alone: its initialisation is ``net.build(seed_i)``,
its data order one ``torch.randperm`` per epoch from ``Generator().manual_seed(seed_i)``, and
its update ``optimizers.Stepper``'s, as the single fit's: one ``torch.optim`` optimiser and one
scheduler over the stacks (each optimiser listed updates each element on its own, so over K
stacked members it is K optimisers), with each member's lambda, decay factor and clipping norm
applied before the step (docs/recipes.md).

Members share each batch when they share a seed (a study's case), and the data then enter
``vmap`` unbatched: a layer's K matmuls see one input. Members stopped by the epoch callback
(pruned) or with a NaN/inf loss (failed) leave the stacks.

SimpleNet and the mlp (any recipe but the seed's, which ``population.py`` trains) skip ``vmap``:
their stacked forward and backward are written out (``linear_stack``: gradients into buffers kept
across steps, in the parameters' layout); the update is the same ``Stepper``. A wide CPU population
of a network without dropout trains in lanes, a part of the members per thread on one core each,
as ``population.py``'s does. Both measured faster (docs/populations.md, docs/models.md).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.func import functional_call, grad, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from sweep.config import TrainConfig
from sweep.training import linear_stack, losses, optimizers, population, rng
from sweep.training.fit import EVAL_CHUNK, decayed, loss_penalty, steps_per_epoch
from sweep.training.models import Net
from sweep.training.population import MemberResult, PopulationCallback, check_pairs, settle_epoch


class _Members:
    """Stacked parameters and optimiser state of the members still training, aligned by row."""

    def __init__(self, net: Net, lams: Sequence[float], seeds: Sequence[int], cfg: TrainConfig, device: torch.device,
                 *, steps_per_epoch: int, members: Sequence[int]) -> None:
        models = [net.build(s).to(device) for s in seeds]
        self.base = copy.deepcopy(models[0]).to("meta")
        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        self.params = {k: v.detach() for k, v in params.items()}
        # Buffers (BatchNorm's running statistics) are each member's own state, stacked like its parameters;
        # a training-mode forward updates them in place, row by row.
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.decay = {n for n, p in models[0].named_parameters() if decayed(p, cfg.decay_bias)}
        self.lam = torch.tensor(list(lams), dtype=torch.float32, device=device)  # for penalties in the loss
        # lambda in double from the Python floats, so each member's 1 - lr*lam rounds as fit.fit's scalar does
        self.stepper = optimizers.Stepper(list(self.params.values()), [n in self.decay for n in self.params], cfg,
                                          torch.tensor(list(lams), dtype=torch.float64, device=device),
                                          steps_per_epoch=steps_per_epoch)
        self.members = list(members)  # each row's index among the population's members
        self.shared_order = len(set(seeds)) == 1  # then one generator gives every member's (identical) order
        self.gens = [torch.Generator().manual_seed(s) for s in (seeds[:1] if self.shared_order else seeds)]
        self.step: Step | None = None

    def __len__(self) -> int:
        return len(self.members)

    def keep_rows(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.lam.device)
        self.params = dict(zip(self.params, self.stepper.keep_rows(index), strict=True))
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.lam = self.lam.index_select(0, index)
        self.members = [self.members[r] for r in rows]
        if not self.shared_order:
            self.gens = [self.gens[r] for r in rows]


def _loss_fn(members: _Members, cfg: TrainConfig, y_fit: torch.Tensor):  # noqa: ANN202 - a closure for torch.func.grad
    base, decay = members.base, members.decay
    data_loss = losses.make_loss(cfg, y_fit)

    def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], lam: torch.Tensor,  # noqa: ANN202
             x: torch.Tensor, y: torch.Tensor):
        out = functional_call(base, (params, buffers), (x,))
        data = data_loss(out, y)
        penalty = loss_penalty(cfg, lam, [params[n] for n in params if n in decay])
        total = data if penalty is None else data + penalty
        return total, (data.detach() * y.shape[0], losses.hits(cfg, out.detach(), y))

    return loss


def _update(m: _Members, grads: dict[str, torch.Tensor]) -> None:
    """One optimiser step of every member: the stacks' gradients, then ``optimizers.Stepper`` (one torch.optim
    optimiser and scheduler over the stacks, each member's lambda and clipping norm its own)."""
    for name, w in m.params.items():
        w.grad = grads[name]
    m.stepper.step()


@contextmanager
def _batchable_kernels() -> Iterator[None]:
    """Attention's fused kernels (the eval-mode Transformer fast path, the CPU flash attention) have no vmap
    batching rule: vmap would loop over the members one by one, with a warning. The layer-by-layer path and
    the math attention batch; the switches are restored on exit."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


@torch.no_grad()
def _evaluate(m: _Members, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed evaluation loss (``losses``) and correct counts of every member on (x, y), shapes (K,); no sync."""
    k, stacked = len(m), losses.loss_of(cfg).stacked
    m.base.eval()  # dropout off, BatchNorm on each member's running statistics
    forward = vmap(lambda p, b, xs: functional_call(m.base, (p, b), (xs,)), in_dims=(0, 0, None))
    loss = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    for xs, ys in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK), strict=True):
        out = forward(m.params, m.buffers, xs)  # (K, m, classes)
        loss += stacked(out, ys)
        correct += losses.hits(cfg, out, ys)
    return loss, correct


def fit_population(x_fit: torch.Tensor, y_fit: torch.Tensor, x_val: torch.Tensor | None, y_val: torch.Tensor | None,
                   *, lams: Sequence[float], seeds: Sequence[int], cfg: TrainConfig, net: Net,
                   on_epoch: PopulationCallback | None = None, return_models: bool = False) -> list[MemberResult]:
    """Train one ``net`` per (lambda, seed) pair together; results in the order of ``lams``.

    The same contract as ``population.fit_population``: the callback sees each epoch's figures and
    returns the members to stop (pruned); a member whose training loss is NaN or infinite fails alone.
    A wide CPU population trains in lanes (``lane_count``): a part of the members per thread, one core each.
    """
    check_pairs(lams, seeds)
    names = linear_stack.layer_names(net)
    n_lanes = lane_count(net, names, lams, seeds, x_fit)
    spe = steps_per_epoch(int(y_fit.shape[0]), cfg)
    lanes = []
    for part in (list(range(i, len(lams), n_lanes)) for i in range(n_lanes)):
        m = _Members(net, [lams[i] for i in part], [seeds[i] for i in part], cfg, x_fit.device, steps_per_epoch=spe,
                     members=part)
        m.step = _batch_step(m, cfg, y_fit, names)
        lanes.append(m)
    results = [MemberResult(lam=float(lam), seed=int(s)) for lam, s in zip(lams, seeds, strict=True)]
    # members sharing a seed draw the masks each would draw alone
    with rng.seeded(seeds[0], x_fit.device), _batchable_kernels(), population.lane_pool(n_lanes) as pool:
        for epoch in range(1, cfg.epochs + 1):
            lanes = [m for m in lanes if len(m)]
            if not lanes:
                break
            start = time.perf_counter()
            args = (cfg, x_fit, y_fit, x_val, y_val)
            if pool is None:
                figures = [_train_epoch(m, *args) for m in lanes]
            else:  # each lane's epoch on its own thread
                figures = [f.result() for f in [pool.submit(_train_epoch, m, *args) for m in lanes]]
            share = (time.perf_counter() - start) / sum(len(m) for m in lanes)
            seen = dict(sorted((i, f) for m, fs in zip(lanes, figures, strict=True)
                               for i, f in zip(m.members, fs, strict=True)))
            training = settle_epoch(epoch, seen, seconds=share, results=results, on_epoch=on_epoch)
            for m in lanes:
                rows = [row for row, member in enumerate(m.members) if member in training]
                if len(rows) < len(m):
                    m.keep_rows(rows)
    if return_models:
        for m in lanes:
            _attach_models(m, net, seeds, results)
    return results


def lane_count(net: Net, names: linear_stack.Names | None, lams: Sequence[float], seeds: Sequence[int],
               x_fit: torch.Tensor) -> int:
    """How many threads train these members (``population.cpu_lanes``: a wide CPU population whose members share
    batches), for a network that draws no random numbers while training. Why: a lane per core measured faster
    than one population over both cores, for the mlp and for LeNet-5 (docs/models.md); a network with dropout
    trains as one population, since lanes would draw its masks from the one global generator in turn."""
    members = [population.Member(float(lam), int(s)) for lam, s in zip(lams, seeds, strict=True)]
    n = population.cpu_lanes(members, x_fit.device)
    if n < 2 or names is not None:  # SimpleNet and the mlp (``names``) draw no random numbers
        return n
    return 1 if rng.draws_random(net.build(seeds[0]).to(x_fit.device), x_fit[:2]) else n


Step = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor], Any]


def _batch_step(m: _Members, cfg: TrainConfig, y_fit: torch.Tensor, names: linear_stack.Names | None) -> Step:
    """Every member's gradient and batch figures: one ``vmap(grad(loss))`` over the stacked parameters, or the
    written-out stacked forward of SimpleNet and the mlp (``linear_stack``, faster). Members sharing one data
    order see the batch unbatched (a layer's K matmuls read one input)."""
    if names is not None:
        return linear_stack.batch_step(names, m.decay, cfg, y_fit, shared=m.shared_order)
    loss = _loss_fn(m, cfg, y_fit)
    # Members sharing a seed: randomness="same" draws one mask per layer call from the seeded global generator,
    # exactly the draw each member makes alone (trainers.py splits a random network's members by seed).
    in_dims = (0, 0, 0, None, None) if m.shared_order else (0, 0, 0, 0, 0)
    return vmap(grad(loss, has_aux=True), in_dims=in_dims, randomness="same" if m.shared_order else "different")


def _train_epoch(m: _Members, cfg: TrainConfig, x_fit: torch.Tensor, y_fit: torch.Tensor,
                 x_val: torch.Tensor | None, y_val: torch.Tensor | None) -> list[tuple[float, float, float, float]]:
    """One epoch of every member; each member's (train loss, train accuracy, val loss, val accuracy),
    read back once and divided in double, as ``fit.fit``'s float(sum) / n does (NaN without validation)."""
    device, n = x_fit.device, int(y_fit.shape[0])
    order = torch.stack([torch.randperm(n, generator=g) for g in m.gens]).to(device)
    order = order[0] if m.shared_order else order
    total = torch.zeros(len(m), device=device)
    hits = torch.zeros(len(m), device=device, dtype=torch.long)
    m.base.train()
    step = m.step
    assert step is not None  # set by fit_population
    for s in range(0, n, cfg.batch_size):
        idx = order[..., s:s + cfg.batch_size]
        grads, (batch_loss, batch_hits) = step(m.params, m.buffers, m.lam, x_fit[idx], y_fit[idx])
        _update(m, grads)
        total += batch_loss
        hits += batch_hits
    cols = [total, hits]
    if x_val is not None and y_val is not None:
        cols += _evaluate(m, x_val, y_val, cfg)
    sums = torch.stack([c.double() for c in cols]).tolist()
    n_val = max(int(y_val.shape[0]), 1) if y_val is not None else 1
    figures = [[v / d for v in col] for col, d in zip(sums, (n, n, n_val, n_val), strict=False)]
    if len(figures) == 2:
        figures += [[math.nan] * len(m)] * 2
    if not losses.loss_of(cfg).classifies:  # a regression has no accuracy
        figures[1] = figures[3] = [math.nan] * len(m)
    return [(train_loss, train_acc, val_loss, val_acc) for train_loss, train_acc, val_loss, val_acc in zip(*figures, strict=True)]


def _attach_models(m: _Members, net: Net, seeds: Sequence[int], results: list[MemberResult]) -> None:
    """Each complete member's weights as a network of its own, in its result."""
    for row, member in enumerate(m.members):
        model = net.build(seeds[member]).to(m.lam.device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(m.params[name][row])
            for name, b in model.named_buffers():
                b.copy_(m.buffers[name][row])
        model.eval()
        results[member].model = model  # type: ignore[assignment]
