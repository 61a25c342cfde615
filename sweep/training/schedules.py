"""``train.schedule``: the learning rate over training, built on ``torch.optim.lr_scheduler``.

The schedule steps once per optimiser step (per batch), not per epoch: a study trains few
epochs (5 by default), so a per-epoch cosine would hold five learning rates, and a warm-up
shorter than an epoch would be impossible. Lengths a user writes are in epochs
(``step_size``, ``warmup_epochs``) and become steps here, so ``step`` cuts the rate at
epoch boundaries as a per-epoch ``StepLR`` would.

- ``constant``: no scheduler (``train.lr`` throughout);
- ``cosine``: ``CosineAnnealingLR`` from ``train.lr`` to 0 over every step of training;
- ``step``: ``StepLR``, the rate times ``gamma`` (0.1 when unset) every ``step_size`` epochs;
- ``warmup-cosine``: ``LinearLR`` over the first ``w`` steps (``warmup_epochs``, 1 when unset),
  step s at ``lr * (s+1)/(w+1)``, then ``CosineAnnealingLR`` from ``lr`` at step ``w`` to 0
  (``SequentialLR``).

A population's one scheduler sets the one learning rate every member shares, so each member
sees the rate it would see alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import lr_scheduler

from sweep.config import TrainConfig

Scheduler = lr_scheduler.LRScheduler


def _cosine(opt: torch.optim.Optimizer, cfg: TrainConfig, per_epoch: int) -> Scheduler:
    return lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * per_epoch)


def _step(opt: torch.optim.Optimizer, cfg: TrainConfig, per_epoch: int) -> Scheduler:
    assert cfg.step_size is not None  # the config refuses schedule "step" without it
    return lr_scheduler.StepLR(opt, step_size=cfg.step_size * per_epoch, gamma=0.1 if cfg.gamma is None else cfg.gamma)


def _warmup_cosine(opt: torch.optim.Optimizer, cfg: TrainConfig, per_epoch: int) -> Scheduler:
    total = cfg.epochs * per_epoch
    warm = min(max(1, round((cfg.warmup_epochs or 1.0) * per_epoch)), total - 1)
    return lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, start_factor=1 / (warm + 1), total_iters=warm),
                                           lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm)], milestones=[warm])


# One entry per name of sweep.config.recipes.SCHEDULES; constant builds nothing.
BUILDERS: dict[str, Callable[[torch.optim.Optimizer, TrainConfig, int], Scheduler] | None] = {
    "constant": None,
    "cosine": _cosine,
    "step": _step,
    "warmup-cosine": _warmup_cosine,
}


def build(opt: torch.optim.Optimizer, cfg: TrainConfig, *, steps_per_epoch: int) -> Scheduler | None:
    """The scheduler of ``cfg.schedule`` over ``opt``, stepped once per batch; None for ``constant``."""
    builder = BUILDERS[cfg.schedule]
    return None if builder is None else builder(opt, cfg, steps_per_epoch)
