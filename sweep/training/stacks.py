"""The arithmetic of a SimpleNet population: stacked weights, one SGD step of every member, evaluation.

``population.py`` owns the API and the epoch loop; this module owns the tensors. A
``Cohort`` holds the members whose fit sets have the same size (so every step has
the same batch size for all of them), stacked group-major: a *group* is the members
that share a fit set and a seed, hence each batch. With G groups of m members each,
the first layer is one batched matmul (G, B, 784) x (G, 784, m*hidden): one wide
matmul per group, all groups in one call. G = 1 is a holdout study (every lambda
shares the batch); m = 1 is "every member its own data order". Groups of unequal
size (after a failure) fall back to m = 1, each member gathering its group's batch.

Weight decay: w1 is kept as ``scale * w1`` with one scale per member, so a step
multiplies a (K, 1, 1) scale by ``1 - lr*lam`` instead of rewriting every first-layer
weight; the scale is folded back before it can underflow and at every epoch's end.
Nothing here reads a value back to the host: on CUDA an epoch runs without a sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sweep.training.model import CLASSES, IN_FEATURES, SimpleNet, init_simplenet

EVAL_CHUNK = 8192
EVAL_ELEMENTS = 1 << 26  # hidden activations per evaluation chunk (256 MB of float32)


@dataclass(frozen=True)
class FitSet:
    """One fit set and its validation set, as tensors on the device.

    ``rows`` indexes the fit examples in ``x``/``y`` (None: all of them), so k CV folds share
    one copy of the training set; the validation sets of the k folds together are one more copy.
    """

    x: torch.Tensor  # (N, 784) float images
    y: torch.Tensor  # (N,) labels
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    rows: torch.Tensor | None = None  # (n,) long indices into x/y, on x's device

    @property
    def n(self) -> int:
        return int(self.rows.shape[0]) if self.rows is not None else int(self.y.shape[0])


class Cohort:
    """Members whose fit sets have one size, stacked group-major; see the module docstring."""

    def __init__(self, sets: Sequence[FitSet], spec: Sequence[tuple[int, float, int, int]], *, hidden: int,
                 lr: float, decay_bias: bool, device: torch.device) -> None:
        """``spec``: (member index, lambda, seed, fit set index) of each member; all sets of one size."""
        rows = sorted(spec, key=lambda s: (s[3], s[2], s[0]))  # group-major: by fit set, then seed
        self.sets = sets
        self.n = sets[rows[0][3]].n
        nets = [init_simplenet(hidden, seed) for _, _, seed, _ in rows]
        self.w1 = torch.stack([m.fc1.weight.data for m in nets]).to(device)
        self.b1 = torch.stack([m.fc1.bias.data for m in nets]).unsqueeze(1).to(device)
        self.w2 = torch.stack([m.fc2.weight.data for m in nets]).to(device)
        self.b2 = torch.stack([m.fc2.bias.data for m in nets]).unsqueeze(1).to(device)
        # The factor 1 - lr*lam is computed in double, then rounded once, as the single trainer's scalar is.
        keep = torch.tensor([1.0 - lr * lam for _, lam, _, _ in rows], dtype=torch.float64).to(torch.float32)
        self.keep_w = keep.view(-1, 1, 1).to(device)
        self.keep_b = self.keep_w if decay_bias else torch.ones_like(self.keep_w)
        self.scale = torch.ones_like(self.keep_w)
        smallest = float(self.keep_w.abs().min())
        # Where 1 - lr*lam is near 0 or negative (a diverging set-up) the weights are decayed directly.
        self.scaled = smallest > 1e-3
        # Fold the scale back into w1 before it can underflow (|keep|^steps stays above 1e-12).
        self.renorm_every = max(1, int(-12 / math.log10(smallest))) if self.scaled and smallest < 1 else 1 << 62
        self.members = [r[0] for r in rows]  # member index of each stacked row
        self.keys = [(r[3], r[2]) for r in rows]  # (fit set, seed) of each row
        self.gens = {key: torch.Generator().manual_seed(key[1]) for key in dict.fromkeys(self.keys)}
        self._regroup()

    def _regroup(self) -> None:
        groups = list(dict.fromkeys(self.keys))
        sizes = [self.keys.count(g) for g in groups]
        self.groups = groups
        self.m = sizes[0] if len(set(sizes)) == 1 else 1  # members per group in the grouped matmul
        index = {g: i for i, g in enumerate(groups)}
        self.row_group = torch.tensor([index[k] for k in self.keys], device=self.w1.device)
        x0 = self.sets[groups[0][0]].x
        self.source = x0 if all(self.sets[s].x is x0 for s, _ in groups) else None

    def __len__(self) -> int:
        return len(self.members)

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the stacked rows ``rows`` (positions); the others stop costing compute."""
        index = torch.tensor(rows, device=self.w1.device, dtype=torch.long)
        self.fold_scale()
        for name in ("w1", "b1", "w2", "b2", "keep_w", "keep_b", "scale"):
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
        """This epoch's data order of each group, (G, n) indices into its set's x; drawn on the CPU as train.fit
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
        """Images (G, B, 784) and labels (G, B) of the groups' batch ``idx`` (G, B)."""
        if self.source is not None:
            return self.source[idx], self.sets[self.groups[0][0]].y[idx]
        xs = [self.sets[s].x[i] for (s, _), i in zip(self.groups, idx, strict=True)]
        ys = [self.sets[s].y[i] for (s, _), i in zip(self.groups, idx, strict=True)]
        return torch.stack(xs), torch.stack(ys)

    def set_slices(self) -> list[tuple[int, int, int]]:
        """(fit set, first row, end row) of each fit set's contiguous rows."""
        out: list[tuple[int, int, int]] = []
        for row, (s, _) in enumerate(self.keys):
            if out and out[-1][0] == s:
                out[-1] = (s, out[-1][1], row + 1)
            else:
                out.append((s, row, row + 1))
        return out

    def model(self, row: int) -> SimpleNet:
        net = SimpleNet(self.w1.shape[1]).to(self.w1.device)
        with torch.no_grad():
            net.fc1.weight.copy_(self.w1[row])
            net.fc1.bias.copy_(self.b1[row, 0])
            net.fc2.weight.copy_(self.w2[row])
            net.fc2.bias.copy_(self.b2[row, 0])
        return net


