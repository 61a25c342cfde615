"""Built-in networks and the Net recipe (sweep.training.models), and the model keys of a study file."""

from __future__ import annotations

import pytest
import torch

from sweep import config
from sweep.config import ModelConfig, TrainConfig
from sweep.errors import ConfigError, FactoryTypeError, ModelOutputError
from sweep.training.fit import _penalty_params
from sweep.training.model import SimpleNet
from sweep.training.models import LeNet5, Net, builtin_input, check_output, net_for


def test_builtin_shapes_and_layers() -> None:
    x = torch.rand(3, 784)
    mlp = net_for(ModelConfig(arch="mlp", hidden=[512, 256]), in_shape=(784,), classes=10).build(0)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [512, 256, 10]
    assert mlp(x).shape == (3, 10)
    assert mlp(x.view(3, 28, 28)).shape == (3, 10)  # Flatten first: any example shape
    cnn = net_for(ModelConfig(arch="cnn"), in_shape=(784,), classes=10).build(0)
    assert isinstance(cnn, LeNet5) and cnn(x).shape == (3, 10) and cnn(x.view(3, 1, 28, 28)).shape == (3, 10)
    assert sum(p.numel() for p in cnn.parameters()) == 61706  # LeNet-5's classic count for 10 classes
    simple = net_for(ModelConfig(hidden=64), in_shape=(784,), classes=10).build(0)
    assert isinstance(simple, SimpleNet) and simple.fc1.out_features == 64


def test_build_depends_on_the_seed_alone_and_leaves_the_global_rng() -> None:
    net = net_for(ModelConfig(arch="mlp", hidden=[16]), in_shape=(784,), classes=10)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = net.build(5), net.build(5), net.build(6)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a[1].weight, b[1].weight) and not torch.equal(a[1].weight, c[1].weight)


def test_decay_bias_false_decays_tensors_of_two_or_more_dims() -> None:
    cnn = LeNet5()
    decay, keep = _penalty_params(cnn, decay_bias=False)
    assert [p.dim() for p in decay] == [4, 4, 2, 2, 2] and all(p.dim() == 1 for p in keep) and len(keep) == 5
    decay, keep = _penalty_params(cnn, decay_bias=True)
    assert len(decay) == 10 and keep == []


@pytest.mark.parametrize(("model", "message"), [
    ({"arch": "mlp", "hidden": [512, 0]}, "model.hidden: must be a whole number >= 1 or a list of them (given: [512, 0])"),
    ({"hidden": [512, 256]}, "model: hidden must be one width for arch 'simplenet', got [512, 256]; "
                             "for several hidden layers set arch = 'mlp'"),
    ({"arch": "cnn", "hidden": 64}, "model: hidden does not apply to arch 'cnn' (LeNet-5's sizes are fixed); remove it"),
    ({"arch": "resnet"}, "model.arch: Input should be 'simplenet', 'mlp' or 'cnn' (given: 'resnet')"),
    ({"factory": "nodots"}, "model.factory: must be an import path 'package.module:function' (given: 'nodots')"),
    ({"factory": "a.b:c", "arch": "mlp"}, "model: set either model.factory or model.arch/hidden, not both"),
])
def test_model_keys_are_validated(model: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.validate({"name": "x", "model": model}, source="f")
    assert str(err.value) == f"f: {message}; see the README's study file reference"


def test_shipped_integer_hidden_still_loads_and_new_keys_round_trip() -> None:
    old = config.validate({"name": "x", "model": {"hidden": 128}}, source="f")
    assert old.model == ModelConfig() and old.train.momentum == 0
    new = config.validate({"name": "x", "model": {"arch": "mlp", "hidden": [512, 256]}, "train": {"momentum": 0.9}},
                          source="f")
    assert config.from_json(new.to_json()) == new
    with pytest.raises(ConfigError, match="train.momentum: Input should be less than 1"):
        config.validate({"name": "x", "train": {"momentum": 1.0}}, source="f")


def test_data_shape_must_fit_the_builtin() -> None:
    with pytest.raises(ConfigError, match=r"^model.arch = 'cnn' takes 28x28 images, shaped \(1, 28, 28\), \(28, 28\) or "
                                          r"\(784,\); the data has examples of shape \(64,\); set model.arch = 'mlp'"):
        net_for(ModelConfig(arch="cnn"), in_shape=(64,), classes=10)
    with pytest.raises(ConfigError, match=r"model.arch = 'simplenet' takes 28x28 images.*shape \(4, 196\)"):
        net_for(ModelConfig(), in_shape=(4, 196), classes=10)  # 784 values, but not one image
    with pytest.raises(ConfigError, match="model.arch = 'simplenet' has 10 outputs, the data has 3 classes"):
        net_for(ModelConfig(), in_shape=(784,), classes=3)
    small = net_for(ModelConfig(arch="mlp", hidden=8), in_shape=(1, 8, 8), classes=3).build(0)
    assert small(torch.rand(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("arch", ["simplenet", "mlp", "cnn"])
@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 28, 28)])
def test_builtins_take_any_layout_of_one_image(arch: str, shape: tuple[int, ...]) -> None:
    net = net_for(ModelConfig(arch=arch) if arch == "cnn" else ModelConfig(arch=arch, hidden=16), in_shape=shape, classes=10)
    x = builtin_input(net, torch.rand(3, *shape))
    assert x.shape == (3, 784) and net.in_shape == (784,)
    assert net.build(0)(x).shape == (3, 10)


def test_check_output() -> None:
    def net(make) -> Net:  # noqa: ANN001
        return Net("factory", (), (784,), 10, "m:f", make)

    check_output(net(lambda: torch.nn.Linear(784, 10)), torch.rand(2, 784), seed=0)
    with pytest.raises(ModelOutputError, match=r"^model.factory = 'm:f' returns shape \(2, 5\) for a batch of 2 examples, "
                                               r"expected float logits of shape \(2, 10\)"):
        check_output(net(lambda: torch.nn.Linear(784, 5)), torch.rand(2, 784), seed=0)
    with pytest.raises(ModelOutputError, match=r"the forward pass of a batch of shape \(2, 784\) failed \(RuntimeError: "):
        check_output(net(lambda: torch.nn.Linear(100, 10)), torch.rand(2, 784), seed=0)
    with pytest.raises(FactoryTypeError, match="^model.factory = 'm:f' returned a str, expected a torch.nn.Module"):
        check_output(net(lambda: "model"), torch.rand(2, 784), seed=0)


def test_simplenet_net_builds_the_seed_network_bit_for_bit() -> None:
    from sweep.training.fit import fit
    from sweep.training.model import init_simplenet

    net = net_for(ModelConfig(hidden=32), in_shape=(784,), classes=10)
    assert torch.equal(net.build(3).fc1.weight, init_simplenet(32, 3).fc1.weight)
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
    a = fit(x, y, x, y, lam=1e-3, cfg=TrainConfig(epochs=1, device="cpu"), hidden=32, seed=3)
    b = fit(x, y, x, y, lam=1e-3, cfg=TrainConfig(epochs=1, device="cpu"), seed=3, net=net)
    assert a.model is not None and b.model is not None
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
