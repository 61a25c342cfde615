from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from sweep.errors import DataError
from sweep.training import data


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX (ubyte) file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    return struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def make_idx_set(folder: Path, *, n_train: int = 60, n_test: int = 20, gz: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in parts.items():
        blob = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)


def test_mnist_sample_is_shipped_real_digits() -> None:
    ds = data.load("mnist-sample")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert ds.train.x.dtype == torch.uint8 and tuple(ds.train.x.shape[1:]) == (28, 28)
    assert sorted(torch.unique(ds.train.y).tolist()) == list(range(10))
    assert 0 < ds.train.x.float().mean() < 255  # real pixels, not blank


def test_holdout_split_is_stratified_disjoint_and_seeded() -> None:
    y = data.load("mnist-sample").train.y
    fit, val = data.holdout_split(y, 1000, seed=0)
    assert len(val) == 1000 and len(fit) == 3000
    assert set(fit.tolist()).isdisjoint(val.tolist()) and len(set(fit.tolist()) | set(val.tolist())) == 4000
    full = torch.bincount(y, minlength=10).float() / len(y)
    part = torch.bincount(y[val], minlength=10).float() / len(val)
    assert torch.allclose(full, part, atol=0.003)
    assert torch.equal(data.holdout_split(y, 1000, seed=0)[1], val)
    assert not torch.equal(data.holdout_split(y, 1000, seed=1)[1], val)
    assert len(data.holdout_split(y, 1 / 6, seed=0)[1]) == 667


def test_holdout_too_large_is_clear() -> None:
    y = data.load("mnist-sample").train.y
    with pytest.raises(DataError, match=r"^holdout of 10000 leaves 10000 validation examples of 4000; set data.holdout"):
        data.holdout_split(y, 10000, seed=0)


def test_to_device_scales_like_totensor() -> None:
    x, y = data.to_device(data.load("mnist-sample").test, torch.device("cpu"))
    assert x.shape == (1000, 784) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_fashion_mnist_unpacks_gz_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_set(tmp_path / "debian", gz=True)
    monkeypatch.setenv("SWEEP_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    ds = data.load("fashion-mnist", tmp_path / "data")
    assert (len(ds.train), len(ds.test)) == (60, 20)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").glob(".*.part"))


def test_fashion_mnist_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        data.load("fashion-mnist", tmp_path / "data")
    assert str(info.value).startswith(f"fashion-mnist: no IDX files in {tmp_path}/data/FashionMNIST/raw nor in ")
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_wrong_magic_and_truncated_and_mismatch(tmp_path: Path) -> None:
    raw = tmp_path / "a" / "MNIST" / "raw"
    make_idx_set(raw)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is not a valid IDX file \(wrong magic number or truncated\)"):
        data.load("mnist", tmp_path / "a")

    raw = tmp_path / "b" / "MNIST" / "raw"
    make_idx_set(raw)
    blob = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is not a valid IDX file"):
        data.load("mnist", tmp_path / "b")

    raw = tmp_path / "c" / "MNIST" / "raw"
    make_idx_set(raw)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(59) % 10))
    with pytest.raises(DataError, match=r"train has 60 images but 59 labels"):
        data.load("mnist", tmp_path / "c")


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a folder, as a stand-in for the MNIST mirrors."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()


def test_mnist_downloads_from_a_mirror(tmp_path: Path, mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = mirror
    make_idx_set(root, n_train=30, n_test=10, gz=True, seed=5)
    resources = [(f.name, hashlib.md5(f.read_bytes()).hexdigest()) for f in sorted(root.glob("*.gz"))]
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    ds = data.load("mnist", tmp_path / "data")
    assert (len(ds.train), len(ds.test)) == (30, 10)
    assert (tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_mnist_offline_names_folder_and_fix(tmp_path: Path, mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = mirror  # serves nothing: every file is a 404, as when offline
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path / "data")
    msg = str(info.value)
    assert msg.startswith(f"mnist: no IDX files in {tmp_path}/data/MNIST/raw and the download failed")
    assert "set data.dataset = 'mnist-sample' (shipped) or 'fashion-mnist'" in msg and "\n" not in msg


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match=r"^unknown dataset 'cifar'; expected one of mnist, fashion-mnist, mnist-sample$"):
        data.load("cifar")


def test_subset_is_stratified_seeded_and_takes_a_fraction_or_a_count() -> None:
    labels = data.load("mnist-sample").train.y
    part = data.subset_indices(labels, 0.1, 0)
    assert len(part) == 400 and len(set(part.tolist())) == 400 and part.tolist() == sorted(part.tolist())
    assert (labels[part].bincount(minlength=10) - 0.1 * labels.bincount(minlength=10)).abs().max() <= 1
    assert torch.equal(data.subset_indices(labels, 0.1, 0), part)  # seeded: the same seed, the same part
    assert not torch.equal(data.subset_indices(labels, 0.1, 1), part)
    assert len(data.subset_indices(labels, 250, 0)) == 250
    assert torch.equal(data.subset_indices(labels, 10_000, 0), torch.arange(len(labels)))  # more than there is: all
    with pytest.raises(DataError, match="keep at least 20"):
        data.subset_indices(labels, 0.001, 0)
