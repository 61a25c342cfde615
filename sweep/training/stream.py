"""A data factory's torch Datasets: loaded into memory once, or read batch by batch as training asks (``data.stream``).

A factory may return a (train, test) pair of map-style Datasets (or DataLoaders over them) whose items are
``(x, y)``. Every item is read once before any trial, which checks it (an ``(x, y)`` pair, one example
shape, one label) and keeps its label. The examples are then either stacked into tensors (they fit the
memory budget and draw no random numbers: the fast path every trainer reads), or left in the Dataset,
with a ``Streamed`` standing for them:

- ``data.stream = "auto"`` (the default) streams a Dataset whose examples need more than the budget
  (half the device's memory), and one whose transform draws random numbers (augmentation: reading its
  first items draws from a global generator, or gives other examples under another seed), so that each
  epoch reads fresh augmentations;
- ``"always"`` streams every Dataset; ``"never"`` loads every one (an augmentation is then drawn once).

A ``Streamed`` is indexed as the trainers index a tensor: ``x[idx]`` reads that batch's items (then, not
before), ``x.split(n)`` reads chunks for evaluation, ``rows(x, idx)`` takes a split or a fold without
reading. Every member of a population is given the same batch.

Random numbers: each read runs with torch's, NumPy's and Python's global generators seeded from the
batch's dataset indices, in order, and restored after. A training batch's indices come from the trial's
seeded order, so its augmentations are fixed by the trial's seed and the epoch (each epoch's new order
draws new ones); every lambda of one seed sees the same augmented batches (common random numbers), and
a study run twice gives the same figures. Evaluation chunks are the same indices every epoch, so the
validation and test examples are read the same way every time.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from sweep.errors import InvalidDataError, TooLargeError, first_line

log = logging.getLogger("sweep")
Policy = Literal["auto", "always", "never"]
_READS = threading.Lock()  # lanes of one population read from their threads; the global generators are shared


def as_tensor(value: Any, name: str, source: str) -> torch.Tensor:
    """``value`` (a tensor, an array, a number) as a CPU tensor of real numbers; anything else is one line."""
    try:
        t = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value.detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidDataError(f"{source}: {name} is not an array ({first_line(err)}); return tensors or NumPy arrays") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise InvalidDataError(f"{source}: {name} has dtype {t.dtype}; return real numbers")
    return t


def as_examples(x: torch.Tensor) -> torch.Tensor:
    """Examples as training reads them: float32, uint8 images scaled to [0, 1] (as torchvision's ToTensor)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _seed_of(indices: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(indices.astype(np.int64).tobytes(), digest_size=8).digest(), "little")


def _states() -> tuple[Any, ...]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _same_states(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return torch.equal(a[0], b[0]) and all(np.array_equal(u, v) for u, v in zip(a[1], b[1], strict=True)) and a[2] == b[2]


def _read(ds: Dataset, indices: np.ndarray, seed: int, source: str, name: str,
          drew: list[bool] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Items ``indices`` of ``ds`` as (example, label) tensors, the global generators seeded with ``seed`` meanwhile;
    ``drew`` (when given) gains whether the reads drew from any of them."""
    with _READS:
        saved = _states()
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            seeded = _states() if drew is not None else None
            items = [ds[int(i)] for i in indices]
            if seeded is not None and drew is not None:
                drew.append(not _same_states(seeded, _states()))
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])
    out = []
    for i, item in zip(indices, items, strict=True):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidDataError(f"{source}: item {i} of the {name} dataset is a {type(item).__name__}, expected an "
                                   "(x, y) pair; make __getitem__ return (example, label)")
        out.append((as_tensor(item[0], f"{name} example {i}", source), as_tensor(item[1], f"{name} label {i}", source)))
    return out


@dataclass(frozen=True)
class Streamed:
    """The examples ``indices`` of a map-style Dataset, read on demand as float32 on ``device`` (module docstring)."""

    dataset: Any  # map-style: __len__ and __getitem__
    indices: torch.Tensor  # int64, positions in ``dataset``
    example_shape: tuple[int, ...]
    device: torch.device
    source: str  # "data.factory = '...'", for error lines
    name: str  # "train" or "test"
    flat: bool = False  # read as (N, features): the built-in networks' input
    dtype: torch.dtype = torch.float32

    @property
    def shape(self) -> torch.Size:
        one = (int(np.prod(self.example_shape)),) if self.flat else self.example_shape
        return torch.Size((len(self.indices), *one))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | slice | torch.Tensor) -> torch.Tensor:
        """The examples ``key`` selects, read now: one example for an int, else a batch (N, ...)."""
        if isinstance(key, int):
            return self[torch.tensor([key])][0]
        chosen = self.indices[key.cpu() if isinstance(key, torch.Tensor) else key].numpy()
        items = _read(self.dataset, chosen, _seed_of(chosen), self.source, self.name)
        bad = next((x.shape for x, _ in items if x.shape != self.example_shape), None)
        if bad is not None:
            raise InvalidDataError(f"{self.source}: a {self.name} example has shape {tuple(bad)} but example 0 "
                                   f"{self.example_shape}; return examples of one shape, the same on every read")
        x = as_examples(torch.stack([x for x, _ in items])) if items else torch.empty(0, *self.example_shape)
        return (x.reshape(len(items), -1) if self.flat else x).to(self.device)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of ``size`` examples, each read as it is reached (evaluation)."""
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def rows(self, idx: torch.Tensor) -> Streamed:
        """The examples at positions ``idx`` of this one, still unread (a split, a fold, a subset)."""
        return replace(self, indices=self.indices[idx.cpu()])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Streamed:  # noqa: ARG002 - as Tensor.to
        return replace(self, device=torch.device(device))

    def reshape(self, n: int, rest: int) -> Streamed:
        """Only ``reshape(len(x), -1)``: the built-in networks read flat examples (``models.builtin_input``)."""
        if (n, rest) != (len(self), -1):
            raise ValueError(f"a streamed dataset reshapes only to (N, -1), got ({n}, {rest})")
        return replace(self, flat=True)


def rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The examples at positions ``idx`` of ``x``: copied for a tensor, still unread for a ``Streamed``."""
    if isinstance(x, Streamed):
        return x.rows(idx)  # type: ignore[return-value]  # a Streamed stands for a tensor (module docstring)
    return x[idx.to(x.device)]


def is_streamed(x: object) -> bool:
    return isinstance(x, Streamed)


def _map_style(ds: Dataset | DataLoader, name: str, source: str) -> Any:
    if isinstance(ds, DataLoader):  # its batching and shuffling are ignored: lambda-sweep owns the splits and order
        ds = ds.dataset
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
        raise InvalidDataError(f"{source}: the {name} dataset is a {type(ds).__name__} without a length; return a "
                               "map-style Dataset (__len__ and __getitem__) whose items are (x, y)")
    if len(ds) == 0:
        raise InvalidDataError(f"{source}: the {name} dataset is empty; return at least one example")
    return ds


def _draws_random(ds: Any, source: str, name: str) -> bool:
    """Whether reading the first items draws from a global generator (a flip that happened not to flip counts), or
    gives other examples under another seed (a generator of the Dataset's own): a random transform, augmentation."""
    first = np.arange(min(len(ds), 8))
    drew: list[bool] = []
    one, two = ([x for x, _ in _read(ds, first, seed, source, name, drew)] for seed in (1, 2))
    return any(drew) or any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(one, two, strict=True))


def _read_all(ds: Any, name: str, source: str, *, keep: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Size]:
    """Every item of the map-style ``ds`` read once and checked: (examples stacked when ``keep``, else None; labels;
    the example shape)."""
    everything = np.arange(len(ds))
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    first: torch.Size | None = None
    for start in range(0, len(everything), 1024):  # seeded as an evaluation chunk is (the module docstring)
        chunk = everything[start:start + 1024]
        for i, (x, y) in zip(chunk, _read(ds, chunk, _seed_of(chunk), source, name), strict=True):
            first = x.shape if first is None else first
            if x.shape != first:
                raise InvalidDataError(f"{source}: {name} example {i} has shape {tuple(x.shape)} but example 0 "
                                       f"{tuple(first)}; return examples of one shape")
            if y.numel() != 1:
                raise InvalidDataError(f"{source}: {name} label {i} has shape {tuple(y.shape)}; return one label per example")
            ys.append(y.reshape(()))
            if keep:
                xs.append(x)
    return (torch.stack(xs) if keep else None), torch.stack(ys), first if first is not None else torch.Size()


def _need_bytes(ds: Any, name: str, source: str) -> int:
    """Bytes the examples of the map-style ``ds`` take loaded (float32 at least, held twice while stacking), from item 0."""
    x = _read(ds, np.array([0]), 0, source, name)[0][0]
    return 2 * len(ds) * x.numel() * max(x.element_size(), 4)


def _stream_reason(policy: Policy, train: Any, need: int, budget: int, source: str) -> str | None:
    """Why the Datasets are read batch by batch, or None to load them (module docstring); ``"never"`` with data over
    the budget is a TooLargeError. Items past the first are read only where they decide: "auto" within the budget."""
    gib = 2**30
    if policy == "never" and need > budget:
        raise TooLargeError(f"{source}: the datasets need about {need / gib:.1f} GiB loaded, more than the memory budget "
                            f"of {budget / gib:.1f} GiB (half the device's memory), and data.stream = 'never'; set "
                            "data.stream = 'auto' to read them batch by batch, or return a subset")
    if policy == "always":
        return "data.stream = 'always'"
    if policy == "never":
        return None
    if need > budget:
        return f"{need / gib:.1f} GiB loaded would pass the budget of {budget / gib:.1f} GiB, half the device's memory"
    if _draws_random(train, source, "train"):
        return "the training Dataset draws random numbers: each epoch reads fresh augmentations, seeded by the trial's seed"
    return None


def load_pair(got: tuple[Any, ...], source: str, *, policy: Policy, budget: int) -> tuple[Any, ...]:
    """A factory's (train, test) Datasets as (x_train, y_train, x_test, y_test): tensors, or ``Streamed`` examples.
    With (train, train_eval, test), a fifth: ``train_eval``'s examples, the training items without augmentation,
    which validation reads (its labels must be the training ones)."""
    names = ("train", "train_eval", "test") if len(got) == 3 else ("train", "test")
    sets = [_map_style(ds, name, source) for ds, name in zip(got, names, strict=True)]
    train, test = sets[0], sets[-1]
    need = sum(_need_bytes(ds, name, source) for ds, name in zip(sets, names, strict=True))
    reason = _stream_reason(policy, train, need, budget, source)
    log.info(f"{source}: {len(train):,} training and {len(test):,} test items, "
             + (f"read batch by batch ({reason})" if reason else "loaded into memory once"))
    out: dict[str, tuple[Any, torch.Tensor]] = {}
    for ds, name in zip(sets, names, strict=True):
        x, y, shape = _read_all(ds, name, source, keep=reason is None)
        out[name] = (x if x is not None else Streamed(ds, torch.arange(len(ds)), tuple(shape), torch.device("cpu"),
                                                      source, name), y)
    (x_tr, y_tr), (x_te, y_te) = out["train"], out["test"]
    if "train_eval" not in out:
        return x_tr, y_tr, x_te, y_te
    x_ev, y_ev = out["train_eval"]
    if not torch.equal(y_ev, y_tr) or x_ev.shape != x_tr.shape:
        raise InvalidDataError(f"{source}: the train_eval dataset ({len(y_ev):,} items of shape {tuple(x_ev.shape[1:])}) "
                               f"is not the train dataset's items ({len(y_tr):,} of shape {tuple(x_tr.shape[1:])}, the "
                               "same labels in the same order); return the training items without augmentation there")
    return x_tr, y_tr, x_te, y_te, x_ev


class _Pairs(Dataset):
    """(examples, labels) of a ``Streamed`` and its labels, a batch per fetch (DataLoader calls ``__getitems__``)."""

    def __init__(self, x: Streamed, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.tensor(idx)
        return self.x[batch], self.y[batch.to(self.y.device)]


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, seed: int | None = None) -> DataLoader:
    """A DataLoader of (x, y) for a library that trains from one (laplace-torch): shuffled by ``seed`` when given.
    A ``Streamed`` ``x`` is read a batch at a time, seeded as every read is (the module docstring)."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    if isinstance(x, Streamed):
        return DataLoader(_Pairs(x, y), batch_size=batch_size, shuffle=seed is not None, generator=gen,
                          collate_fn=_batch_as_is)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=seed is not None, generator=gen)


def _batch_as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch
