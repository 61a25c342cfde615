"""schedules.build: the learning rate per optimiser step for each train.schedule."""

from __future__ import annotations

import math

import pytest
import torch

from sweep.config import TrainConfig
from sweep.training import schedules


def _rates(cfg: TrainConfig, per_epoch: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = schedules.build(opt, cfg, steps_per_epoch=per_epoch)
    rates = []
    for _ in range(cfg.epochs * per_epoch):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return rates


def test_constant_builds_no_scheduler() -> None:
    assert _rates(TrainConfig(lr=0.1, epochs=2), 3) == [0.1] * 6


def test_cosine_falls_from_lr_towards_zero_over_every_step() -> None:
    rates = _rates(TrainConfig(lr=0.1, epochs=2, schedule="cosine"), 4)
    assert rates == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 8)) for s in range(8)])


def test_step_cuts_at_epoch_boundaries() -> None:
    rates = _rates(TrainConfig(lr=0.1, epochs=5, schedule="step", step_size=2, gamma=0.5), 3)
    assert rates == pytest.approx([0.1] * 6 + [0.05] * 6 + [0.025] * 3)
    assert _rates(TrainConfig(lr=1.0, epochs=2, schedule="step", step_size=1), 2) == pytest.approx([1, 1, 0.1, 0.1])


def test_warmup_cosine_rises_linearly_then_follows_the_cosine() -> None:
    rates = _rates(TrainConfig(lr=0.1, epochs=3, schedule="warmup-cosine", warmup_epochs=1), 4)
    assert rates[:4] == pytest.approx([0.02, 0.04, 0.06, 0.08])  # lr * (s+1)/(w+1)
    assert rates[4:] == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 8)) for s in range(8)])
    # a fractional warm-up, in steps, and the default of one epoch
    assert _rates(TrainConfig(lr=0.3, epochs=2, schedule="warmup-cosine", warmup_epochs=0.5), 4)[:3] == pytest.approx(
        [0.1, 0.2, 0.3])
    assert _rates(TrainConfig(lr=0.3, epochs=2, schedule="warmup-cosine"), 2)[:3] == pytest.approx([0.1, 0.2, 0.3])
