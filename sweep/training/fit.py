"""Fit one network for one lambda: penalties, epochs, evaluation, an epoch callback.

Data arrive as float tensors already on the device (see ``data.to_device``);
each epoch draws a seeded permutation and walks it in slices, with no DataLoader.

Penalty forms (``lam`` is lambda):

- ``l2``: adds ``lam*w`` to the gradient (SGD's ``weight_decay=lam``, and Adam's), which is the
  gradient of ``(lam/2)*||w||^2`` (the seed's formula ``lam*||w||^2`` would need ``2*lam``).
- ``l2-loss``: ``(lam/2)*||w||^2`` added to the loss; for plain SGD the same weights as ``l2``.
- ``l2-decoupled``: ``w *= 1 - lr_t*lam`` before each step (AdamW's decoupled decay, for any optimiser).
- ``l1``: ``lam*||w||_1`` added to the loss.
- ``elastic-net``: ``lam*(r*||w||_1 + (1-r)/2*||w||^2)`` with ``r = l1_ratio``.

``decay_bias = false`` decays only tensors with ``p.dim() >= 2`` (weight matrices and
convolution kernels, nanoGPT's ``configure_optimizers`` rule). ``optimizers.Stepper`` applies the
step forms with ``train.optimizer``, its schedule and clipping (docs/recipes.md).

For SimpleNet the seed's recipe (plain SGD, ``l2``, constant rate, no clipping) runs on a hand-derived forward/backward,
about twice as fast on a CPU as autograd for this tiny network; every other network and
form uses autograd and ``torch.optim``. A test shows both paths give the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from math import nan

import torch

from sweep.config import TrainConfig
from sweep.errors import DeviceError, TrainingDivergedError
from sweep.training import losses, optimizers, rng
from sweep.training.model import SimpleNet, init_simplenet
from sweep.training.models import Net

EVAL_CHUNK = 8192


@dataclass(frozen=True)
class EpochStats:
    """The figures of one epoch of one fit."""

    epoch: int  # 1-based
    train_loss: float  # mean training loss over the epoch's batches (penalty excluded)
    train_acc: float  # running accuracy over the epoch's training batches (as the loss), before each step
    val_loss: float
    val_acc: float
    seconds: float


@dataclass(frozen=True)
class FitResult:
    """A fit's per-epoch figures and, when it finished, its model."""

    history: list[EpochStats] = field(default_factory=list)
    model: torch.nn.Module | None = None

    @property
    def final(self) -> EpochStats:
        return self.history[-1]


EpochCallback = Callable[[EpochStats], None]


def resolve_device(spec: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; an absent CUDA device is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise DeviceError(
                f"train.device = {spec!r} but this machine has {count} CUDA device(s); "
                "set train.device = 'auto' or 'cpu'"
            )
    return torch.device(spec)


def steps_per_epoch(n: int, cfg: TrainConfig) -> int:
    """Batches (optimiser steps) in one epoch of ``n`` examples: the schedule's unit."""
    return max(1, math.ceil(n / cfg.batch_size))


def _batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen).to(device)
    yield from order.split(batch_size)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             cfg: TrainConfig | None = None) -> tuple[float, float]:
    """(mean evaluation loss, accuracy) of ``model`` on ``x``, ``y``, in eval mode (no dropout; BatchNorm's running
    statistics), which it leaves the model in. The loss is ``cfg.loss``'s plain form (cross-entropy by default,
    see ``losses``); a regression's accuracy is NaN."""
    loss_fn = losses.REGISTRY[cfg.loss if cfg is not None else "cross-entropy"]
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xs, ys in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK), strict=True):
        out = model(xs)
        loss += loss_fn.plain(out, ys)
        if loss_fn.classifies:
            correct += (out.argmax(1) == ys).sum()
    n = max(int(y.shape[0]), 1)
    return float(loss) / n, float(correct) / n if loss_fn.classifies else nan


