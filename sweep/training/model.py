"""The seed document's network: SimpleNet, 784-hidden-10 with ReLU."""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 28 * 28
CLASSES = 10


class SimpleNet(nn.Module):
    """Exactly the seed's model (``hidden=128``): fc1, ReLU, fc2."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, CLASSES)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, IN_FEATURES)
        return self.fc2(self.relu(self.fc1(x)))


def init_simplenet(hidden: int, seed: int) -> SimpleNet:
    """A SimpleNet whose initial weights depend on ``seed`` alone (PyTorch's default init, on the CPU).

    The global RNG is left as it was, so the same seed gives the same weights on
    every device and whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SimpleNet(hidden)
