"""The arithmetic of an MLP population: stacked weights, one SGD step of every member, evaluation.

The network is any stack of ``nn.Linear`` layers with ReLU between them: SimpleNet
(784-hidden-10) and ``model.arch = "mlp"`` (any number of hidden layers). Members are built
by the caller's ``build(seed)``; the stacks take its ``Linear`` layers in order.

``population.py`` owns the API and the epoch loop; this module owns the tensors. A
``Cohort`` holds the members whose fit sets have the same size (so every step has
the same batch size for all of them), stacked group-major: a *group* is the members
that share a fit set and a seed, hence each batch. With G groups of m members each,
the first layer is one batched matmul (G, B, features) x (G, features, m*width): one wide
matmul per group, all groups in one call, and its weight gradient is one wide
accumulate into the weights (``addmm_``/``baddbmm_``: the GEMM adds into w, no gradient
tensor). The first layer is the big one (784 inputs) and the one whose gradient has the
shortest inner dimension (the batch), so this layout is what keeps it near the matmul rate;
later layers are one bmm per layer over the members. G = 1 is a holdout study (every lambda
shares the batch); m = 1 is "every member its own data order". Groups of unequal
size (after a failure) fall back to m = 1, each member gathering its group's batch.

Weight decay: the first layer's weights are kept as ``scale * w`` with one scale per member, so a
step multiplies a (K, 1, 1) scale by ``1 - lr*lam`` instead of rewriting every first-layer
weight; the scale is folded back before it can underflow and at every epoch's end.
Nothing here reads a value back to the host: on CUDA an epoch runs without a sync.
On a CPU a 2-layer network's step runs its small operations as one C call (``sweep.training.fused``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweep.training import fused
from sweep.training.fit import shrink_factors

EVAL_CHUNK = 8192
EVAL_ELEMENTS = 1 << 26  # hidden activations per evaluation chunk (256 MB of float32)


@dataclass(frozen=True)
class FitSet:
    """One fit set and its validation set, as tensors on the device.

    ``rows`` indexes the fit examples in ``x``/``y`` (None: all of them), so k CV folds share
    one copy of the training set; the validation sets of the k folds together are one more copy.
    """

    x: torch.Tensor  # (N, ...) float examples (flattened by the first layer)
    y: torch.Tensor  # (N,) labels
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    rows: torch.Tensor | None = None  # (n,) long indices into x/y, on x's device

    @property
    def n(self) -> int:
        return int(self.rows.shape[0]) if self.rows is not None else int(self.y.shape[0])


class Cohort:
    """Members whose fit sets have one size, stacked group-major; see the module docstring."""

    def __init__(self, sets: Sequence[FitSet], spec: Sequence[tuple[int, float, int, int]], *,
                 build: Callable[[int], nn.Module], lr: float, decay_bias: bool, device: torch.device) -> None:
        """``spec``: (member index, lambda, seed, fit set index) of each member; all sets of one size.
        ``build(seed)``: a fresh member network, whose ``nn.Linear`` layers (in order, ReLU between) are stacked."""
        rows = sorted(spec, key=lambda s: (s[3], s[2], s[0]))  # group-major: by fit set, then seed
        self.sets = sets
        self.build = build
        self.n = sets[rows[0][3]].n
        nets = [linears(build(seed)) for _, _, seed, _ in rows]
        self.ws = [torch.stack([net[i].weight.data for net in nets]).to(device) for i in range(len(nets[0]))]
        self.bs = [torch.stack([net[i].bias.data for net in nets]).unsqueeze(1).to(device) for i in range(len(nets[0]))]
        self._set_w1(self.ws[0])
        # The factor 1 - lr*lam rounded once, as the single trainer's scalar is.
        self.shrink_w = shrink_factors([lam for _, lam, _, _ in rows], lr).view(-1, 1, 1).to(device)
        self.shrink_b = self.shrink_w if decay_bias else torch.ones_like(self.shrink_w)
        self.scale = torch.ones_like(self.shrink_w)
        self.minus_one = torch.full((1, 1, 1), -1.0, device=device)  # the one-hot's scatter source, expanded per step
        smallest = float(self.shrink_w.abs().min())
        # Where 1 - lr*lam is near 0 or negative (a diverging set-up) the weights are decayed directly.
        self.scaled = smallest > 1e-3
        # Fold the scale back into w1 before it can underflow (|shrink|^steps stays above 1e-12).
        self.renorm_every = max(1, int(-12 / math.log10(smallest))) if self.scaled and smallest < 1 else 1 << 62
        self.members = [r[0] for r in rows]  # member index of each stacked row
        self.keys = [(r[3], r[2]) for r in rows]  # (fit set, seed) of each row
        self.gens = {key: torch.Generator().manual_seed(key[1]) for key in dict.fromkeys(self.keys)}
        self._regroup()

    @property
    def w1(self) -> torch.Tensor:
        """The first layer's stacked weights, (K, width, features), times ``scale`` per member: a view of ``w1t``."""
        return self.ws[0]

    def _set_w1(self, w1: torch.Tensor) -> None:
        """Store (K, width, features) weights as ``w1t`` (features, K*width), the layout the step's matmuls read."""
        k, width, features = w1.shape
        self.w1t = w1.permute(2, 0, 1).reshape(features, k * width).contiguous()
        self.ws[0] = self.w1t.view(features, k, width).permute(1, 2, 0)

    def _regroup(self) -> None:
        groups = list(dict.fromkeys(self.keys))
        sizes = [self.keys.count(g) for g in groups]
        self.groups = groups
        self.m = sizes[0] if len(set(sizes)) == 1 else 1  # members per group in the grouped matmul
        index = {g: i for i, g in enumerate(groups)}
        self.row_group = torch.tensor([index[k] for k in self.keys], device=self.w1.device)
        x0 = self.sets[groups[0][0]].x
        self.source = x0.reshape(x0.shape[0], -1) if all(self.sets[s].x is x0 for s, _ in groups) else None
        # The step's views of the first layer, made once here (they follow the tensors' in-place updates):
        # bias and scale as (G, 1, m, 1|width), for the first layer's output in its matmul's layout (G, B, m, width).
        g, width = len(self) // self.m, self.w1.shape[1]
        self.bias0 = self.bs[0].view(g, self.m, 1, width).transpose(1, 2)
        self.scale0 = self.scale.view(g, self.m, 1, 1).transpose(1, 2)
        self.fused = fused.prepare(self.ws, self.bs, scale=self.scale, shrink_w=self.shrink_w, shrink_b=self.shrink_b,
                                   scaled=self.scaled)

    def __len__(self) -> int:
        return len(self.members)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the stacked rows ``rows`` (positions); the others stop costing compute."""
        index = torch.tensor(rows, device=self.w1.device, dtype=torch.long)
        self.fold_scale()
        self.ws = [w.index_select(0, index) for w in self.ws]
        self._set_w1(self.ws[0])
        self.bs = [b.index_select(0, index) for b in self.bs]
        for name in ("shrink_w", "shrink_b", "scale"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.members = [self.members[r] for r in rows]
        self.keys = [self.keys[r] for r in rows]
        if rows:
            self._regroup()

    def fold_scale(self) -> None:
        """Make ``w1`` the real weights again (scale 1)."""
        self.w1.mul_(self.scale)
        self.scale.fill_(1.0)

    def order(self) -> torch.Tensor:
        """This epoch's data order of each group, (G, n) indices into its set's x; drawn on the CPU as fit.fit
        draws it, copied to the device once, mapped to the fold's rows there (no host sync)."""
        device = self.w1.device
        perms = torch.stack([torch.randperm(self.n, generator=self.gens[key]) for key in self.groups])
        if device.type == "cuda":
            perms = perms.pin_memory()
        perms = perms.to(device, non_blocking=True)
        if all(self.sets[s].rows is None for s, _ in self.groups):
            return perms
        return torch.stack([rows[p] if (rows := self.sets[s].rows) is not None else p
                            for (s, _), p in zip(self.groups, perms, strict=True)])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples (G, B, features) and labels (G, B) of the groups' batch ``idx`` (G, B)."""
        if self.source is not None:  # index_select of rows: about 3x faster than x[idx] for a batch of 64
            flat = idx.reshape(-1)
            xb = self.source.index_select(0, flat).view(*idx.shape, -1)
            return xb, self.sets[self.groups[0][0]].y.index_select(0, flat).view(idx.shape)
        xb = torch.stack([self.sets[s].x[i] for (s, _), i in zip(self.groups, idx, strict=True)])
        yb = torch.stack([self.sets[s].y[i] for (s, _), i in zip(self.groups, idx, strict=True)])
        return xb.flatten(2), yb

    def set_slices(self) -> list[tuple[int, int, int]]:
        """(fit set, first row, end row) of each fit set's contiguous rows."""
        out: list[tuple[int, int, int]] = []
        for row, (s, _) in enumerate(self.keys):
            if out and out[-1][0] == s:
                out[-1] = (s, out[-1][1], row + 1)
            else:
                out.append((s, row, row + 1))
        return out

    def model(self, row: int) -> nn.Module:
        """Row ``row`` as a network of its own (call ``fold_scale`` first)."""
        net = self.build(self.keys[row][1]).to(self.w1.device)
        with torch.no_grad():
            for layer, w, b in zip(linears(net), self.ws, self.bs, strict=True):
                layer.weight.copy_(w[row])
                layer.bias.copy_(b[row, 0])
        return net


