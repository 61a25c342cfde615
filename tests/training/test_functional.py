"""The torch.func population (sweep.training.functional) and its dispatch (sweep.training.trainers), on the CPU."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

from sweep.config import ModelConfig, TrainConfig
from sweep.objectives.prepared import prepare
from sweep.training import data, trainers
from sweep.training.fit import fit
from sweep.training.functional import fit_population
from sweep.training.models import Net, net_for
from sweep.workers.run import run as run_study


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, ...]:
    ds = data.load("mnist-sample")
    x, y = data.to_device(ds.train, torch.device("cpu"))
    return x[:256], y[:256], x[1000:1128], y[1000:1128]


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


MLP = net_for(ModelConfig(arch="mlp", hidden=[48, 24]), in_shape=(784,), classes=10)
CNN = net_for(ModelConfig(arch="cnn"), in_shape=(784,), classes=10)
CASES = [  # (penalty, momentum, decay_bias, lr)
    ("l2", 0.0, True, 0.05), ("l2", 0.9, False, 0.05), ("l2-loss", 0.0, True, 0.05), ("l1", 0.5, True, 0.05),
    ("elastic-net", 0.0, False, 0.05), ("l2-decoupled", 0.0, False, 0.003),
]


@pytest.mark.parametrize("net", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize(("penalty", "momentum", "decay_bias", "lr"), CASES)
def test_member_equals_training_it_alone(split, net: Net, penalty: str, momentum: float, decay_bias: bool,
                                         lr: float) -> None:
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=2, lr=lr, penalty=penalty, momentum=momentum, decay_bias=decay_bias, device="cpu")
    lams, seeds = [1e-4, 1e-1, 3e-3], [1, 1, 2]  # members 0 and 1 share a seed (and so a data order)
    members = fit_population(x, y, xv, yv, lams=lams, seeds=seeds, cfg=cfg, net=net, return_models=True)
    alone = [fit(x, y, xv, yv, lam=lam, cfg=cfg, seed=s, net=net) for lam, s in zip(lams, seeds, strict=True)]
    for m, a in zip(members, alone, strict=True):
        assert m.state == "complete" and m.model is not None and a.model is not None
        # Adam divides by sqrt(v): where a gradient is near 0, rounding differences of the batched convolution grow
        atol = 1e-3 if penalty == "l2-decoupled" else 2e-4
        torch.testing.assert_close(weights(m.model), weights(a.model), rtol=1e-4, atol=atol)
        assert [h.train_loss for h in m.history] == pytest.approx([h.train_loss for h in a.history], rel=1e-4)
        assert abs(m.history[-1].val_acc - a.history[-1].val_acc) <= 2 / len(yv)
    # lambda matters: the strongest decay shrank its member's weights below the weakest's (same seed, same data)
    assert weights(members[1].model).norm() < 0.999 * weights(members[0].model).norm()


RECIPES = {  # optimiser, schedule and clipping cases beside CASES' penalties
    "adam-l2-cosine-clip": dict(optimizer="adam", penalty="l2", schedule="cosine", clip_grad_norm=0.5, lr=0.003),
    "adamw-warmup-cosine": dict(optimizer="adamw", penalty="l2-decoupled", schedule="warmup-cosine", warmup_epochs=1,
                                lr=0.003, decay_bias=False),
    "sgd-nesterov-step-clip": dict(momentum=0.9, nesterov=True, schedule="step", step_size=1, gamma=0.5,
                                   clip_grad_norm=1.0, lr=0.05),
    "sgd-decoupled": dict(penalty="l2-decoupled", optimizer="sgd", lr=0.05),
    "rmsprop-l1": dict(optimizer="rmsprop", momentum=0.5, penalty="l1", lr=0.001),
    "adagrad-elastic-net": dict(optimizer="adagrad", penalty="elastic-net", lr=0.01),
    "adamax-l2-loss": dict(optimizer="adamax", penalty="l2-loss", betas=(0.8, 0.99), lr=0.003),
    "nadam-l2": dict(optimizer="nadam", lr=0.003),
    "radam-decoupled": dict(optimizer="radam", penalty="l2-decoupled", lr=0.003),
    "adadelta-l2": dict(optimizer="adadelta", lr=0.5, eps=1e-5),
    "rprop-l2": dict(optimizer="rprop", lr=0.001),
}


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_member_equals_training_it_alone_for_every_optimiser_and_schedule(split, recipe: dict) -> None:
    """One torch.optim optimiser and scheduler over the stacks: each member is its single fit, lambda, decay factor
    and clipping norm its own; a pruned member leaving the stacks takes its optimiser state with it."""
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=3, device="cpu", batch_size=32, **recipe)
    lams, seeds = [1e-4, 3e-1, 1e-2], [1, 1, 2]
    prune = lambda ep: [2] if ep.epoch == 2 else []  # noqa: E731 - member 2 leaves after epoch 2
    members = fit_population(x, y, xv, yv, lams=lams, seeds=seeds, cfg=cfg, net=MLP, return_models=True,
                             on_epoch=prune)
    assert [m.state for m in members] == ["complete", "complete", "pruned"]
    for m, lam, s in zip(members, lams, seeds, strict=True):
        alone = fit(x, y, xv, yv, lam=lam, cfg=cfg, seed=s, net=MLP)  # the schedule spans all 3 epochs in both
        assert alone.model is not None
        if m.model is not None:
            torch.testing.assert_close(weights(m.model), weights(alone.model), rtol=1e-4, atol=1e-4)
        done = alone.history[:len(m.history)]
        assert [h.train_loss for h in m.history] == pytest.approx([h.train_loss for h in done], rel=1e-4)
        assert [h.val_acc for h in m.history] == pytest.approx([h.val_acc for h in done], abs=2 / len(yv))
    # lambda matters: the strongest member's weights end smaller than the weakest's (same seed, same data)
    assert weights(members[1].model).norm() < 0.999 * weights(members[0].model).norm()


def test_shared_seed_members_with_equal_lambdas_are_identical(split) -> None:
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=1, lr=0.05, device="cpu")
    a, b = fit_population(x, y, xv, yv, lams=[1e-3, 1e-3], seeds=[4, 4], cfg=cfg, net=MLP, return_models=True)
    assert a.model is not None and b.model is not None
    assert torch.equal(weights(a.model), weights(b.model))


def test_pruned_member_leaves_and_diverged_member_fails_alone(split) -> None:
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=3, lr=0.05, device="cpu")
    seen: list[set[int]] = []

    def on_epoch(ep):  # noqa: ANN001, ANN202
        seen.append(set(ep.stats))
        return [1] if ep.epoch == 1 else []

    # lambda 1e6: the decay factor 1 - lr*lambda is huge and negative, so that member's weights blow up
    members = fit_population(x, y, xv, yv, lams=[1e-4, 1e-3, 1e6], seeds=[0, 0, 0], cfg=cfg, net=MLP, on_epoch=on_epoch)
    assert [m.state for m in members] == ["complete", "pruned", "failed"]
    assert "training loss became" in (members[2].fail_reason or "")
    assert seen[1] == {0} and len(members[0].history) == 3 and len(members[1].history) == 1


@pytest.mark.parametrize("arch", ["simplenet", "mlp"])
def test_dispatch_keeps_the_hand_written_path_and_takes_buffers(split, arch: str) -> None:
    simple = net_for(ModelConfig(), in_shape=(784,), classes=10) if arch == "simplenet" else MLP
    assert trainers.uses_mlp_fast_path(simple, TrainConfig())
    assert not trainers.uses_mlp_fast_path(simple, TrainConfig(momentum=0.9))
    assert not trainers.uses_mlp_fast_path(simple, TrainConfig(penalty="l1"))
    assert not trainers.uses_mlp_fast_path(CNN, TrainConfig())
    for recipe in RECIPES.values():  # every other optimiser, schedule and clipping trains on torch.optim
        assert not trainers.uses_mlp_fast_path(simple, TrainConfig(**recipe))
    bn = Net("factory", (), (784,), 10, "m:bn", lambda: torch.nn.Sequential(torch.nn.BatchNorm1d(784), torch.nn.Linear(784, 10)))
    assert trainers.unsupported(MLP, TrainConfig()) is None
    assert trainers.unsupported(bn, TrainConfig()) is None  # buffers are stacked per member (test_networks.py)
    # The network through the generic path gives the hand-written path's weights
    x, y, xv, yv = split
    cfg = TrainConfig(epochs=1, lr=0.05, device="cpu")
    fast = trainers.fit_population(x, y, xv, yv, net=simple, cfg=cfg, lams=[1e-3], seeds=[0], return_models=True)
    slow = fit_population(x, y, xv, yv, net=simple, cfg=cfg, lams=[1e-3], seeds=[0], return_models=True)
    assert fast[0].model is not None and slow[0].model is not None
    torch.testing.assert_close(weights(fast[0].model), weights(slow[0].model), rtol=1e-4, atol=1e-5)


def test_a_batch_of_an_mlp_study_equals_its_single_trials(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="mlp", model={"arch": "mlp", "hidden": [32]}, train={"epochs": 1, "penalty": "l1", "momentum": 0.5},
                   search={"n_trials": 2, "batch": 2})
    s = run_study(cfg, sqlite_url, refit_after=False)
    prep = prepare(cfg)
    trials = s.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["population"] for t in trials] == [2, 2]
    for t in trials:
        alone = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=t.params["lambda"], cfg=cfg.train, seed=0, net=prep.net)
        assert t.value is not None and abs(t.value - alone.final.val_acc) <= 1 / 1000


def test_an_adam_l2_cosine_clipped_study_trains_as_a_population_of_its_single_trials(tiny_cfg, sqlite_url: str) -> None:
    train = {"epochs": 2, "optimizer": "adam", "penalty": "l2", "lr": 0.003, "schedule": "cosine", "clip_grad_norm": 1.0}
    cfg = tiny_cfg(name="adam", model={"arch": "mlp", "hidden": [32]}, train=train, search={"n_trials": 3, "batch": 3})
    s = run_study(cfg, sqlite_url, refit_after=False)
    prep = prepare(cfg)
    trials = s.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs["population"] for t in trials] == [3, 3, 3]
    assert not trainers.uses_mlp_fast_path(prep.net, cfg.train)
    for t in trials:
        alone = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=t.params["lambda"], cfg=cfg.train, seed=0,
                    net=prep.net)
        assert t.value is not None and abs(t.value - alone.final.val_acc) <= 1 / 1000


def test_a_wide_population_without_dropout_trains_in_lanes_equal_to_one_population(split, monkeypatch) -> None:
    """LeNet-5 and a BatchNorm network (each member's running statistics its own) train in two lanes, one core
    each, and give one population's members; a network with dropout keeps one lane (its masks come from the one
    global generator)."""
    from torch import nn

    from sweep.training import functional, population

    x, y, xv, yv = split
    bn = Net("factory", (), (784,), 10, "m:bn", lambda: nn.Sequential(nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                                                       nn.Linear(32, 10)))
    dropout = Net("factory", (), (784,), 10, "m:dropout", lambda: nn.Sequential(nn.Linear(784, 32), nn.Dropout(0.5),
                                                                                  nn.Linear(32, 10)))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.9, device="cpu")
    lams, seeds = [1e-4, 1e-3, 1e-2, 1e-1], [3] * 4
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for net in (CNN, bn):
            monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 0)
            assert functional.lane_count(net, None, lams, seeds, x) == 1
            one = fit_population(x, y, xv, yv, lams=lams, seeds=seeds, cfg=cfg, net=net, return_models=True)
            monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 2)
            assert functional.lane_count(net, None, lams, seeds, x) == 2
            laned = fit_population(x, y, xv, yv, lams=lams, seeds=seeds, cfg=cfg, net=net, return_models=True)
            assert torch.get_num_threads() == 2
            for a, b in zip(one, laned, strict=True):
                assert a.model is not None and b.model is not None
                torch.testing.assert_close(weights(a.model), weights(b.model), rtol=1e-5, atol=1e-5)
                for ba, bb in zip(a.model.buffers(), b.model.buffers(), strict=True):  # BatchNorm's statistics
                    torch.testing.assert_close(ba, bb, rtol=1e-5, atol=1e-5)
                assert [h.val_loss for h in a.history] == pytest.approx([h.val_loss for h in b.history], rel=1e-5)
        assert functional.lane_count(dropout, None, lams, seeds, x) == 1
        assert functional.lane_count(dropout, None, lams, [0, 1, 2, 3], x) == 1  # own seeds: one population, as ever
    finally:
        torch.set_num_threads(threads)
