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
