"""Train K SimpleNets at once: stacked weights, one batched matmul per layer, each member on its own.

A sweep trains the same tiny network for many lambdas; one such network leaves a
CPU or GPU mostly idle on per-call overhead, so the population stacks the K
members' weights, ``w1`` (K, hidden, 784), ``b1`` (K, 1, hidden), ``w2`` (K, 10, hidden),
``b2`` (K, 1, 10), and runs every layer as one batched matmul.

Each member keeps what makes ``train.fit`` reproducible: its lambda (a (K, 1, 1)
decay factor), its initialisation (``init_simplenet(hidden, seed_i)``) and its data
order (one ``torch.randperm(n, generator=Generator().manual_seed(seed_i))`` per
epoch). So member i gives the weights and figures of ``train.fit(..., seed=seed_i)``
up to float rounding. Only penalty ``l2`` (SGD with coupled weight decay,
``w <- w - lr*(grad + lam*w)``) is written out here, as in ``train._fast_l2_step``.

When all members share one seed (a study trains every lambda with ``train.seed``)
they also share each batch, and the first layer of all members becomes one large
matmul: the fast path. Members with different seeds gather their own batches.

Members leave the stacks (``index_select``) when the epoch callback stops them
(pruning) or their loss turns NaN/inf (that member fails, the rest go on), so they
stop costing compute. The epoch loop has no host synchronisation: losses stay on
the device until the epoch's one read of its figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from math import isfinite, nan
from typing import Literal

import torch
import torch.nn.functional as F

from sweep.config import TrainConfig
from sweep.errors import ConfigError
from sweep.training.fit import EVAL_CHUNK, EpochStats
from sweep.training.model import CLASSES, IN_FEATURES, SimpleNet, init_simplenet

CPU_AUTO_SIZE = 32  # "auto" on a CPU: measured gains flatten out around here on 2 cores
CUDA_AUTO_CAP = 4096
EVAL_ELEMENTS = 1 << 26  # hidden activations per evaluation chunk (256 MB of float32)

State = Literal["complete", "pruned", "failed"]


@dataclass
class MemberResult:
    """One member's outcome; ``model`` only for complete members and only when asked for."""

    lam: float
    seed: int
    state: State = "complete"
    history: list[EpochStats] = field(default_factory=list)
    fail_reason: str | None = None
    model: SimpleNet | None = None


@dataclass(frozen=True)
class PopulationEpoch:
    """What the epoch callback sees: figures of the members still training, and those that failed now."""

    epoch: int
    stats: dict[int, EpochStats]  # member index (position in ``lams``) -> this epoch's figures
    failed: dict[int, str]  # member index -> reason, for members that diverged in this epoch


# Returns the member indices to stop (pruned) after this epoch; None or empty keeps all.
PopulationCallback = Callable[[PopulationEpoch], Iterable[int] | None]


class _Stacks:
    """The active members' parameters and per-member constants, kept aligned by position."""

    def __init__(self, lams: Sequence[float], seeds: Sequence[int], *, hidden: int, lr: float,
                 decay_bias: bool, device: torch.device) -> None:
        nets = [init_simplenet(hidden, s) for s in seeds]
        self.w1 = torch.stack([m.fc1.weight.data for m in nets]).to(device)
        self.b1 = torch.stack([m.fc1.bias.data for m in nets]).unsqueeze(1).to(device)
        self.w2 = torch.stack([m.fc2.weight.data for m in nets]).to(device)
        self.b2 = torch.stack([m.fc2.bias.data for m in nets]).unsqueeze(1).to(device)
        # The factor 1 - lr*lam is computed in double, then rounded once, as the single trainer's scalar is.
        keep = torch.tensor([1.0 - lr * lam for lam in lams], dtype=torch.float64).to(torch.float32)
        self.keep_w = keep.view(-1, 1, 1).to(device)
        self.keep_b = self.keep_w if decay_bias else torch.ones_like(self.keep_w)
        # w1 is kept as scale * w1 (one scale per member): the decay multiplies the (K,1,1) scale
        # instead of every weight, so a step never rewrites the whole first layer for it.
        # Where 1 - lr*lam is near 0 or negative (a diverging set-up) the weights are decayed directly.
        self.scale = torch.ones_like(self.keep_w)
        smallest = float(self.keep_w.abs().min()) if len(lams) else 1.0
        self.scaled = smallest > 1e-3
        # Fold the scale back into w1 before it can underflow (|keep|^steps stays above 1e-12).
        self.renorm_every = max(1, int(-12 / math.log10(smallest))) if self.scaled and smallest < 1 else 1 << 62
        self.members = list(range(len(lams)))  # original index of each stacked row
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.shared_order = len(set(seeds)) == 1

    def __len__(self) -> int:
        return len(self.members)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the stacked rows ``rows`` (positions); the others stop costing compute."""
        index = torch.tensor(rows, device=self.w1.device, dtype=torch.long)
        self.fold_scale()
        for name in ("w1", "b1", "w2", "b2", "keep_w", "keep_b", "scale"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.members = [self.members[r] for r in rows]
        self.gens = [self.gens[r] for r in rows]

    def fold_scale(self) -> None:
        """Make ``w1`` the real weights again (scale 1)."""
        self.w1.mul_(self.scale)
        self.scale.fill_(1.0)

    def model(self, row: int) -> SimpleNet:
        net = SimpleNet(self.w1.shape[1]).to(self.w1.device)
        with torch.no_grad():
            net.fc1.weight.copy_(self.w1[row])
            net.fc1.bias.copy_(self.b1[row, 0])
            net.fc2.weight.copy_(self.w2[row])
            net.fc2.bias.copy_(self.b2[row, 0])
        return net


def _order(stacks: _Stacks, n: int, device: torch.device) -> torch.Tensor:
    """This epoch's data order: (n,) when shared, else (K, n); drawn on the CPU as train.fit draws it."""
    if stacks.shared_order:
        perm = torch.randperm(n, generator=stacks.gens[0])
        for g in stacks.gens[1:]:  # keep every generator in step, as if each member drew its own
            torch.randperm(n, generator=g)
        return perm.to(device)
    order = torch.stack([torch.randperm(n, generator=g) for g in stacks.gens])
    if device.type == "cuda":
        order = order.pin_memory()
    return order.to(device, non_blocking=True)