def decayed(p: torch.Tensor, decay_bias: bool) -> bool:
    """Whether lambda applies to ``p``: every tensor, or (``decay_bias = false``) those with ``p.dim() >= 2`` (nanoGPT).
    Every trainer and the Laplace prior group parameters by this one rule."""
    return decay_bias or p.dim() >= 2


def shrink_factors(lams: Sequence[float], lr: float) -> torch.Tensor:
    """Each lambda's ``1 - lr*lam``: the factor coupled SGD decay (and AdamW's) multiplies a decayed tensor by
    each step. Computed in double and rounded once to float32, as torch.optim's scalar is."""
    return torch.tensor([1.0 - lr * lam for lam in lams], dtype=torch.float64).to(torch.float32)


def _penalty_params(model: torch.nn.Module, decay_bias: bool) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(decayed, not decayed) parameters, as nanoGPT's configure_optimizers groups them."""
    decay = [p for p in model.parameters() if decayed(p, decay_bias)]
    undecayed = [p for p in model.parameters() if not decayed(p, decay_bias)]
    return decay, undecayed


LOSS_PENALTIES = ("l2-loss", "l1", "elastic-net")  # the train.penalty forms added to the loss, not to the step


def loss_penalty(cfg: TrainConfig, lam: float | torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The penalty the forms ``l2-loss``, ``l1`` and ``elastic-net`` add to the loss, on the decayed ``weights``
    (see the module docstring); None for the forms that act on the step instead (``l2``, ``l2-decoupled``).
    The single fit and the torch.func population both call it, so a member's loss is the single fit's."""
    if cfg.penalty not in LOSS_PENALTIES:
        return None
    sq = torch.stack([(w * w).sum() for w in weights]).sum()
    ab = torch.stack([w.abs().sum() for w in weights]).sum()
    if cfg.penalty == "l2-loss":
        return lam / 2 * sq
    if cfg.penalty == "l1":
        return lam * ab
    return lam * (cfg.l1_ratio * ab + (1 - cfg.l1_ratio) / 2 * sq)


def diverged(train_loss: float, *, epoch: int, lam: float) -> str:
    """The one line for a fit (or a population member) whose training loss turned NaN or infinite."""
    return f"training loss became {train_loss} in epoch {epoch} at lambda {lam:.3g}; lower train.lr or the lambda range"


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def uses_manual_backward(model: torch.nn.Module, cfg: TrainConfig) -> bool:
    """Whether the single fit steps with SimpleNet's hand-derived forward/backward (the seed's recipe: plain SGD,
    ``l2``, a constant rate, no clipping, plain cross-entropy) rather than autograd and ``torch.optim``."""
    return isinstance(model, SimpleNet) and cfg.seed_recipe and losses.plain_cross_entropy(cfg)


def make_step(model: torch.nn.Module, cfg: TrainConfig, lam: float, y_fit: torch.Tensor | None = None, *,
              steps_per_epoch: int) -> Step:
    """One training step for ``cfg``; returns the batch's summed data loss and correct count (no sync).
    The update (optimiser, penalty, clipping, schedule) is ``optimizers.Stepper``'s. ``y_fit``: the fit's
    targets, which ``train.class_weights = "balanced"`` counts."""
    loss_fn = losses.make_loss(cfg, y_fit) if y_fit is not None else losses.make_loss(cfg, torch.zeros(1, dtype=torch.long))
    decay, _ = _penalty_params(model, cfg.decay_bias)
    if uses_manual_backward(model, cfg):
        assert isinstance(model, SimpleNet)
        return _fast_l2_step(model, lr=cfg.lr, lam=lam, decay_bias=cfg.decay_bias)
    params = list(model.parameters())
    stepper = optimizers.Stepper(params, [decayed(p, cfg.decay_bias) for p in params], cfg, lam,
                                 steps_per_epoch=steps_per_epoch)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stepper.zero_grad()
        out = model(xb)
        data_loss = loss_fn(out, yb)
        penalty = loss_penalty(cfg, lam, decay)
        (data_loss if penalty is None else data_loss + penalty).backward()
        stepper.step()
        return data_loss.detach() * yb.shape[0], losses.hits(cfg, out.detach(), yb)

    return step


def _fast_l2_step(model: SimpleNet, *, lr: float, lam: float, decay_bias: bool) -> Step:
    """SGD with coupled weight decay, gradients written out for fc1-ReLU-fc2 + mean cross-entropy.

    Per parameter: ``w <- w - lr*(grad + lam*w)``, as ``torch.optim.SGD(weight_decay=lam)`` does.
    """
    w1, b1 = model.fc1.weight.data, model.fc1.bias.data
    w2, b2 = model.fc2.weight.data, model.fc2.bias.data
    shrink_w = 1.0 - lr * lam  # the factor a decayed tensor is multiplied by each step
    shrink_b = shrink_w if decay_bias else 1.0

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = yb.shape[0]
        h = torch.addmm(b1, xb, w1.t()).clamp_(min=0)
        out = torch.addmm(b2, h, w2.t())
        lse = out.logsumexp(1, keepdim=True)
        loss = (lse.squeeze(1) - out.gather(1, yb.unsqueeze(1)).squeeze(1)).sum()
        g_out = (out - lse).exp_()  # softmax
        g_out[torch.arange(n, device=yb.device), yb] -= 1.0
        g_out.div_(n)
        g_h = (g_out @ w2).mul_(h > 0)
        w2.mul_(shrink_w).addmm_(g_out.t(), h, alpha=-lr)
        b2.mul_(shrink_b).sub_(g_out.sum(0), alpha=lr)
        w1.mul_(shrink_w).addmm_(g_h.t(), xb, alpha=-lr)
        b1.mul_(shrink_b).sub_(g_h.sum(0), alpha=lr)
        return loss, (out.argmax(1) == yb).sum()

    return step


def fit(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_val: torch.Tensor | None,
    y_val: torch.Tensor | None,
    *,
    lam: float,
    cfg: TrainConfig,
    hidden: int = 128,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    net: Net | None = None,
) -> FitResult:
    """Train a fresh ``net`` (SimpleNet 784-``hidden``-10 when None; init and data order from ``seed``).

    ``on_epoch`` sees each epoch's figures and may raise to stop (pruning). Without
    validation data (the refit) the validation figures are NaN.
    Raises ``TrainingDivergedError`` when an epoch's loss is NaN or infinite.
    """
    device = x_fit.device
    model = (net.build(seed) if net is not None else init_simplenet(hidden, seed)).to(device)
    gen = torch.Generator().manual_seed(seed)
    step = make_step(model, cfg, lam, y_fit, steps_per_epoch=steps_per_epoch(int(y_fit.shape[0]), cfg))
    history: list[EpochStats] = []
    with rng.seeded(seed, device):  # dropout masks and any other noise: the same for every lambda of a study
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(model, step, x_fit, y_fit, gen, cfg)
            if not torch.isfinite(torch.tensor(train_loss)):
                raise TrainingDivergedError(diverged(train_loss, epoch=epoch, lam=lam))
            val_loss, val_acc = evaluate(model, x_val, y_val, cfg) if x_val is not None and y_val is not None else (nan, nan)
            stats = EpochStats(epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - start)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
    model.eval()
    return FitResult(history, model)


def train_epoch(model: torch.nn.Module, step: Step, x_fit: torch.Tensor, y_fit: torch.Tensor, gen: torch.Generator,
                cfg: TrainConfig) -> tuple[float, float]:
    """One epoch in training mode over a fresh seeded order; (mean training loss, accuracy), read once."""
    device, n = x_fit.device, int(y_fit.shape[0])
    model.train()
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with torch.set_grad_enabled(not uses_manual_backward(model, cfg)):
        for idx in _batches(n, cfg.batch_size, gen, device):
            loss, hits = step(x_fit[idx], y_fit[idx])
            total += loss
            correct += hits
    return float(total) / n, float(correct) / n if losses.loss_of(cfg).classifies else nan
