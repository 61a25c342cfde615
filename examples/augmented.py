"""Digits with random augmentation in the Dataset, as torchvision users write it (docs/models.md, "Datasets").

``mnist_augmented`` returns (train, train_eval, test) torch Datasets of the shipped sample: the training
Dataset shifts and rotates each digit a little at random (``torchvision.transforms.v2.RandomAffine``);
``train_eval`` is the same digits without it, which validation reads; the test Dataset is plain too.
lambda-sweep finds that the training Dataset draws random numbers and reads it batch by batch
(``data.stream = "auto"``), each epoch's batches with fresh augmentations seeded by the trial's seed and
the epoch: a study run twice gives the same figures, and every lambda sees the same augmented batches.
Without ``train_eval`` (a (train, test) pair) the validation examples would be read through the training
Dataset's transform. Run from the repository root::

    PYTHONPATH=. sweep run studies/examples-augmented.toml
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sweep.training import data


class Digits(Dataset):
    """Items (1x28x28 float image in [0, 1], label) of the shipped sample, through ``transform`` when given."""

    def __init__(self, part: data.Images, transform: torch.nn.Module | None = None, n: int | None = None) -> None:
        self.x, self.y, self.transform = part.x[:n], part.y[:n], transform

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.x[i].unsqueeze(0).float().div(255.0)
        return (self.transform(image) if self.transform is not None else image), int(self.y[i])


def _shift_and_turn() -> torch.nn.Module:
    # Imported here: torchvision's import costs about a second, and only this factory needs it.
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1))


def mnist_augmented(n_train: int | None = None, n_test: int | None = None) -> tuple[Dataset, Dataset, Dataset]:
    """The sample as (train, train_eval, test) Datasets; only the training one augmented (module docstring)."""
    ds = data.load("mnist-sample")
    return Digits(ds.train, _shift_and_turn(), n_train), Digits(ds.train, None, n_train), Digits(ds.test, None, n_test)


def mnist_augmented_tiny() -> tuple[Dataset, Dataset, Dataset]:
    """The first 600 training and 200 test digits, as ``mnist_augmented`` (for tests on tiny settings)."""
    return mnist_augmented(600, 200)
