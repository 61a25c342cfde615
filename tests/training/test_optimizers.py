"""optimizers.Stepper: lambda, clipping and schedule around a torch.optim step, for one network and for stacks."""

from __future__ import annotations

import pytest
import torch

from sweep.config import TrainConfig
from sweep.config.recipes import OPTIMIZERS
from sweep.training import optimizers


def _net(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _grads(model: torch.nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()


def _train(model: torch.nn.Module, stepper_or_opt, steps: int = 6) -> torch.Tensor:  # noqa: ANN001
    for s in range(steps):
        _grads(model, s)
        stepper_or_opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(("cfg", "torch_opt"), [
    (TrainConfig(lr=0.1, momentum=0.9, nesterov=True), lambda p, lam: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=lam)),
    (TrainConfig(lr=0.01, optimizer="adam", betas=(0.8, 0.99)), lambda p, lam: torch.optim.Adam(
        p, lr=0.01, betas=(0.8, 0.99), weight_decay=lam)),
    (TrainConfig(lr=0.01, optimizer="rmsprop", momentum=0.5, eps=1e-6), lambda p, lam: torch.optim.RMSprop(
        p, lr=0.01, momentum=0.5, eps=1e-6, weight_decay=lam)),
    (TrainConfig(lr=0.01, penalty="l2-decoupled"), lambda p, lam: torch.optim.AdamW(p, lr=0.01, weight_decay=lam)),
], ids=["sgd-nesterov-l2", "adam-l2", "rmsprop-l2", "adamw-decoupled"])
def test_one_network_steps_as_torch_optims_own_weight_decay_bit_for_bit(cfg: TrainConfig, torch_opt) -> None:  # noqa: ANN001
    """l2 is torch's own coupled weight_decay, l2-decoupled with Adam is torch.optim.AdamW: the same weights exactly,
    so a stored study (SGD + l2, or l2-decoupled, which was AdamW) trains as before."""
    lam = 0.05
    mine, ref = _net(0), _net(0)
    ours = _train(mine, optimizers.Stepper(list(mine.parameters()), [True] * 4, cfg, lam, steps_per_epoch=3))
    theirs = _train(ref, torch_opt(list(ref.parameters()), lam))
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, _train(_net(0), optimizers.Stepper(list(_net(0).parameters()), [True] * 4, cfg, 0.0,
                                                                    steps_per_epoch=3)))


def test_decoupled_decay_uses_the_scheduled_rate() -> None:
    """AdamW's rule with the schedule's lr_t: torch.optim.AdamW under the same CosineAnnealingLR."""
    cfg = TrainConfig(lr=0.02, epochs=2, penalty="l2-decoupled", schedule="cosine")
    mine, ref = _net(1), _net(1)
    stepper = optimizers.Stepper(list(mine.parameters()), [True] * 4, cfg, 0.3, steps_per_epoch=3)
    opt = torch.optim.AdamW(list(ref.parameters()), lr=0.02, weight_decay=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    for s in range(6):
        _grads(mine, s)
        stepper.step()
        _grads(ref, s)
        opt.step()
        sched.step()
    assert torch.equal(torch.cat([p.detach().flatten() for p in mine.parameters()]),
                       torch.cat([p.detach().flatten() for p in ref.parameters()]))
    assert stepper.lr == pytest.approx(0.0)  # the cosine reached 0 at the last step


def test_undecayed_tensors_keep_no_penalty() -> None:
    cfg = TrainConfig(lr=0.1, penalty="l2-decoupled", optimizer="sgd")
    model = _net(2)
    biases = [model[0].bias.detach().clone(), model[2].bias.detach().clone()]
    weight = model[0].weight.detach().clone()
    stepper = optimizers.Stepper(list(model.parameters()), [p.dim() >= 2 for p in model.parameters()], cfg, 1e3,
                                 steps_per_epoch=1)
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    stepper.step()
    assert torch.equal(model[0].bias, biases[0]) and torch.equal(model[2].bias, biases[1])
    assert torch.equal(model[0].weight, weight * (1 - 0.1 * 1e3))  # zero gradient: only the decay moved it


def test_stacked_members_clip_by_their_own_norm_and_match_one_network_each() -> None:
    """K stacked members through one Stepper equal K networks through their own, lambda and clipping per member."""
    cfg = TrainConfig(lr=0.01, optimizer="adam", clip_grad_norm=0.05, epochs=2, schedule="cosine")
    lams = [0.0, 0.01, 0.5]
    nets = [_net(3) for _ in lams]
    singles = [optimizers.Stepper(list(n.parameters()), [True] * 4, cfg, lam, steps_per_epoch=3)
               for n, lam in zip(nets, lams, strict=True)]
    stacks = [torch.stack([list(n.parameters())[i].detach().clone() for n in nets]) for i in range(4)]
    stacked = optimizers.Stepper(stacks, [True] * 4, cfg, torch.tensor(lams, dtype=torch.float64), steps_per_epoch=3)
    for s in range(6):
        scale = [1.0, 10.0, 0.001]  # one member's gradient is far above the clip, one far below
        for n, c in zip(nets, scale, strict=True):
            _grads(n, s)
            for p in n.parameters():
                p.grad.mul_(c)
        for i, w in enumerate(stacks):
            w.grad = torch.stack([list(n.parameters())[i].grad.clone() for n in nets])
        for one in singles:
            one.step()
        stacked.step()
    for k, n in enumerate(nets):
        for i, p in enumerate(n.parameters()):
            torch.testing.assert_close(stacked.params[i][k], p.detach(), rtol=1e-5, atol=1e-7)


def test_keep_rows_keeps_each_members_optimiser_state() -> None:
    cfg = TrainConfig(lr=0.01, optimizer="adam")
    w = torch.zeros(3, 2)
    stepper = optimizers.Stepper([w], [True], cfg, torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64), steps_per_epoch=1)
    w.grad = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    stepper.step()
    (kept,) = stepper.keep_rows(torch.tensor([0, 2]))
    state = stepper.opt.state[kept]
    assert torch.equal(state["exp_avg"], torch.tensor([[0.1, 0.1], [0.3, 0.3]]))
    assert float(state["step"]) == 1.0 and torch.equal(stepper.lam, torch.tensor([0.0, 0.2], dtype=torch.float64))
    assert w not in stepper.opt.state and stepper.opt.param_groups[0]["params"] == [kept]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_registered_optimiser_builds_without_weight_decay(name: str) -> None:
    penalty = "l2-decoupled" if name == "adamw" else "l2"
    opt = optimizers.build([torch.zeros(2, requires_grad=True)], TrainConfig(optimizer=name, penalty=penalty))
    assert type(opt).__name__ == OPTIMIZERS[name].torch_class
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0].get("weight_decay", 0) == 0