def linears(net: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of ``net`` in order: the layers a population stacks."""
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def step(p: Cohort, xb: torch.Tensor, yb: torch.Tensor, lr: float, losses: torch.Tensor, hits: torch.Tensor) -> None:
    """One SGD step of every member on its group's batch (``xb`` (G, B, features), ``yb`` (G, B)).

    Writes each member's per-example loss into ``losses`` and whether it was right into ``hits``
    ((K, B, 1) each: slots of the epoch's buffers, summed once at its end), with no host sync. At
    the quick start's K = 5 each PyTorch call costs about as much as its arithmetic, so the step is
    written for few calls on contiguous tensors:

    - the first layer's output stays in the layout its matmul writes, (G, B, m, width), and its
      weights are ``w1t`` (features, K*width), so neither matmul needs a transposed copy;
    - the mean over the batch is folded into the learning rate (1/B: exact for a power-of-two batch);
    - the ReLU's backward is one call (``threshold_backward``), the softmax's a few (``log_softmax``
      over 10 classes is slower than its parts on a CPU); losses and hits are summed per epoch, not per step;
    - on a CPU, for a 2-layer network, everything between the two matmuls is one C call (``fused.tail``,
      about 0.1 ms against 0.25-0.4 ms for the calls of ``_tail``); elsewhere ``_tail`` runs.
    """
    k, width, features = p.w1.shape
    m = p.m
    if m == 1 and xb.shape[0] != k:  # unequal groups: each member gathers its group's batch
        xb, yb = xb.index_select(0, p.row_group), yb.index_select(0, p.row_group)
    g, b = xb.shape[0], yb.shape[1]
    rate = lr / b  # the gradient below is of the summed loss; the mean's 1/B rides on the learning rate
    # One group (holdout): a plain (B, F) x (F, K*width) matmul, faster on a CPU than a bmm of one;
    # else one (B, F) x (F, m*width) matmul per group, all groups in one call.
    first_matmul = torch.mm(xb[0], p.w1t) if g == 1 else torch.bmm(xb, p.w1t.view(features, g, m * width).transpose(0, 1))
    # The CPU fast path: the rest up to the first layer's update in one C call.
    if p.fused is not None:
        grad = fused.tail(p.fused, first_matmul, yb, rate, losses, hits)
    else:
        grad = _tail(p, first_matmul, yb, rate, losses, hits)
    if not p.scaled:
        p.w1.mul_(p.shrink_w)
    if g == 1:
        p.w1t.addmm_(xb[0].t(), grad.view(b, k * width), alpha=-rate)
    else:
        p.w1t.view(features, g, m * width).transpose(0, 1).baddbmm_(xb.mT, grad.view(g, b, m * width), alpha=-rate)


def _tail(p: Cohort, first_matmul: torch.Tensor, yb: torch.Tensor, rate: float, losses: torch.Tensor,
          hits: torch.Tensor) -> torch.Tensor:
    """The step after the first layer's matmul ``first_matmul``, up to its update, in PyTorch calls (any depth, any
    device); returns the first layer's output gradient in ``first_matmul``'s layout (G, B, m, width), over the new scale."""
    k, width, _ = p.w1.shape
    m = p.m
    g, b = yb.shape
    h = torch.addcmul(p.bias0, first_matmul.view(g, b, m, width), p.scale0).clamp_(min=0)  # (G, B, m, width)
    acts = [_members(h)]  # each later layer's input, (K, B, width_i), kept for its weight gradient
    y3 = yb.view(g, 1, b, 1).expand(g, m, b, 1).reshape(k, b, 1)
    for w, bias in zip(p.ws[1:-1], p.bs[1:-1], strict=True):
        acts.append(torch.baddbmm(bias, acts[-1], w.mT).clamp_(min=0))
    out = torch.baddbmm(p.bs[-1], acts[-1], p.ws[-1].mT)  # (K, B, classes)
    torch.eq(out.argmax(2, keepdim=True), y3, out=hits)
    shifted = out.sub_(out.amax(2, keepdim=True))
    grad = shifted.exp()
    total = grad.sum(2, keepdim=True)
    torch.sub(total.log(), shifted.gather(2, y3), out=losses)  # cross-entropy: log-sum-exp minus the label's logit
    grad = grad.div_(total).scatter_add_(2, y3, p.minus_one.expand(y3.shape))  # softmax - onehot
    for i in range(len(p.ws) - 1, 0, -1):  # layers after the first, last to second: grad is d loss / d output
        below = torch.bmm(grad, p.ws[i])  # before w_i changes
        if i > 1:
            below = torch.ops.aten.threshold_backward(below, acts[i - 1], 0)
        p.ws[i].mul_(p.shrink_w).baddbmm_(grad.mT, acts[i - 1], alpha=-rate)
        p.bs[i].mul_(p.shrink_b).sub_(grad.sum(1, keepdim=True), alpha=rate)
        grad = below
    # The first layer's gradient, in h's layout (G, B, m, width), through its ReLU.
    grad = torch.ops.aten.threshold_backward(grad.view(g, m, b, width).transpose(1, 2).contiguous(), h, 0)
    p.bs[0].mul_(p.shrink_b).sub_(grad.sum(1).view(k, 1, width), alpha=rate)
    if p.scaled:  # scale*w1 <- shrink*scale*w1 - rate*g:  scale <- shrink*scale,  w1 <- w1 - rate*(g/scale)
        p.scale.mul_(p.shrink_w)
        grad.div_(p.scale0)
    return grad


def _members(h: torch.Tensor) -> torch.Tensor:
    """(G, B, m, width) as (K = G*m, B, width), member-major: a view unless both G and m exceed 1."""
    g, b, m, width = h.shape
    return h.permute(0, 2, 1, 3).reshape(g * m, b, width)


@torch.no_grad()
def evaluate(p: Cohort, start: int, end: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct counts of rows ``start:end`` on (x, y), shapes (end - start,); no sync."""
    k, width = end - start, p.w1.shape[1]
    loss = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    rows = max(1, min(EVAL_CHUNK, EVAL_ELEMENTS // (k * max(w.shape[1] for w in p.ws))))
    w1 = p.w1t[:, start * width:end * width]
    b1 = p.bs[0][start:end].reshape(1, k * width)
    for xs, ys in zip(x.flatten(1).split(rows), y.split(rows), strict=True):
        n = ys.shape[0]
        h = torch.addmm(b1, xs, w1).view(n, k, width).transpose(0, 1).clamp_(min=0)
        for w, bias in zip(p.ws[1:-1], p.bs[1:-1], strict=True):
            h = torch.baddbmm(bias[start:end], h, w[start:end].mT).clamp_(min=0)
        out = torch.baddbmm(p.bs[-1][start:end], h, p.ws[-1][start:end].mT)  # (k, n, classes)
        ce = F.cross_entropy(out.flatten(0, 1), ys.repeat(k), reduction="none")
        loss += ce.view(k, n).sum(1)
        correct += (out.argmax(2) == ys).sum(1)
    return loss, correct
