"""Users' factories (sweep.training.factories): import, source hash, data checks; and the whole path with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import optuna
import pytest
import torch

from sweep import config
from sweep.errors import FactoryChangedError, FactoryImportError, FactoryTypeError, InvalidDataError, TooLargeError
from sweep.training import factories
from tests import procs

MODULE = '''
"""Factories written by a test: a small MLP and a learnable 3-class problem on 4x4 "images"."""
import numpy as np
import torch
from torch import nn


def model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def data():
    rng = np.random.default_rng(7)
    x = rng.random((390, 4, 4)).astype(np.float32)
    y = x[:, :3, :].sum(2).argmax(1).astype(np.int64)  # which of the first three rows is brightest
    return torch.from_numpy(x[:300]), torch.from_numpy(y[:300]), x[300:], y[300:]
'''

STUDY = """\
name = "{name}"
[data]
factory = "{module}:data"
holdout = 60
[model]
factory = "{module}:model"
[train]
epochs = 10
lr = 0.5
momentum = 0.5
batch_size = 32
device = "cpu"
[search]
sampler = "random"
n_trials = 4
pruner = "none"
batch = 2
"""


def write_module(folder: Path, name: str, text: str = MODULE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_resolve_and_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "fac_resolve")
    assert factories.resolve("fac_resolve:model", key="model.factory")() is not None
    cfg = config.validate({"name": "x", "model": {"factory": "fac_resolve:model"}, "data": {"factory": "fac_resolve:data"}},
                          source="f")
    prints = factories.fingerprints(cfg)
    assert set(prints) == {"model.factory", "data.factory"}
    assert prints["model.factory"]["path"] == "fac_resolve:model" and len(prints["model.factory"]["sha256"]) == 64
    factories.check_fingerprints(prints, cfg)  # the same code: accepted
    changed = {k: {**v, "sha256": "0" * 64} for k, v in prints.items()}
    with pytest.raises(FactoryChangedError, match="^study 'x': the source of model.factory 'fac_resolve:model' differs"):
        factories.check_fingerprints(changed, cfg)
    with pytest.raises(FactoryImportError, match="has no attribute 'nope'"):
        factories.resolve("fac_resolve:nope", key="model.factory")
    with pytest.raises(FactoryImportError, match="module 'fac_missing_x' does not import \\(ModuleNotFoundError: "):
        factories.resolve("fac_missing_x:model", key="model.factory")
    with pytest.raises(FactoryTypeError, match="'fac_resolve:np' is a module, not callable"):
        factories.resolve("fac_resolve:np", key="model.factory")


def test_load_data_scales_uint8_and_counts_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "fac_uint8", """
        import numpy as np
        def data():
            x = np.full((20, 2, 2), 255, dtype=np.uint8)
            y = np.arange(20) % 4
            return x, y, x[:5], y[:5]
    """)
    arrays = factories.load_data("fac_uint8:data")
    assert arrays.x_train.dtype == torch.float32 and float(arrays.x_train.max()) == 1.0
    assert arrays.classes == 4 and arrays.y_test.dtype == torch.int64


@pytest.mark.parametrize(("body", "error", "message"), [
    ("return x, y[:-1], x, y", InvalidDataError, "x_train has shape (30, 3) and y_train (29,); expected"),
    ("return x, y, x, y + 1", InvalidDataError, "label 3 is out of range: labels must be 0..2"),
    ("return x, y - 1, x, y", InvalidDataError, "label -1 is out of range"),
    ("return x, y * 0, x, y * 0", InvalidDataError, "y_train holds 1 class(es); a classifier needs at least two"),
    ("return x, y.astype(np.float32), x, y", InvalidDataError, "y_train holds torch.float32 values"),
    ("return x, y, x[:, :2], y", InvalidDataError, "training examples have shape (3,) but test examples (2,)"),
    ("return x, y", FactoryTypeError, "returned a tuple, expected (x_train, y_train, x_test, y_test)"),
    ("return x, y, x, y, x", FactoryTypeError, "returned a tuple, expected (x_train, y_train, x_test, y_test)"),
])
def test_bad_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, error: type, message: str) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"fac_bad_{abs(hash(body)) % 10**8}"
    write_module(tmp_path, name, f"""
        import numpy as np
        def data():
            x = np.random.default_rng(0).random((30, 3))
            y = np.arange(30) % 3
            {body}
    """)
    with pytest.raises(error) as err:
        factories.load_data(f"{name}:data")
    assert str(err.value).startswith(f"data.factory = '{name}:data'") and message in str(err.value)


DATASETS = """
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    x = torch.arange(40 * 6, dtype=torch.uint8).reshape(40, 1, 2, 3)
    y = torch.arange(40) % 4

    class Items(Dataset):
        def __init__(self, item):
            self.item = item
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return self.item(i)

    def arrays():
        return x[:30], y[:30], x[30:], y[30:]
    def datasets():
        return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])
    def loaders():  # shuffled and batched: lambda-sweep reads the dataset underneath in its own order
        return DataLoader(TensorDataset(x[:30], y[:30]), batch_size=7, shuffle=True), TensorDataset(x[30:], y[30:])
    def plain_items():
        return Items(lambda i: (x[i].numpy(), int(y[i]))), Items(lambda i: (x[i], y[i]))
    def not_pairs():
        return Items(lambda i: x[i]), Items(lambda i: x[i])
    def ragged():
        return Items(lambda i: (x[i, :, :, : 2 + (i == 3)], y[i])), Items(lambda i: (x[i], y[i]))
