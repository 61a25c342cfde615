"""``train.optimizer`` and ``train.penalty`` as one step: clip, apply lambda, ``torch.optim`` step, schedule.

Every trainer that uses autograd (the single fit, the torch.func population, the member-by-member
population) steps through ``Stepper``, so a member's update is the single fit's by construction.
The optimiser is the ``torch.optim`` class of ``sweep.config.recipes.OPTIMIZERS`` with
``weight_decay = 0``: lambda enters here, the same way for every optimiser, before the step:

- ``l2``: ``g += lam * w`` on the decayed tensors (coupled: the optimiser's moments see it, as
  ``torch.optim``'s own ``weight_decay`` of SGD, Adam and RMSprop does);
- ``l2-decoupled``: ``w *= 1 - lr_t * lam`` on the decayed tensors with the scheduled rate ``lr_t``
  (AdamW's rule, for every optimiser; Adam with it is ``torch.optim.AdamW`` step for step);
- ``l2-loss``, ``l1``, ``elastic-net``: nothing here, the penalty is in the loss (``fit.loss_penalty``).

``train.clip_grad_norm`` clips the loss's gradient (penalty terms in the loss included) before the
coupled decay is added, as ``clip_grad_norm_`` before ``Adam(weight_decay=...).step()`` does.

Stacked (population) parameters carry a leading axis of K members, and ``lam`` is then a (K,)
tensor: lambda, the decay factor and the clipping norm are each member's own (a per-member norm
over its slices of every tensor). The optimisers listed update each element on its own, so one
optimiser over the stacks is K independent optimisers; its scalar state (Adam's step count) is
the same for every member because members step together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sweep.config import TrainConfig
from sweep.config.recipes import OPTIMIZERS
from sweep.training import schedules

CLIP_EPS = 1e-6  # clip_grad_norm_'s: max_norm / (norm + 1e-6)


def build(params: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser of ``cfg.optimizer`` over ``params``, without weight decay (``Stepper`` applies
    lambda); only the keys the optimiser reads are passed, unset ones keep torch's defaults."""
    spec = OPTIMIZERS[cfg.optimizer]
    given = {"momentum": cfg.momentum, "nesterov": cfg.nesterov, "betas": cfg.betas, "eps": cfg.eps}
    kwargs = {k: v for k, v in given.items() if k in spec.keys and v is not None}
    return getattr(torch.optim, spec.torch_class)(list(params), lr=cfg.lr, **kwargs)


class Stepper:
    """One training step's update of ``params`` (gradients in ``.grad``), the penalty and schedule of ``cfg``.

    ``decay[i]`` says whether lambda applies to ``params[i]`` (``fit.decayed``). ``lam`` is a float for one
    network, or a (K,) tensor for stacked members (each tensor's first axis)."""

    def __init__(self, params: Sequence[torch.Tensor], decay: Sequence[bool], cfg: TrainConfig,
                 lam: float | torch.Tensor, *, steps_per_epoch: int) -> None:
        self.params, self.decay, self.cfg = list(params), list(decay), cfg
        self.stacked = isinstance(lam, torch.Tensor)
        # Per member: lambda in double for the decay factor (rounded once, as a Python scalar is), float32 for g + lam*w.
        self.lam: float | torch.Tensor = lam.double() if isinstance(lam, torch.Tensor) else lam
        self.lam32 = lam.float() if isinstance(lam, torch.Tensor) else None
        self.opt = build(self.params, cfg)
        self.schedule = schedules.build(self.opt, cfg, steps_per_epoch=steps_per_epoch)
        self._shrink: tuple[float, float | torch.Tensor] | None = None  # (lr, factor) of the last decoupled step

    @property
    def lr(self) -> float:
        """The learning rate of the next step (the schedule's)."""
        return float(self.opt.param_groups[0]["lr"])

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> None:
        if self.cfg.clip_grad_norm is not None:
            self._clip(self.cfg.clip_grad_norm)
        if self.cfg.penalty == "l2":
            for p, d in zip(self.params, self.decay, strict=True):
                if d and p.grad is not None:
                    self._couple(p.grad, p)
        elif self.cfg.penalty == "l2-decoupled":
            factor = self._decay_factor()
            for p, d in zip(self.params, self.decay, strict=True):
                if d:
                    p.mul_(self._member(factor, p) if self.stacked else factor)
        self.opt.step()
        if self.schedule is not None:
            self.schedule.step()

    def _couple(self, g: torch.Tensor, w: torch.Tensor) -> None:
        """``g += lam*w``: torch.optim's ``weight_decay`` arithmetic (``grad.add(param, alpha=lam)``) for one network."""
        if isinstance(self.lam, torch.Tensor):
            g.addcmul_(w, self._member(self.lam32, w))
        else:
            g.add_(w, alpha=self.lam)

    def _decay_factor(self) -> float | torch.Tensor:
        """``1 - lr_t*lam``, in double and rounded once (to float32 per member), as AdamW's Python scalar is."""
        lr = self.lr
        if self._shrink is None or self._shrink[0] != lr:
            lam = self.lam
            self._shrink = (lr, (1.0 - lr * lam).float() if isinstance(lam, torch.Tensor) else 1.0 - lr * lam)
        return self._shrink[1]

    @staticmethod
    def _member(v: float | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """A (K,) tensor as (K, 1, ...), to scale each member's slice of ``like``."""
        assert isinstance(v, torch.Tensor)
        return v.view(-1, *([1] * (like.dim() - 1)))

    def _clip(self, max_norm: float) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not self.stacked:
            torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            return
        # Each member's norm over its own slices of every tensor: (tensors, K) norms, then one norm per column.
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
        coef = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + CLIP_EPS)).clamp(max=1.0)
        for g in grads:
            g.mul_(self._member(coef, g))

    def keep_rows(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Keep only the members ``index`` (stacked parameters): new stacks, the optimiser's state row-selected
        (scalar state such as Adam's step count is shared), lambda too; returns the new stacks in order."""
        assert self.stacked and isinstance(self.lam, torch.Tensor)
        group = self.opt.param_groups[0]
        kept = [p.index_select(0, index) for p in self.params]
        for old, new in zip(self.params, kept, strict=True):
            state = self.opt.state.pop(old, {})
            self.opt.state[new] = {k: v.index_select(0, index) if isinstance(v, torch.Tensor) and v.dim() else v
                                   for k, v in state.items()}
        group["params"] = kept
        self.params, self.lam, self._shrink = kept, self.lam.index_select(0, index), None
        self.lam32 = self.lam.float()
        return kept
