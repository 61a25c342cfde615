"""The torch.optim population's written-out step for SimpleNet and the mlp (sweep.training.linear_stack)."""

from __future__ import annotations

import pytest
import torch
from torch.func import stack_module_state

from sweep.config import ModelConfig, TrainConfig
from sweep.training import data, functional, linear_stack, population
from sweep.training.fit import fit
from sweep.training.models import net_for

MLP = net_for(ModelConfig(arch="mlp", hidden=[40, 24]), in_shape=(784,), classes=10)
SIMPLE = net_for(ModelConfig(hidden=32), in_shape=(784,), classes=10)


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, ...]:
    ds = data.load("mnist-sample")
    x, y = data.to_device(ds.train, torch.device("cpu"))
    return x[:192], y[:192], x[1000:1096], y[1000:1096]


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_layer_names_follow_each_builtin_linear_stack_and_nothing_else() -> None:
    assert linear_stack.layer_names(MLP) == [("1.weight", "1.bias"), ("3.weight", "3.bias"), ("5.weight", "5.bias")]
    assert linear_stack.layer_names(SIMPLE) == [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")]
    assert linear_stack.layer_names(net_for(ModelConfig(arch="cnn"), in_shape=(784,), classes=10)) is None


@pytest.mark.parametrize("shared", [True, False], ids=["one-batch", "own-batches"])
def test_forward_gives_each_member_its_own_network_output(split, shared: bool) -> None:
    x = split[0][:16]
    models = [MLP.build(s) for s in (1, 2, 3)]
    params, _ = stack_module_state(models)  # type: ignore[arg-type]
    names = linear_stack.layer_names(MLP)
    assert names is not None
    xs = x if shared else torch.stack([x, x.flip(0), x * 0.5])
    out = linear_stack.forward(params, names, xs, shared=shared)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(xs if shared else xs[k]), rtol=1e-5, atol=1e-5)


RECIPES = {  # every loss, a penalty in the loss and on the step, clipping, a schedule: each member is its single fit
    "sgd-l2": dict(lr=0.05),
    "adam-l2-cosine-clip": dict(optimizer="adam", schedule="cosine", clip_grad_norm=0.5, lr=0.003),
    "elastic-net-no-bias-decay": dict(penalty="elastic-net", decay_bias=False, lr=0.05),
    "l2-loss-smoothing-weights": dict(penalty="l2-loss", label_smoothing=0.1, class_weights="balanced", lr=0.05),
    "adamw-decoupled": dict(optimizer="adamw", penalty="l2-decoupled", lr=0.003),
}


@pytest.mark.parametrize("net", [MLP, SIMPLE], ids=["mlp", "simplenet"])
@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_members_sharing_a_batch_equal_training_each_alone(split, net, recipe: dict) -> None:
    """Shared seeds: the wide first-layer matmul and its gradient buffer; the seed's recipe too (the functional
    population is called directly)."""
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=2, batch_size=32, device="cpu", **recipe)
    lams = [1e-4, 3e-1, 1e-2]
    members = functional.fit_population(x, y, xv, yv, lams=lams, seeds=[5] * 3, cfg=cfg, net=net, return_models=True)
    for m, lam in zip(members, lams, strict=True):
        alone = fit(x, y, xv, yv, lam=lam, cfg=cfg, seed=5, net=net)
        assert m.model is not None and alone.model is not None
        torch.testing.assert_close(weights(m.model), weights(alone.model), rtol=1e-4, atol=2e-4)
        assert [h.train_loss for h in m.history] == pytest.approx([h.train_loss for h in alone.history], rel=1e-4)
    assert weights(members[1].model).norm() < 0.999 * weights(members[0].model).norm()  # lambda matters


def test_a_regression_population_equals_its_single_fits(split) -> None:
    """``mse`` on float targets (N, 2): the per-member loss is the single fit's under vmap."""
    x, labels, xv, labels_v = split
    y, yv = torch.stack([labels.float(), labels.float() ** 0.5], 1), torch.stack([labels_v.float(), labels_v.float() ** 0.5], 1)
    net = net_for(ModelConfig(arch="mlp", hidden=[16]), in_shape=(784,), classes=2)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.01, loss="mse", optimizer="adam", device="cpu")
    members = functional.fit_population(x, y, xv, yv, lams=[1e-4, 1e-1], seeds=[2, 2], cfg=cfg, net=net,
                                        return_models=True)
    for m, lam in zip(members, [1e-4, 1e-1], strict=True):
        alone = fit(x, y, xv, yv, lam=lam, cfg=cfg, seed=2, net=net)
        assert m.model is not None and alone.model is not None
        torch.testing.assert_close(weights(m.model), weights(alone.model), rtol=1e-4, atol=2e-4)
        assert m.history[-1].val_loss == pytest.approx(alone.history[-1].val_loss, rel=1e-4)


def test_a_wide_torch_optim_population_trains_in_lanes_equal_to_one_population(split, monkeypatch) -> None:
    """Lanes, as the hand-written population's: a thread per part of the members, one core each. The members, the
    pruned one and the caller's thread count come out as from one population."""
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.003, optimizer="adam", schedule="cosine", device="cpu")
    lams = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    prune = lambda ep: [4] if ep.epoch == 1 else []  # noqa: E731 - member 4 leaves after epoch 1
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 0)
        one = functional.fit_population(x, y, xv, yv, lams=lams, seeds=[1] * 6, cfg=cfg, net=MLP, return_models=True,
                                        on_epoch=prune)
        monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 3)
        assert population.cpu_lanes([population.Member(lam, 1) for lam in lams], torch.device("cpu")) == 2
        laned = functional.fit_population(x, y, xv, yv, lams=lams, seeds=[1] * 6, cfg=cfg, net=MLP,
                                          return_models=True, on_epoch=prune)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert [m.state for m in laned] == ["complete"] * 4 + ["pruned", "complete"]
    for a, b in zip(one, laned, strict=True):
        assert a.state == b.state and len(a.history) == len(b.history)
        if a.model is not None:
            assert b.model is not None
            torch.testing.assert_close(weights(a.model), weights(b.model), rtol=1e-5, atol=1e-5)
        assert [h.val_loss for h in a.history] == pytest.approx([h.val_loss for h in b.history], rel=1e-5)
