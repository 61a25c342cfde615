from __future__ import annotations

import pytest
import torch

from sweep.config import TrainConfig
from sweep.errors import DeviceError, TrainingDivergedError
from sweep.training import data
from sweep.training import fit as train
from sweep.training.model import init_simplenet


@pytest.fixture(scope="module")
def small() -> tuple[torch.Tensor, ...]:
    ds = data.load("mnist-sample")
    x, y = data.to_device(ds.train, torch.device("cpu"))
    return x[:1000], y[:1000], x[1000:1500], y[1000:1500]


def reference_sgd(x, y, *, lam: float, cfg: TrainConfig, seed: int, decay_bias: bool = True) -> torch.nn.Module:
    """The seed document's loop on the same data order: nn.CrossEntropyLoss + optim.SGD(weight_decay=lam)."""
    model = init_simplenet(128, seed)
    decay = [p for n, p in model.named_parameters() if decay_bias or not n.endswith("bias")]
    keep = [p for n, p in model.named_parameters() if not (decay_bias or not n.endswith("bias"))]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": lam}, {"params": keep, "weight_decay": 0.0}], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("decay_bias", [True, False])
def test_fast_l2_path_equals_torch_sgd_weight_decay(small, decay_bias: bool) -> None:
    x, y, xv, yv = small
    cfg = TrainConfig(epochs=2, lr=0.05, decay_bias=decay_bias)
    ours = train.fit(x, y, xv, yv, lam=5e-3, cfg=cfg, seed=3)
    ref = reference_sgd(x, y, lam=5e-3, cfg=cfg, seed=3, decay_bias=decay_bias)
    torch.testing.assert_close(weights(ours.model), weights(ref), rtol=1e-4, atol=1e-5)


def test_l2_loss_form_gives_the_same_weights_as_weight_decay(small) -> None:
    # (lambda/2)*||w||^2 in the loss has gradient lambda*w: the same update as SGD weight_decay=lambda.
    x, y, xv, yv = small
    a = train.fit(x, y, xv, yv, lam=1e-2, cfg=TrainConfig(epochs=2, lr=0.05, penalty="l2"), seed=1)
    b = train.fit(x, y, xv, yv, lam=1e-2, cfg=TrainConfig(epochs=2, lr=0.05, penalty="l2-loss"), seed=1)
    torch.testing.assert_close(weights(a.model), weights(b.model), rtol=1e-4, atol=1e-5)
    # and lambda matters: a different lambda gives different weights
    c = train.fit(x, y, xv, yv, lam=1e-4, cfg=TrainConfig(epochs=2, lr=0.05, penalty="l2"), seed=1)
    assert not torch.allclose(weights(a.model), weights(c.model), atol=1e-4)


@pytest.mark.parametrize("penalty", ["l2-decoupled", "l1", "elastic-net"])
def test_other_penalties_train_and_shrink_weights(small, penalty: str) -> None:
    x, y, xv, yv = small
    cfg = TrainConfig(epochs=3, lr=0.01 if penalty == "l2-decoupled" else 0.1, penalty=penalty)
    weak = train.fit(x, y, xv, yv, lam=1e-6, cfg=cfg, seed=0)
    strong = train.fit(x, y, xv, yv, lam=5e-2, cfg=cfg, seed=0)
    assert weak.final.val_acc > 0.7
    assert weights(strong.model).abs().sum() < weights(weak.model).abs().sum()


def test_history_and_callback(small) -> None:
    x, y, xv, yv = small
    seen: list[train.EpochStats] = []
    result = train.fit(x, y, xv, yv, lam=1e-4, cfg=TrainConfig(epochs=3, lr=0.1), on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3] and seen == result.history
    assert all(0 <= s.val_acc <= 1 and 0 <= s.train_acc <= 1 and s.train_loss > 0 for s in seen)
    assert seen[-1].train_loss < seen[0].train_loss


