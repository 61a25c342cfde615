"""The network a study trains: a built-in architecture or a user's factory, as one ``Net`` recipe.

Built-ins (``model.arch``):

- ``simplenet``: the seed's 784-hidden-10 (``model.SimpleNet``), with its hand-written fast paths;
- ``mlp``: ``Flatten`` then ``Linear``-``ReLU`` for each width of ``model.hidden``, then ``Linear`` to the classes;
- ``cnn``: LeNet-5 for 1x28x28 images (conv 5x5 to 6 maps, pool, conv 5x5 to 16, pool, 120, 84, classes),
  with ReLU and max-pooling as in most modern re-implementations.

``model.factory = "package.module:function"`` names a callable returning a fresh ``nn.Module``.
Every member is built by ``Net.build(seed)``: the global RNG is seeded with the member's seed
(and restored afterwards), so a member's initialisation depends on its seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from sweep.config import ModelConfig
from sweep.errors import ConfigError, FactoryTypeError, ModelOutputError, first_line
from sweep.training import factories
from sweep.training.model import CLASSES, IN_FEATURES, init_simplenet

IMAGE_SHAPES = ((IN_FEATURES,), (28, 28), (1, 28, 28))  # what simplenet and cnn take: one 28x28 image, any layout


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (flat 784-vectors are reshaped), ReLU and max-pooling."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, 1, 28, 28)))


def mlp(in_features: int, hidden: list[int], classes: int) -> nn.Sequential:
    """``Flatten``, then ``Linear``-``ReLU`` per hidden width, then ``Linear`` to ``classes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Net:
    """How to build one member: what ``model`` says, for examples of ``in_shape`` and ``classes`` outputs."""

    arch: str  # "simplenet", "mlp", "cnn", or "factory"
    hidden: tuple[int, ...]
    in_shape: tuple[int, ...]  # one example's shape, e.g. (784,)
    classes: int
    factory: str | None = None
    _make: Callable[[], object] | None = field(default=None, compare=False, repr=False)

    @property
    def is_simplenet(self) -> bool:
        """The seed's network, which keeps its hand-written single-fit and population paths."""
        return self.arch == "simplenet"

    @property
    def source(self) -> str:
        """How the study file names this network (for error lines)."""
        return f"model.factory = {self.factory!r}" if self.factory else f"model.arch = {self.arch!r}"

    def build(self, seed: int) -> nn.Module:
        """A fresh network whose initial weights depend on ``seed`` alone (global RNG restored afterwards)."""
        if self.is_simplenet:
            return init_simplenet(self.hidden[0], seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.arch == "mlp":
                return mlp(math.prod(self.in_shape), list(self.hidden), self.classes)
            if self.arch == "cnn":
                return LeNet5(self.classes)
            assert self._make is not None  # set by net_for for every factory Net
            made = self._make()
        if not isinstance(made, nn.Module):
            raise FactoryTypeError(f"{self.source} returned a {type(made).__name__}, expected a torch.nn.Module; "
                                   "return a fresh network from the function")
        return made


def net_for(cfg: ModelConfig, *, in_shape: tuple[int, ...], classes: int) -> Net:
    """The ``Net`` of ``cfg`` for data of ``in_shape`` and ``classes``; a factory is imported here (once)."""
    hidden = tuple(cfg.hidden) if isinstance(cfg.hidden, list) else (cfg.hidden,)
    if cfg.factory is not None:
        make = factories.resolve(cfg.factory, key="model.factory")
        return Net("factory", (), in_shape, classes, cfg.factory, make)
    if cfg.arch in ("simplenet", "cnn") and in_shape not in IMAGE_SHAPES:
        raise ConfigError(f"model.arch = {cfg.arch!r} takes 28x28 images, shaped (1, 28, 28), (28, 28) or (784,); the data "
                          f"has examples of shape {in_shape}; set model.arch = 'mlp' (it flattens any shape) or a model.factory")
    if cfg.arch == "simplenet" and classes != CLASSES:
        raise ConfigError(f"model.arch = 'simplenet' has 10 outputs, the data has {classes} classes; "
                          f"set model.arch = 'mlp' (hidden = [{hidden[0]}]) or a model.factory")
    # Built-in networks read flat examples: prepare flattens the data for them (builtin_input).
    return Net(cfg.arch, hidden, (math.prod(in_shape),), classes)


def builtin_input(net: Net, x: torch.Tensor) -> torch.Tensor:
    """``x`` as the network reads it: flat (N, features) for a built-in network (SimpleNet's hand-written steps and
    the stacked population multiply it as a matrix), as given for a user's factory."""
    return x if net.factory is not None else x.reshape(int(x.shape[0]), -1)


def check_output(net: Net, x: torch.Tensor, *, seed: int) -> None:
    """Build one member and run ``x`` (a few examples) through it: the output must be (N, classes) logits."""
    model = net.build(seed).to(x.device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward pass is reported as one line
        raise ModelOutputError(f"{net.source}: the forward pass of a batch of shape {tuple(x.shape)} failed "
                               f"({type(err).__name__}: {first_line(err)}); the model must take the data's examples") from None
    expected = (int(x.shape[0]), net.classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected or not out.is_floating_point():
        given = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ModelOutputError(f"{net.source} returns {given} for a batch of {expected[0]} examples, expected float "
                               f"logits of shape {expected} (one per class); make its last layer output {net.classes} values")
