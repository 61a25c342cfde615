"""A custom model factory and a custom data factory, as a user would write them (docs/models.md).

``studies/examples-digits.toml`` names both::

    [data]
    factory = "examples.digits:load"
    [model]
    factory = "examples.digits:model"

Run it from the repository root, with the folder that holds ``examples/`` on ``PYTHONPATH``
(or install your own package)::

    PYTHONPATH=. sweep run studies/examples-digits.toml

The data are scikit-learn's 1,797 8x8 handwritten digits (shipped with scikit-learn, no download).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

TEST = 297  # examples held out as the test set; lambda-sweep splits the other 1,500 for validation itself


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], integer labels 0..9, a fixed split."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[TEST:], order[:TEST]
    return x[train], y[train], x[test], y[test]


class DigitsNet(nn.Module):
    """A small convolutional network for 1x8x8 digits: conv 3x3 to 8 maps, pool, then a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(x.reshape(-1, 1, 8, 8))))
        return self.out(h.flatten(1))


def model() -> nn.Module:
    """A fresh, randomly initialised network (lambda-sweep seeds the RNG before each call)."""
    return DigitsNet()
