"""Three networks of the kinds people bring, as model factories (docs/models.md, "Network kinds").

- ``cnn_bn_dropout``: LeNet-5 with BatchNorm2d after each convolution and dropout before each linear layer;
  trains as a torch.func population, each member with its own running statistics.
- ``gru``: a GRU reading a digit's 28 rows as a sequence; vmap has no batching rule for ``aten::gru``,
  so a population of it trains member by member (one line says so).
- ``transformer``: a one-layer Transformer encoder over the 28 rows (dropout 0.1); a torch.func population.

``mnist_datasets`` is a data factory returning torch Datasets (items (image, label), images 1x28x28),
read once into tensors by lambda-sweep. The study files ``studies/examples-*.toml`` name them; run from
the repository root with ``PYTHONPATH=.``, for example::

    PYTHONPATH=. sweep run studies/examples-gru.toml
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sweep.training import data


class LeNetBN(nn.Module):
    """LeNet-5 for 1x28x28 images with BatchNorm2d and dropout."""

    def __init__(self, p: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(p), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Dropout(p), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, 1, 28, 28)))


class RowGRU(nn.Module):
    """A GRU over the 28 rows of a digit (28 values each); the last hidden state is classified."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(28, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x.reshape(-1, 28, 28))
        return self.out(states[:, -1])


class RowTransformer(nn.Module):
    """Rows as 28 tokens: a linear embedding plus a learned position, one encoder layer, mean-pooled, classified."""

    def __init__(self, width: int = 32, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Linear(28, width)
        self.position = nn.Parameter(torch.zeros(28, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True)
        # no nested tensors: they are a fast path for padded batches that vmap cannot batch
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(-1, 28, 28)) + self.position
        return self.out(self.encoder(tokens).mean(1))


def cnn_bn_dropout() -> nn.Module:
    return LeNetBN()


def gru() -> nn.Module:
    return RowGRU()


def transformer() -> nn.Module:
    return RowTransformer()


def mnist_datasets() -> tuple[Dataset, Dataset]:
    """The shipped 5,000-digit sample as (train, test) Datasets of (1x28x28 float image, label) items."""
    ds = data.load("mnist-sample")
    return _images(ds.train), _images(ds.test)


def mnist_datasets_tiny() -> tuple[Dataset, Dataset]:
    """The sample's first 600 training and 200 test digits, as ``mnist_datasets`` (for tests on tiny settings)."""
    ds = data.load("mnist-sample")
    return _images(ds.train, 600), _images(ds.test, 200)


def _images(part: data.Images, n: int | None = None) -> TensorDataset:
    return TensorDataset(part.x[:n].float().div(255.0).unsqueeze(1), part.y[:n])
