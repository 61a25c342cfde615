"""Users' factories: import ``package.module:function``, hash its source, check what a data factory returns.

A study file may name a model factory (``model.factory``) and a data factory
(``data.factory``). Every process that trains imports them (``sweep run``, each
``sweep worker``), so they must be importable there: an installed package, or a
folder on ``PYTHONPATH``. A study stores each factory's path and the SHA-256 of its
module's source (``fingerprints``); a process whose factory source differs is
refused (``check_fingerprints``), as a changed study file is.

A data factory returns four arrays, or a (train, test) pair of map-style torch Datasets (or
DataLoaders over them) whose items are (x, y): read once into tensors, or streamed batch by batch
when they do not fit in memory or augment (``stream``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sweep.config import StudyConfig
from sweep.errors import FactoryChangedError, FactoryImportError, FactoryTypeError, InvalidDataError, first_line
from sweep.training import stream

PATH_HINT = "install its package or add its folder to PYTHONPATH, on every machine that runs 'sweep run' or 'sweep worker'"


def resolve(path: str, *, key: str) -> Callable[..., Any]:
    """The callable that ``path`` ("package.module:function") names; ``key`` is its study-file key, for error lines."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - an import runs user code: any failure is the same condition
        raise FactoryImportError(f"{key} = {path!r}: module {module_name!r} does not import "
                                 f"({type(err).__name__}: {first_line(err)}); {PATH_HINT}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryImportError(f"{key} = {path!r}: module {module_name!r} has no attribute {attr!r}; "
                                     "check the name after the ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryTypeError(f"{key} = {path!r} is a {type(obj).__name__}, not callable; "
                               "name a function (or class) that takes no arguments")
    return obj


def source_hash(path: str) -> str:
    """SHA-256 (hex) of the source of the module that defines the factory ``path`` (imported by ``resolve``)."""
    module = sys.modules[path.partition(":")[0]]
    try:
        text = inspect.getsource(module)
    except (OSError, TypeError):  # no source file (a compiled or interactive module): hash the function alone
        text = repr(resolve(path, key="factory"))
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprints(cfg: StudyConfig) -> dict[str, dict[str, str]]:
    """``{key: {"path", "sha256"}}`` for each factory of ``cfg`` (importing it); empty without factories."""
    out = {}
    for key, path in (("model.factory", cfg.model.factory), ("data.factory", cfg.data.factory)):
        if path is not None:
            resolve(path, key=key)
            out[key] = {"path": path, "sha256": source_hash(path)}
    return out


def check_fingerprints(stored: Mapping[str, Any] | None, cfg: StudyConfig) -> None:
    """Refuse (one line naming the factory) when a factory's source differs from the study's stored hash."""
    for key, now in fingerprints(cfg).items():
        then = (stored or {}).get(key, {})
        if then.get("sha256") != now["sha256"]:
            raise FactoryChangedError(
                f"study {cfg.name!r}: the source of {key} {now['path']!r} differs from the one the study was made with "
                f"(sha256 {now['sha256'][:12]}, stored {str(then.get('sha256'))[:12]}); restore that code to resume "
                "the study, or run the changed code as a new study with --name")


@dataclass(frozen=True)
class Arrays:
    """A data factory's four arrays as CPU tensors: float examples (uint8 scaled to [0, 1]) and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int  # largest training label + 1; for real-valued targets (N, d), the network's d outputs
    x_train_eval: torch.Tensor | None = None  # the training examples as validation reads them (no augmentation)


def _from_datasets(got: Any, source: str, policy: stream.Policy, budget: int) -> tuple[Any, torch.Tensor | None]:
    """(what to check as four arrays, the ``train_eval`` examples or None). (train, test) or (train, train_eval, test)
    map-style Datasets or DataLoaders become tensors or ``stream.Streamed`` examples and label tensors
    (``stream.load_pair``); anything else comes back as it came, without ``train_eval``."""
    if not (isinstance(got, (tuple, list)) and len(got) in (2, 3) and all(isinstance(d, (Dataset, DataLoader)) for d in got)):
        return got, None
    loaded = stream.load_pair(tuple(got), source, policy=policy, budget=budget)
    return loaded[:4], (loaded[4] if len(loaded) == 5 else None)


def _examples(x: torch.Tensor) -> torch.Tensor:
    return x if stream.is_streamed(x) else stream.as_examples(x)


@functools.lru_cache(maxsize=2)
def load_data(path: str, target: str = "classes", policy: stream.Policy = "auto", budget: int = 2**62) -> Arrays:
    """Call the data factory ``path`` (once per process) and check its arrays; every problem is one line.
    ``target``: what ``train.loss`` needs (``sweep.training.losses``): class labels, or real values (N,) or (N, d).
    ``policy`` and ``budget`` (bytes): whether a factory's Datasets are loaded or streamed (``stream``)."""
    source = f"data.factory = {path!r}"
    fn = resolve(path, key="data.factory")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a factory that draws random numbers gives the same data in every process
        got = fn()
    got, x_eval = _from_datasets(got, source, policy, budget)
    arrays = _checked(source, got, target)
    return arrays if x_eval is None else replace(arrays, x_train_eval=_examples(x_eval))


