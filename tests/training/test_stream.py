"""A data factory's Datasets read batch by batch (sweep.training.stream): reads, seeding, the load-or-stream choice."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from sweep.errors import InvalidDataError
from sweep.training import stream

SOURCE = "data.factory = 'f:load'"
X = torch.arange(40 * 6, dtype=torch.uint8).reshape(40, 1, 2, 3)
Y = torch.arange(40) % 4


class Noisy(Dataset):
    """Items of X through an augmentation drawing from torch's, NumPy's and Python's global generators."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        noise = torch.rand(1, 2, 3) + float(np.random.rand()) + random.random()
        return X[i].float() / 255 + noise, int(Y[i])


def streamed(ds: Dataset, n: int = 40) -> stream.Streamed:
    return stream.Streamed(ds, torch.arange(n), tuple(ds[0][0].shape), torch.device("cpu"), SOURCE, "train")


def test_a_streamed_dataset_reads_the_items_it_is_indexed_by_as_a_tensor_would() -> None:
    x = streamed(TensorDataset(X, Y))
    whole = X.float() / 255  # uint8 examples scaled as the loaded ones are
    assert x.shape == (40, 1, 2, 3) and len(x) == 40 and x.ndim == 4
    idx = torch.tensor([7, 3, 39])
    assert torch.equal(x[idx], whole[idx]) and torch.equal(x[:2], whole[:2]) and torch.equal(x[5], whole[5])
    part = x.rows(torch.tensor([10, 20, 30, 35]))  # a split or a fold: positions of this view, read later
    assert part.shape == (4, 1, 2, 3) and torch.equal(part[torch.tensor([3, 0])], whole[[35, 10]])
    flat = part.reshape(4, -1)
    assert flat.shape == (4, 6) and torch.equal(flat[torch.tensor([1])], whole[20].reshape(1, 6))
    assert torch.equal(torch.cat(list(x.split(16))), whole)
    assert [len(c) for c in x.split(16)] == [16, 16, 8]
    assert torch.equal(stream.rows(whole, idx), whole[idx])  # a tensor is copied as ever


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_each_read_is_seeded_by_its_batch_and_leaves_the_global_generators_as_they_were() -> None:
    x = streamed(Noisy())
    _seed_all(5)
    untouched = torch.rand(3), np.random.rand(), random.random()
    _seed_all(5)
    a = x[torch.tensor([1, 2, 3])]
    assert torch.equal(a, x[torch.tensor([1, 2, 3])])  # the same batch, the same draws: every lambda of one seed
    b = x[torch.tensor([3, 2, 1])]  # another order (another epoch, another seed): other draws
    assert not torch.equal(a[0], b[2])
    after = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(after[0], untouched[0]) and after[1:] == untouched[1:]  # the caller's streams as they were


def test_reads_from_several_threads_give_what_one_thread_reads() -> None:
    x = streamed(Noisy())
    batches = [torch.randperm(40, generator=torch.Generator().manual_seed(s))[:8] for s in range(16)]
    alone = [x[b] for b in batches]
    got: list[torch.Tensor | None] = [None] * len(batches)

    def read(k: int) -> None:
        for i in range(k, len(batches), 4):
            got[i] = x[batches[i]]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g is not None and torch.equal(g, a) for g, a in zip(got, alone, strict=True))


class RarelyFlips(Dataset):
    """Draws from torch's generator on every read but (almost) never changes the example: still random."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        flip = bool(torch.rand(()) < 1e-9)
        return (X[i].flip(-1) if flip else X[i]), int(Y[i])


class OwnGenerator(Dataset):
    """Noise from a generator of its own, which no seed reaches: the examples differ between reads."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return X[i].float() + float(self.rng.random()), int(Y[i])


class Ragged(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(3 if i == 17 else 2), 0


def test_an_example_whose_shape_changes_between_reads_is_one_line() -> None:
    x = stream.Streamed(Ragged(), torch.arange(40), (2,), torch.device("cpu"), SOURCE, "train")
    with pytest.raises(InvalidDataError, match=r"^data.factory = 'f:load': a train example has shape \(3,\) but example 0 "
                                               r"\(2,\); return examples of one shape, the same on every read$"):
        x[torch.tensor([16, 17])]


@pytest.mark.parametrize(("policy", "train", "budget", "streams"), [
    ("auto", TensorDataset(X, Y), 2**40, False),  # fits and draws nothing: loaded once
    ("auto", Noisy(), 2**40, True),  # augments: read batch by batch
    ("auto", RarelyFlips(), 2**40, True),  # draws from a global generator, even if the examples came out the same
    ("auto", OwnGenerator(), 2**40, True),  # its examples differ between two reads
    ("auto", TensorDataset(X, Y), 100, True),  # over the budget
    ("always", TensorDataset(X, Y), 2**40, True),
    ("never", Noisy(), 2**40, False),  # the augmentation drawn once
])
def test_load_pair_loads_or_streams_as_data_stream_says(policy: stream.Policy, train: Dataset, budget: int,
                                                        streams: bool) -> None:
    x_tr, y_tr, x_te, y_te = stream.load_pair((train, TensorDataset(X[:10], Y[:10])), SOURCE, policy=policy, budget=budget)
    assert stream.is_streamed(x_tr) == streams and stream.is_streamed(x_te) == streams
    assert torch.equal(y_tr, Y) and torch.equal(y_te, Y[:10])  # labels are always read, once
    assert tuple(x_tr.shape) == (40, 1, 2, 3)
    if not streams:
        assert isinstance(x_tr, torch.Tensor)
    if isinstance(train, OwnGenerator):
        return  # no seed reaches its generator: not reproducible, whatever reads it
    again = stream.load_pair((train, TensorDataset(X[:10], Y[:10])), SOURCE, policy=policy, budget=budget)[0]
    idx = torch.tensor([0, 9, 33])
    assert torch.equal(x_tr[idx], again[idx])  # loaded or streamed, reading twice gives the same examples


def test_a_loader_over_streamed_examples_gives_the_batches_a_tensor_loader_gives() -> None:
    x = streamed(TensorDataset(X, Y))
    got = [(xb, yb) for xb, yb in stream.loader(x, Y, 16, seed=3)]
    want = [(xb, yb) for xb, yb in stream.loader(X.float() / 255, Y, 16, seed=3)]
    assert len(got) == len(want) == 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want, strict=True))


def test_a_train_eval_dataset_is_what_validation_reads_and_must_hold_the_training_items() -> None:
    plain = TensorDataset(X, Y)
    got = stream.load_pair((Noisy(), plain, TensorDataset(X[:10], Y[:10])), SOURCE, policy="auto", budget=2**40)
    assert len(got) == 5 and all(stream.is_streamed(x) for x in (got[0], got[2], got[4]))
    idx = torch.tensor([3, 1])
    assert torch.equal(got[4][idx], X[idx].float() / 255)  # the training items without the augmentation
    assert not torch.equal(got[0][idx], got[4][idx])
    with pytest.raises(InvalidDataError, match=r"^data.factory = 'f:load': the train_eval dataset \(39 items of shape "
                                               r"\(1, 2, 3\)\) is not the train dataset's items \(40 of shape \(1, 2, 3\), "
                                               r"the same labels in the same order\); return the training items"):
        stream.load_pair((Noisy(), TensorDataset(X[:39], Y[:39]), plain), SOURCE, policy="auto", budget=2**40)
