"""Datasets as uint8 tensors, splits of the training set, and normalisation on the device.

Each dataset is read once per process (IDX files decoded by torchvision) into
``Images``: uint8 images (N, 28, 28) and int64 labels. Training code moves them
to the device once and normalises there, so no per-sample DataLoader is needed.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from sweep.errors import DataError, first_line

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
OFFLINE_HINT = (
    "set data.dataset = 'mnist-sample' (shipped) or 'fashion-mnist' (apt-get install dataset-fashion-mnist), which work offline"
)


@dataclass(frozen=True)
class Images:
    """Images as stored (uint8, N x 28 x 28) and their integer labels."""

    x: torch.Tensor  # uint8 (N, 28, 28)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its training and test images."""

    name: str
    train: Images
    test: Images


def default_data_dir() -> Path:
    """Where datasets live unless ``data.data_dir`` says otherwise."""
    return Path(os.environ.get("SWEEP_DATA_DIR", "data"))


def load(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name (cached per process)."""
    return _load(name, str(Path(data_dir) if data_dir is not None else default_data_dir()))


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: str) -> Dataset:
    if name == "mnist-sample":
        return _mnist_sample()
    if name == "mnist":
        return _mnist(Path(data_dir))
    if name == "fashion-mnist":
        return _fashion_mnist(Path(data_dir))
    raise DataError(f"unknown dataset {name!r}; expected one of mnist, fashion-mnist, mnist-sample")


def _mnist_sample() -> Dataset:
    with resources.files("sweep.training.datasets").joinpath("mnist-sample.npz").open("rb") as fh:
        arrays = np.load(io.BytesIO(fh.read()))
        part = {k: torch.from_numpy(arrays[k].copy()) for k in ("train_x", "train_y", "test_x", "test_y")}
    return Dataset(
        "mnist-sample",
        Images(part["train_x"], part["train_y"].long()),
        Images(part["test_x"], part["test_y"].long()),
    )


def _read_idx(raw: Path) -> Dataset:
    """Decode the four IDX files in ``raw`` through torchvision, checking shapes and counts."""
    # Imported here: torchvision's package import (its models) costs about a second per process,
    # and the shipped sample, which the quick start and every worker of it reads, does not need it.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    tensors = []
    for fname in IDX_FILES:
        path = raw / fname
        reader = read_image_file if "images" in fname else read_label_file
        try:
            tensors.append(reader(str(path)))
        except (AssertionError, ValueError, RuntimeError, IndexError) as err:
            detail = f" ({err})" if str(err) else ""
            raise DataError(
                f"{path} is not a valid IDX file (wrong magic number or truncated){detail}; "
                "delete it and put the original file there again"
            ) from None
        except OSError as err:
            raise DataError(f"cannot read {path}: {err.strerror or err}; check the file and its permissions") from None
    train_x, train_y, test_x, test_y = tensors
    for split, x, y in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        if x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
            raise DataError(f"{raw}/{split}-images-idx3-ubyte holds images of shape {tuple(x.shape[1:])}, expected 28x28")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{raw}: {split} has {x.shape[0]} images but {y.shape[0]} labels; the files come from different "
                "datasets or one is truncated: put matching originals there"
            )
    return Dataset(raw.parent.name, Images(train_x, train_y.long()), Images(test_x, test_y.long()))


def _have_idx(raw: Path) -> bool:
    return all((raw / f).exists() for f in IDX_FILES)  # present but unreadable is reported as such


def _gunzip_into(src_dir: Path, raw: Path) -> None:
    """Decompress ``NAME.gz`` files into ``raw`` atomically (a temp file, then a rename)."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for fname in IDX_FILES:
            if (raw / fname).is_file():
                continue
            tmp = raw / f".{fname}.part"
            with gzip.open(src_dir / f"{fname}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw / fname)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot unpack {src_dir} into {raw}: {err}; check that the folder is writable") from None


def _fashion_mnist(data_dir: Path) -> Dataset:
    raw = data_dir / "FashionMNIST" / "raw"
    if not _have_idx(raw):
        source = Path(os.environ.get("SWEEP_FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST))
        if not all((source / f"{f}.gz").is_file() for f in IDX_FILES):
            raise DataError(
                f"fashion-mnist: no IDX files in {raw} nor in {source}; run 'apt-get install dataset-fashion-mnist' "
                f"or put {', '.join(IDX_FILES)} in {raw}"
            )
        _gunzip_into(source, raw)
    return _read_idx(raw)


def _mnist(data_dir: Path) -> Dataset:
    raw = data_dir / "MNIST" / "raw"
    if not _have_idx(raw):
        # torchvision downloads (and checks the MD5 of) each file from its mirrors.
        from torchvision import datasets as tvd

        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                tvd.MNIST(root=str(data_dir), train=True, download=True)
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"mnist: no IDX files in {raw} and the download failed ({first_line(err)}); put {', '.join(IDX_FILES)} "
                f"(or their .gz) in {raw}, or {OFFLINE_HINT}"
            ) from None
    return _read_idx(raw)


def holdout_split(labels: torch.Tensor, holdout: float, seed: int, *,
                  stratify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (fit, validation) index split of the training set; a plain seeded shuffle split of
    real-valued targets (``stratify = False``: there are no classes to keep in proportion).

    ``holdout`` below 1 is a fraction, otherwise a count of validation examples.
    """
    n = int(labels.shape[0])
    size = holdout if holdout < 1 else int(holdout)
    count = round(size * n) if isinstance(size, float) else size
    if not 10 <= count <= n - 10:
        raise DataError(
            f"holdout of {holdout:g} leaves {count} validation examples of {n}; "
            f"set data.holdout to a fraction in (0, 1) or a count below {n - 10}"
        )
    kind = StratifiedShuffleSplit if stratify else ShuffleSplit
    splitter = kind(n_splits=1, test_size=count, random_state=seed)
    try:
        fit_idx, val_idx = next(splitter.split(np.zeros(n), labels.numpy()))
    except ValueError as err:  # e.g. a class with one example, or more classes than validation examples
        raise DataError(f"cannot make a stratified holdout split of {n} examples ({err}); "
                        "give every class at least two examples, or change data.holdout") from None
    return torch.from_numpy(np.sort(fit_idx)), torch.from_numpy(np.sort(val_idx))


def subset_indices(labels: torch.Tensor, subset: float, seed: int, *, stratify: bool = True) -> torch.Tensor:
    """A stratified, seeded part of the training set (``data.subset``): below 1 a fraction, otherwise a count.

    Every class keeps its share, so a study tuned on 10% of the data sees the class balance of the whole;
    real-valued targets (``stratify = False``) are drawn by a plain seeded shuffle.
    """
    n = int(labels.shape[0])
    count = round(subset * n) if subset < 1 else int(subset)
    if count >= n:
        return torch.arange(n)  # a count of at least the whole set keeps it all, in order
    if count < 20:
        raise DataError(f"data.subset = {subset:g} keeps {count} of {n} training examples; "
                        "keep at least 20 (a larger fraction or count), or remove data.subset")
    splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(n_splits=1, train_size=count, random_state=seed)
    try:
        keep, _ = next(splitter.split(np.zeros(n), labels.numpy()))
    except ValueError as err:  # more classes than kept examples, or a class with one example
        raise DataError(f"cannot draw a stratified data.subset of {count} of {n} examples ({err}); "
                        "keep more examples, or remove data.subset") from None
    return torch.from_numpy(np.sort(keep))


def to_device(images: Images, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened float images in [0, 1] (as torchvision's ToTensor gives) and labels, on ``device``."""
    x = images.x.to(device, non_blocking=True).reshape(len(images), -1).float().div_(255.0)
    return x, images.y.to(device, non_blocking=True)
