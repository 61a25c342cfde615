"""The loss registry (train.loss, label_smoothing, class_weights): its figures, the trainers it routes to,
population members against single fits, and the data checks for each kind of target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from sweep.config import ModelConfig, TrainConfig
from sweep.errors import InvalidDataError
from sweep.training import factories, losses, trainers
from sweep.training.fit import fit, uses_manual_backward
from sweep.training.functional import fit_population
from sweep.training.model import init_simplenet
from sweep.training.models import net_for

GEN = torch.Generator().manual_seed(0)
X = torch.randn(96, 10, generator=GEN)
Y_REAL = (X[:, :3].sum(1) + 0.1 * torch.randn(96, generator=GEN)).float()
Y_CLASS = (X[:, 0] > 0.8).long()  # imbalanced: about a fifth positives


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_balanced_class_weights_are_scikit_learns() -> None:
    cfg = TrainConfig(class_weights="balanced")
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=Y_CLASS.numpy())
    torch.testing.assert_close(losses.class_weight_tensor(cfg, Y_CLASS), torch.tensor(expected, dtype=torch.float32))
    out = torch.randn(96, 2, generator=GEN)
    weighted = losses.make_loss(cfg, Y_CLASS)(out, Y_CLASS)
    torch.testing.assert_close(weighted, F.cross_entropy(out, Y_CLASS, weight=torch.tensor(expected, dtype=torch.float32)))


def test_mse_averages_every_output_and_its_evaluation_sums_examples() -> None:
    cfg = TrainConfig(loss="mse")
    out = torch.randn(96, 1, generator=GEN)
    torch.testing.assert_close(losses.make_loss(cfg, Y_REAL)(out, Y_REAL), ((out[:, 0] - Y_REAL) ** 2).mean())
    torch.testing.assert_close(losses.REGISTRY["mse"].plain(out, Y_REAL) / 96, ((out[:, 0] - Y_REAL) ** 2).mean())
    stacked = losses.REGISTRY["mse"].stacked(torch.stack([out, 2 * out]), Y_REAL)
    torch.testing.assert_close(stacked, torch.stack([((o[:, 0] - Y_REAL) ** 2).sum() for o in (out, 2 * out)]))


@pytest.mark.parametrize("update", [{"label_smoothing": 0.1}, {"class_weights": "balanced"}, {"class_weights": [1.0, 3.0]}])
def test_any_loss_but_plain_cross_entropy_leaves_the_hand_written_steps(update: dict) -> None:
    plain, other = TrainConfig(), TrainConfig(**update)
    mlp = net_for(ModelConfig(arch="mlp", hidden=[8]), in_shape=(784,), classes=10)
    assert trainers.uses_mlp_fast_path(mlp, plain) and not trainers.uses_mlp_fast_path(mlp, other)
    assert uses_manual_backward(init_simplenet(8, 0), plain) and not uses_manual_backward(init_simplenet(8, 0), other)


@pytest.mark.parametrize(("update", "y"), [
    ({"loss": "mse"}, Y_REAL), ({"label_smoothing": 0.2, "class_weights": "balanced"}, Y_CLASS),
], ids=["mse", "smoothed-weighted-ce"])
def test_population_member_equals_training_it_alone(update: dict, y: torch.Tensor) -> None:
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=16, device="cpu", **update)
    outputs = 1 if cfg.loss == "mse" else 2
    net = net_for(ModelConfig(arch="mlp", hidden=[16]), in_shape=(10,), classes=outputs)
    lams, seeds = [1e-4, 3e-1], [1, 1]
    members = fit_population(X[:64], y[:64], X[64:], y[64:], lams=lams, seeds=seeds, cfg=cfg, net=net, return_models=True)
    for m, lam, s in zip(members, lams, seeds, strict=True):
        alone = fit(X[:64], y[:64], X[64:], y[64:], lam=lam, cfg=cfg, seed=s, net=net)
        torch.testing.assert_close(weights(m.model), weights(alone.model), rtol=1e-4, atol=2e-5)
        assert [h.val_loss for h in m.history] == pytest.approx([h.val_loss for h in alone.history], rel=1e-4)
        if cfg.loss == "mse":  # a regression has no accuracy
            assert np.isnan(m.history[-1].val_acc) and np.isnan(alone.history[-1].val_acc)
    assert weights(members[1].model).norm() < weights(members[0].model).norm()


def test_the_data_checks_follow_the_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("fake_targets")
    module.real = lambda: (X.numpy(), Y_REAL.numpy(), X.numpy(), Y_REAL.numpy())  # type: ignore[attr-defined]
    module.wide = lambda: (X.numpy(), np.stack([Y_REAL.numpy()] * 3, 1), X.numpy(), np.stack([Y_REAL.numpy()] * 3, 1))  # type: ignore[attr-defined]
    module.labels = lambda: (X.numpy(), Y_CLASS.numpy(), X.numpy(), Y_CLASS.numpy())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_targets", module)
    assert factories.load_data("fake_targets:real", "values").classes == 1
    assert factories.load_data("fake_targets:wide", "values").classes == 3
    with pytest.raises(InvalidDataError, match="train.loss = 'mse' needs real-valued targets"):
        factories.load_data("fake_targets:labels", "values")
    with pytest.raises(InvalidDataError, match="or set train.loss = 'mse' for real-valued targets"):
        factories.load_data("fake_targets:real", "classes")


def test_balanced_weights_of_a_few_examples_missing_a_class_still_weigh_every_class() -> None:
    cfg = TrainConfig(class_weights="balanced")
    few = torch.tensor([0, 0, 1, 0])  # no label 2 among them (the population check trains on a few examples)
    out = torch.randn(4, 3, generator=GEN)
    expected = F.cross_entropy(out, few, weight=torch.tensor([4 / 6, 2.0, 1.0]))
    torch.testing.assert_close(losses.make_loss(cfg, few)(out, few), expected)