"""


def test_datasets_and_loaders_are_read_once_into_the_same_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "fac_datasets", DATASETS)
    want = factories.load_data("fac_datasets:arrays")
    assert want.x_train.shape == (30, 1, 2, 3) and float(want.x_train.max()) <= 1.0
    for name in ("datasets", "loaders"):
        got = factories.load_data(f"fac_datasets:{name}")
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(got, field), getattr(want, field)), (name, field)
        assert got.classes == 4
    items = factories.load_data("fac_datasets:plain_items")  # NumPy examples and int labels, 40 of each
    assert items.x_train.shape == (40, 1, 2, 3) and items.y_train.dtype == torch.int64
    with pytest.raises(InvalidDataError, match=r"^data.factory = 'fac_datasets:not_pairs': item 0 of the train dataset "
                                               r"is a Tensor, expected an \(x, y\) pair; make __getitem__ return"):
        factories.load_data("fac_datasets:not_pairs")
    with pytest.raises(InvalidDataError, match=r"train example 3 has shape \(1, 2, 3\) but example 0 \(1, 2, 2\); "
                                               "return examples of one shape"):
        factories.load_data("fac_datasets:ragged")


class Endless(torch.utils.data.Dataset):
    """A dataset far larger than any machine's memory; only its first item can be read."""

    def __len__(self) -> int:
        return 10**12

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i > 0:
            raise AssertionError("read past the first item: the size should have been refused first")
        return torch.zeros(1, 28, 28), 0


def test_a_dataset_over_the_budget_is_refused_from_its_first_item_when_streaming_is_off(tmp_path: Path) -> None:
    """data.stream = 'never' loads the data: over the budget it is one line, before any item past the first is read
    (with 'auto' such data is read batch by batch: tests/training/test_stream.py)."""
    from sweep.training import stream

    with pytest.raises(TooLargeError, match=r"^data.factory = 'f:load': the datasets need about 11682510.4 GiB loaded, "
                                            r"more than the memory budget of 11.5 GiB \(half the device's memory\), and "
                                            r"data.stream = 'never'; set data.stream = 'auto' to read them batch by "
                                            r"batch, or return a subset$"):
        stream.load_pair((Endless(), Endless()), "data.factory = 'f:load'", policy="never", budget=int(11.5 * 2**30))


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(procs.sweep(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_own_model_and_data_with_run_best_and_a_worker(tmp_path: Path, storage_url: str) -> None:
    """The issue's done-when: a fresh module on PYTHONPATH; sweep run, sweep best --format json, a sweep worker."""
    mods = tmp_path / "mods"
    module = write_module(mods, "own_factories")
    study = tmp_path / "own.toml"
    study.write_text(STUDY.format(name="own", module="own_factories"), encoding="utf-8")
    env = procs.env(storage_url)
    env["PYTHONPATH"] = os.pathsep.join([str(mods), env["PYTHONPATH"]])
    env["SWEEP_TRUSTED_FACTORIES"] = "own_factories"  # a worker imports only factories it was told to trust (#28)

    # A worker process trains a submitted study of the factories
    assert run("submit", str(study), "--name", "own-w", env=env, cwd=tmp_path).returncode == 0
    worker = run("worker", "--study", "own-w", env=env, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    assert worker.stderr.count(" complete lambda=") == 4
    # sweep run with a second local process (it imports the factories too), then sweep best
    ran = run("run", str(study), "--workers", "2", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    best = run("best", "own", "--format", "json", env=env, cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    record = json.loads(best.stdout)
    store = optuna.load_study(study_name="own", storage=storage_url)
    trials = {t.number: t for t in store.get_trials()}
    assert len([t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    assert record["lambda"] == trials[record["trial"]].params["lambda"] and 1e-5 <= record["lambda"] <= 1e-2
    assert 0.5 < record["test_acc"] <= 1.0  # three classes: chance is about 1/3
    assert set(store.user_attrs["factories"]) == {"model.factory", "data.factory"}
    for name in ("own", "own-w"):
        s = optuna.load_study(study_name=name, storage=storage_url)
        assert all(t.value is not None and t.value > 0.5 for t in s.get_trials())  # chance: about 1/3

    # Changed factory code: resuming and working are refused, naming the factory, and nothing runs
    module.write_text(MODULE + "\n# a change\n", encoding="utf-8")
    line = ("error: study '{}': the source of model.factory 'own_factories:model' differs from the one the study was made "
            "with")
    ran = run("run", str(study), env=env, cwd=tmp_path)
    assert ran.returncode == 1 and ran.stderr.startswith(line.format("own")) and ran.stderr.count("\n") == 1
    assert ran.stderr.rstrip().endswith("restore that code to resume the study, or run the changed code as a new study "
                                        "with --name")
    worker = run("worker", "--study", "own-w", env=env, cwd=tmp_path)
    assert worker.returncode == 1 and worker.stderr.startswith(line.format("own-w"))