def step(p: Cohort, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of every member on its group's batch (``xb`` (G, B, 784), ``yb`` (G, B)).

    Returns each member's summed batch loss and correct count, (K,) each, with no host sync.
    """
    k, hidden = p.w1.shape[0], p.w1.shape[1]
    m = p.m
    if m == 1 and xb.shape[0] != k:  # unequal groups: each member gathers its group's batch
        xb, yb = xb.index_select(0, p.row_group), yb.index_select(0, p.row_group)
    g, b = xb.shape[0], yb.shape[1]
    if g == 1:  # one group (holdout): a plain (B, 784) x (784, K*hidden) matmul, faster on a CPU than a bmm of one
        h = torch.mm(xb[0], p.w1.view(k * hidden, IN_FEATURES).t()).view(b, k, hidden).transpose(0, 1)
        h = torch.addcmul(p.b1, h, p.scale).clamp_(min=0)
        y3 = yb.view(1, b, 1).expand(k, b, 1)
    else:  # one (B, 784) x (784, m*hidden) matmul per group, all groups in one call: (G, B, m*hidden)
        h = torch.bmm(xb, p.w1.view(g, m * hidden, IN_FEATURES).mT).view(g, b, m, hidden).transpose(1, 2)
        h = torch.addcmul(p.b1.view(g, m, 1, hidden), h, p.scale.view(g, m, 1, 1)).clamp_(min=0).reshape(k, b, hidden)
        y3 = yb.view(g, 1, b, 1).expand(g, m, b, 1).reshape(k, b, 1)
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
        alpha = 1.0
    else:
        p.w1.mul_(p.keep_w)
        alpha = lr
    if g == 1:
        p.w1.view(k * hidden, IN_FEATURES).addmm_(g_h.transpose(1, 2).reshape(k * hidden, b), xb[0], alpha=-alpha)
    else:
        grad = g_h.view(g, m, b, hidden).permute(0, 1, 3, 2).reshape(g, m * hidden, b)
        p.w1.view(g, m * hidden, IN_FEATURES).baddbmm_(grad, xb, alpha=-alpha)
    return loss, hits


@torch.no_grad()
def evaluate(p: Cohort, start: int, end: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct counts of rows ``start:end`` on (x, y), shapes (end - start,); no sync."""
    k, hidden = end - start, p.w1.shape[1]
    loss = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    rows = max(1, min(EVAL_CHUNK, EVAL_ELEMENTS // (k * hidden)))
    w1 = p.w1[start:end].reshape(k * hidden, IN_FEATURES).t()
    b1 = p.b1[start:end].reshape(1, k * hidden)
    b2, w2t = p.b2[start:end], p.w2[start:end].mT
    for xs, ys in zip(x.split(rows), y.split(rows), strict=True):
        m = ys.shape[0]
        h = torch.addmm(b1, xs, w1).view(m, k, hidden).transpose(0, 1).clamp_(min=0)
        out = torch.baddbmm(b2, h, w2t)  # (k, m, 10)
        ce = F.cross_entropy(out.reshape(k * m, CLASSES), ys.repeat(k), reduction="none")
        loss += ce.view(k, m).sum(1)
        correct += (out.argmax(2) == ys).sum(1)
    return loss, correct
