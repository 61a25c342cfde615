"""Shared objective pieces, data side: the prepared dataset, folds, seeds, the lambda a trial asks for.

Every objective (holdout, CV, batches) and the refit read their tensors from one
``Prepared``: the dataset is loaded, split and moved to the device once per process.
Every lambda of a study sees the same split, the same folds and the same training
seeds (common random numbers): differences between lambdas come from lambda, not
from the split or the initialisation it happened to draw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from sweep.config import PARAM, SearchConfig, StudyConfig
from sweep.errors import ConfigError, DataError, TooLargeError
from sweep.training import data, factories, losses, models, population, stream, trainers
from sweep.training.fit import resolve_device
from sweep.training.model import CLASSES


@dataclass(frozen=True)
class Prepared:
    """A dataset split and moved to the device once, shared by every trial of a process."""

    device: torch.device
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_train: torch.Tensor  # fit + validation: the whole training set, for CV and the refit
    y_train: torch.Tensor
    x_train_eval: torch.Tensor  # the same examples as validation reads them: x_train, or a factory's train_eval
    x_test: torch.Tensor
    y_test: torch.Tensor
    net: models.Net  # what every fit of the study trains (built-in or the user's factory), checked on this data


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's total, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def member_bytes(cfg: StudyConfig, *, n_fit: int, in_features: int, classes: int) -> int | None:
    """Rough device memory one member of a built-in fully connected network needs while training (weights x3,
    step temporaries, its data order); None where it cannot be known before building (cnn, a model factory)."""
    m = cfg.model
    if m.factory is not None or m.arch == "cnn":
        return None
    hidden = m.hidden if isinstance(m.hidden, list) else [m.hidden]
    return population.member_bytes([in_features, *hidden, classes], batch_size=cfg.train.batch_size, n_fit=n_fit)


def check_memory(cfg: StudyConfig, device: torch.device, *, n_fit: int, in_features: int = 784, classes: int = 10) -> None:
    """Refuse, before allocating any model, a population of a built-in network that cannot fit in ``device``'s memory."""
    batch = cfg.search.batch
    size = min(population.CPU_AUTO_SIZE if batch == "auto" and device.type != "cuda" else 1 if batch == "auto" else batch,
                     cfg.search.n_trials)
    one = member_bytes(cfg, n_fit=n_fit, in_features=in_features, classes=classes)
    if one is None:
        return
    need = size * one
    have = device_memory(device)
    if need > have:
        gib = 2**30
        raise TooLargeError(
            f"model.hidden = {cfg.model.hidden} with a population of {size} (search.batch) needs about "
            f"{need / gib:.1f} GiB on {device}, more than its {have / gib:.1f} GiB of memory; "
            "lower model.hidden or search.batch")


def prepare(cfg: StudyConfig) -> Prepared:
    """Load ``cfg.data`` (a named dataset or the data factory), keep its ``subset``, make its holdout split,
    move it to the device. The subset is the study's training set: folds, trials and the refit all see only it.

    The model is checked here too (built once, a batch run through it; for a population, two members
    trained one step), so a bad factory or bad data is reported before any trial, with nothing written
    to the store, and a network vmap cannot batch is known before its first population.
    """
    device = resolve_device(cfg.train.device)
    if cfg.data.factory is None:
        ds = data.load(cfg.data.dataset, cfg.data.data_dir)
        labels, classes = ds.train.y, CLASSES
        x_train, y_train = data.to_device(ds.train, device)
        x_test, y_test = data.to_device(ds.test, device)
        x_eval = None  # validation reads x_train
    else:
        arrays = factories.load_data(cfg.data.factory, losses.loss_of(cfg.train).target, cfg.data.stream,
                                     device_memory(device) // 2)
        labels, classes = arrays.y_train, arrays.classes
        x_train, y_train, x_test, y_test = (t.to(device) for t in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test))
        x_eval = arrays.x_train_eval.to(device) if arrays.x_train_eval is not None else None
    if cfg.data.subset is not None:  # tune on part of the training set; the test set stays whole
        keep = data.subset_indices(labels, cfg.data.subset, cfg.data.split_seed,
                                   stratify=losses.loss_of(cfg.train).classifies)
        labels, x_train, y_train = labels[keep], stream.rows(x_train, keep), y_train[keep.to(device)]
        x_eval = stream.rows(x_eval, keep) if x_eval is not None else None
    fit_idx, val_idx = data.holdout_split(labels, cfg.data.holdout, cfg.data.split_seed,
                                          stratify=losses.loss_of(cfg.train).classifies)
    check_memory(cfg, device, n_fit=len(fit_idx), in_features=int(x_train[0].numel()), classes=classes)
    weights = cfg.train.class_weights
    if isinstance(weights, list) and len(weights) != classes:
        raise ConfigError(f"train.class_weights has {len(weights)} weights, the data has {classes} classes; "
                          "give one weight per class, or 'balanced'")
    if cfg.metric == "auroc" and classes != 2:
        raise ConfigError(f"search.metric = 'auroc' scores two classes, the data has {classes}; "
                          "choose balanced-accuracy or macro-f1, or give the data two classes")
    net = models.net_for(cfg.model, in_shape=tuple(x_train.shape[1:]), classes=classes)
    x_train, x_test = models.builtin_input(net, x_train), models.builtin_input(net, x_test)
    x_eval = models.builtin_input(net, x_eval) if x_eval is not None else x_train
    models.check_output(net, x_train[:2], seed=cfg.train.seed)
    if cfg.search.batch != 1 and not trainers.uses_mlp_fast_path(net, cfg.train, x_train):
        trainers.check(net, x_train[:4], y_train[:4], cfg.train)  # can vmap batch it? (one line if not)
    fit_i, val_i = fit_idx.to(device), val_idx.to(device)
    return Prepared(device, stream.rows(x_train, fit_i), y_train[fit_i], stream.rows(x_eval, val_i), y_train[val_i],
                    x_train, y_train, x_eval, x_test, y_test, net)


def fold_indices(labels: torch.Tensor, *, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified k-fold (fit, validation) index pairs of ``labels``: disjoint validation folds covering every example.
    Real-valued targets (floats) have no classes: a plain seeded KFold."""
    y = labels.cpu().numpy()
    if labels.is_floating_point():
        if folds > y.shape[0]:
            raise DataError(f"search.folds = {folds} but the training set has {y.shape[0]} examples; lower search.folds")
        plain = KFold(n_splits=folds, shuffle=True, random_state=seed)
        return [(torch.from_numpy(np.sort(a)), torch.from_numpy(np.sort(b))) for a, b in plain.split(np.zeros(y.shape[0]))]
    smallest = int(np.unique(y, return_counts=True)[1].min()) if y.size else 0
    if folds > smallest:
        raise DataError(
            f"search.folds = {folds} but the smallest class of the training set has {smallest} examples; "
            f"set search.folds to at most {smallest}"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(torch.from_numpy(np.sort(a)), torch.from_numpy(np.sort(b))) for a, b in splitter.split(np.zeros(y.size), y)]


def seeds(cfg: StudyConfig) -> list[int]:
    """The training seeds of every trial (the same for all lambdas): ``train.seed`` and the next ``repeats - 1``."""
    return [cfg.train.seed + j for j in range(cfg.search.repeats)]


def suggest_lambda(trial: optuna.Trial, search: SearchConfig) -> float:
    """The trial's lambda, log-uniform in the study's range (the one place a study's parameter is declared)."""
    return trial.suggest_float(PARAM, search.lambda_low, search.lambda_high, log=True)