def _step(p: _Stacks, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of every member; returns each member's summed batch loss and correct count, (K,) each, no sync.

    ``xb``/``yb`` are (B, 784)/(B,) when the members share the batch, else (K, B, 784)/(K, B).
    """
    k, hidden = p.w1.shape[0], p.w1.shape[1]
    shared = xb.dim() == 2
    b = yb.shape[-1]
    if shared:  # one (B, 784) x (784, K*hidden) matmul for the whole population
        h = torch.mm(xb, p.w1.reshape(k * hidden, IN_FEATURES).t()).view(b, k, hidden).transpose(0, 1)
        y3 = yb.view(1, b, 1).expand(k, b, 1)
    else:
        h = torch.bmm(xb, p.w1.mT)
        y3 = yb.unsqueeze(2)
    h = torch.addcmul(p.b1, h, p.scale).clamp_(min=0)  # (K, B, hidden): scale * (x @ w1.T) + b1
    out = torch.baddbmm(p.b2, h, p.w2.mT)  # (K, B, 10)
    lse = out.logsumexp(2, keepdim=True)
    loss = (lse - out.gather(2, y3)).sum((1, 2))
    hits = (out.argmax(2, keepdim=True) == y3).sum((1, 2))
    g_out = (out - lse).exp_()  # softmax
    g_out.scatter_add_(2, y3, torch.full(y3.shape, -1.0, device=g_out.device))
    g_out.div_(b)
    g_h = torch.bmm(g_out, p.w2).mul_(h > 0)  # (K, B, hidden), before w2 changes
    p.w2.mul_(p.keep_w).baddbmm_(g_out.mT, h, alpha=-lr)
    p.b2.mul_(p.keep_b).sub_(g_out.sum(1, keepdim=True), alpha=lr)
    p.b1.mul_(p.keep_b).sub_(g_h.sum(1, keepdim=True), alpha=lr)
    if p.scaled:  # scale*w1 <- keep*scale*w1 - lr*g:  scale <- keep*scale,  w1 <- w1 - (lr/scale)*g
        p.scale.mul_(p.keep_w)
        g_h = g_h * (lr / p.scale)
        step = 1.0
    else:
        p.w1.mul_(p.keep_w)
        step = lr
    if shared:
        p.w1.view(k * hidden, IN_FEATURES).addmm_(g_h.transpose(1, 2).reshape(k * hidden, b), xb, alpha=-step)
    else:
        p.w1.baddbmm_(g_h.mT, xb, alpha=-step)
    return loss, hits


@torch.no_grad()
def _evaluate(p: _Stacks, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct counts of every member on (x, y), shapes (K,); no sync."""
    k, hidden = p.w1.shape[0], p.w1.shape[1]
    loss = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    rows = max(1, min(EVAL_CHUNK, EVAL_ELEMENTS // (k * hidden)))
    w1 = p.w1.reshape(k * hidden, IN_FEATURES).t()
    b1 = p.b1.reshape(1, k * hidden)
    for xs, ys in zip(x.split(rows), y.split(rows), strict=True):
        m = ys.shape[0]
        h = torch.addmm(b1, xs, w1).view(m, k, hidden).transpose(0, 1).clamp_(min=0)
        out = torch.baddbmm(p.b2, h, p.w2.mT)  # (K, m, 10)
        ce = F.cross_entropy(out.reshape(k * m, CLASSES), ys.repeat(k), reduction="none")
        loss += ce.view(k, m).sum(1)
        correct += (out.argmax(2) == ys).sum(1)
    return loss, correct


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
    on_epoch: PopulationCallback | None = None,
    return_models: bool = False,
) -> list[MemberResult]:
    """Train one SimpleNet per (lambda, seed) pair together; results in the order of ``lams``.

    The callback sees each epoch's figures and returns the members to stop (pruned).
    A member whose training loss is NaN or infinite fails alone (``fail_reason``).
    """
    if cfg.penalty != "l2":
        raise ConfigError(
            f"population training supports train.penalty = 'l2' only, got {cfg.penalty!r}; "
            "use search.batch = 1 for other penalties"
        )
    if len(lams) != len(seeds) or not lams:
        raise ValueError(f"need one seed per lambda and at least one member, got {len(lams)} and {len(seeds)}")
    device = x_fit.device
    stacks = _Stacks(lams, seeds, hidden=hidden, lr=cfg.lr, decay_bias=cfg.decay_bias, device=device)
    results = [MemberResult(lam=float(lam), seed=int(s)) for lam, s in zip(lams, seeds, strict=True)]
    n = int(y_fit.shape[0])
    for epoch in range(1, cfg.epochs + 1):
        if not len(stacks):
            break
        start = time.perf_counter()
        order = _order(stacks, n, device)
        total = torch.zeros(len(stacks), device=device)
        fit_correct = torch.zeros(len(stacks), device=device, dtype=torch.long)
        with torch.no_grad():
            for i, s in enumerate(range(0, n, cfg.batch_size), start=1):
                idx = order[..., s:s + cfg.batch_size]
                loss, hits = _step(stacks, x_fit[idx], y_fit[idx], cfg.lr)
                total += loss
                fit_correct += hits
                if i % stacks.renorm_every == 0:
                    stacks.fold_scale()
            stacks.fold_scale()
        cols = [total, fit_correct]  # running training figures, as train.fit reports them
        if x_val is not None and y_val is not None:
            cols += _evaluate(stacks, x_val, y_val)
        # Divided in double after one read, as train.fit's float(sum) / n does.
        sums = torch.stack([c.double() for c in cols]).tolist()
        n_val = max(int(y_val.shape[0]), 1) if y_val is not None else 1
        figures = [[v / d for v in col] for col, d in zip(sums, (n, n, n_val, n_val), strict=False)]
        if len(figures) == 2:
            figures += [[nan] * len(stacks)] * 2
        share = (time.perf_counter() - start) / len(stacks)  # each member's share of the epoch's wall time
        stats: dict[int, EpochStats] = {}
        failed: dict[int, str] = {}
        keep: list[int] = []
        for row, member in enumerate(stacks.members):
            train_loss, train_acc, v_loss, v_acc = (col[row] for col in figures)
            if not isfinite(train_loss):
                failed[member] = (f"training loss became {train_loss} in epoch {epoch} at lambda {lams[member]:.3g}; "
                                  "lower train.lr or the lambda range")
                results[member].state, results[member].fail_reason = "failed", failed[member]
                continue
            stats[member] = EpochStats(epoch, train_loss, train_acc, v_loss, v_acc, share)
            results[member].history.append(stats[member])
            keep.append(row)
        stop = set(on_epoch(PopulationEpoch(epoch, stats, failed)) or ()) if on_epoch is not None else set()
        for member in stop & stats.keys():
            results[member].state = "pruned"
        keep = [row for row in keep if stacks.members[row] not in stop]
        if len(keep) < len(stacks):
            stacks.keep_rows(keep)
    if return_models:
        for row, member in enumerate(stacks.members):
            results[member].model = stacks.model(row)
    return results


def member_bytes(*, hidden: int, batch_size: int, n_fit: int) -> int:
    """Rough device memory one member needs while training (weights, step temporaries, its data order)."""
    params = hidden * IN_FEATURES + hidden + CLASSES * hidden + CLASSES
    step = batch_size * (IN_FEATURES + 4 * hidden + 4 * CLASSES)
    return 4 * (3 * params + step) + 8 * n_fit


def auto_size(device: torch.device, *, hidden: int, batch_size: int, n_fit: int) -> int:
    """Members per population for ``search.batch = "auto"``: half the free CUDA memory, or a CPU default."""
    if device.type != "cuda":
        return CPU_AUTO_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    per = member_bytes(hidden=hidden, batch_size=batch_size, n_fit=n_fit)
    return max(1, min(CUDA_AUTO_CAP, int(free // 2 // per)))