def test_nan_loss_raises_diverged(small) -> None:
    x, y, xv, yv = small
    # lr*lambda > 2 makes w <- w*(1 - lr*lambda) oscillate and blow up
    with pytest.raises(TrainingDivergedError, match=r"^training loss became (nan|inf) in epoch \d+ at lambda 1e\+03"):
        train.fit(x, y, xv, yv, lam=1e3, cfg=TrainConfig(epochs=3, lr=0.1))


def test_seed_controls_init_and_order(small) -> None:
    x, y, xv, yv = small
    cfg = TrainConfig(epochs=1)
    a, b, c = (train.fit(x, y, xv, yv, lam=1e-4, cfg=cfg, seed=s) for s in (0, 0, 1))
    assert torch.equal(weights(a.model), weights(b.model))
    assert not torch.equal(weights(a.model), weights(c.model))


def test_missing_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match=r"^train.device = 'cuda' but this machine has 0 CUDA device\(s\); set train.device"):
        train.resolve_device("cuda")
    assert train.resolve_device("auto").type == "cpu"


# Figures of a short SimpleNet run taken before issue 12 (own models) touched training: the built-in
# network's single fit and population must keep giving them (float32 on a CPU, one thread).
PINNED = {
    "l2": ((2.2347763671875, 0.48, 2.1508740234375), (2.0332325439453127, 0.574, 1.94263818359375), 20.4423828125),
    "l2-loss": ((2.2347763671875, 0.48, 2.1508740234375), (2.0332325439453127, 0.574, 1.9426380615234375), 20.4423885345459),
    "l1": ((2.23558203125, 0.48, 2.154005859375), (2.040765869140625, 0.576, 1.9554599609375), 19.94484519958496),
    "elastic-net": ((2.2351953125, 0.48, 2.15247265625), (2.03661181640625, 0.576, 1.9483516845703126), 20.222530364990234),
    "l2-decoupled": ((2.137736328125, 0.59, 1.9398306884765626), (1.6937667236328124, 0.668, 1.5484364013671874),
                     55.763641357421875),
}
PINNED_POPULATION = ([(2.23472412109375, 2.0327447509765624), (2.2347763671875, 2.033232666015625),
                      (2.23529833984375, 2.03797265625)], [20.448076248168945, 20.442384719848633, 20.23454475402832])


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("penalty", sorted(PINNED))
def test_simplenet_figures_are_pinned(small, one_thread, penalty: str) -> None:
    x, y, xv, yv = small
    lr = 0.001 if penalty == "l2-decoupled" else 0.05
    r = train.fit(x, y, xv, yv, lam=1e-3, cfg=TrainConfig(epochs=2, penalty=penalty, lr=lr, device="cpu"), hidden=32, seed=3)
    *epochs, w_sum = PINNED[penalty]
    got = [v for h in r.history for v in (h.train_loss, h.val_acc, h.val_loss)]
    assert got == pytest.approx([v for e in epochs for v in e], rel=1e-6)
    assert float(r.model.fc1.weight.detach().sum()) == pytest.approx(w_sum, rel=1e-6)


def test_simplenet_population_figures_are_pinned(small, one_thread) -> None:
    from sweep.training.population import fit_population

    x, y, xv, yv = small
    members = fit_population(x, y, xv, yv, lams=[1e-4, 1e-3, 1e-2], seeds=[3, 3, 3],
                             cfg=TrainConfig(epochs=2, lr=0.05, device="cpu"), hidden=32, return_models=True)
    losses, w_sums = PINNED_POPULATION
    got = [h.train_loss for m in members for h in m.history]
    assert got == pytest.approx([v for pair in losses for v in pair], rel=1e-6)
    assert all(m.history[-1].val_acc == 0.574 for m in members)
    assert [float(m.model.fc1.weight.sum()) for m in members] == pytest.approx(w_sums, rel=1e-6)