def _checked(source: str, got: Any, target: str) -> Arrays:
    """The four arrays a factory gave, checked for ``target`` (``load_data``); every problem is one line."""
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        raise FactoryTypeError(f"{source} returned a {type(got).__name__}, expected (x_train, y_train, x_test, y_test) "
                               "or (train, test) torch Datasets or DataLoaders (or (train, train_eval, test))")
    names = ("x_train", "y_train", "x_test", "y_test")
    x_tr, y_tr, x_te, y_te = (v if stream.is_streamed(v) else stream.as_tensor(v, n, source)
                              for v, n in zip(got, names, strict=True))
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise InvalidDataError(f"{source}: training examples have shape {tuple(x_tr.shape[1:])} but test examples "
                               f"{tuple(x_te.shape[1:])}; return examples of one shape")
    if target == "values":
        return _values(source, x_tr, y_tr, x_te, y_te)
    for xn, yn, x, y in (("x_train", "y_train", x_tr, y_tr), ("x_test", "y_test", x_te, y_te)):
        if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise InvalidDataError(f"{source}: {xn} has shape {tuple(x.shape)} and {yn} {tuple(y.shape)}; expected "
                                   f"{xn} (N, ...) and {yn} (N,), one label per example")
        if y.is_floating_point():
            raise InvalidDataError(f"{source}: {yn} holds {y.dtype} values; return integer class labels 0..C-1, "
                                   "or set train.loss = 'mse' for real-valued targets")
    y_tr, y_te = y_tr.long(), y_te.long()
    classes = int(y_tr.max()) + 1 if y_tr.numel() else 0
    low = min(int(y_tr.min()) if y_tr.numel() else 0, int(y_te.min()) if y_te.numel() else 0)
    high = int(y_te.max()) if y_te.numel() else 0
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise InvalidDataError(f"{source}: label {bad} is out of range: labels must be 0..{classes - 1} "
                               f"(the training labels' range); map the classes to 0..C-1")
    if len(torch.unique(y_tr)) < 2:
        raise InvalidDataError(f"{source}: y_train holds {len(torch.unique(y_tr))} class(es); a classifier needs "
                               "at least two")
    return Arrays(_examples(x_tr), y_tr, _examples(x_te), y_te, classes)


def _values(source: str, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor) -> Arrays:
    """Real-valued targets (``train.loss = "mse"``): float (N,) or (N, d); ``classes`` is then d, the outputs."""
    for xn, yn, x, y in (("x_train", "y_train", x_tr, y_tr), ("x_test", "y_test", x_te, y_te)):
        if x.ndim < 2 or y.ndim not in (1, 2) or x.shape[0] != y.shape[0]:
            raise InvalidDataError(f"{source}: {xn} has shape {tuple(x.shape)} and {yn} {tuple(y.shape)}; expected "
                                   f"{xn} (N, ...) and {yn} (N,) or (N, d), one target per example")
        if not y.is_floating_point():
            raise InvalidDataError(f"{source}: {yn} holds {y.dtype} values but train.loss = 'mse' needs real-valued "
                                   "targets; return float targets, or set train.loss = 'cross-entropy' for class labels")
    if y_tr.shape[1:] != y_te.shape[1:]:
        raise InvalidDataError(f"{source}: training targets have shape {tuple(y_tr.shape[1:])} per example but test "
                               f"targets {tuple(y_te.shape[1:])}; return targets of one shape")
    outputs = int(y_tr.shape[1]) if y_tr.ndim == 2 else 1
    return Arrays(_examples(x_tr), y_tr.float(), _examples(x_te), y_te.float(), outputs)
