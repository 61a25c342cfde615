"""Shared objective pieces, data side: the prepared dataset, folds, seeds, the lambda a trial asks for.

Every objective (holdout, CV, batches) and the refit read their tensors from one
``Prepared``: the dataset is loaded, split and moved to the device once per process.
Every lambda of a study sees the same split, the same folds and the same training
seeds (common random numbers): differences between lambdas come from lambda, not
from the split or the initialisation it happened to draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
import torch
from sklearn.model_selection import StratifiedKFold

from sweep.config import PARAM, SearchConfig, StudyConfig
from sweep.errors import DataError
from sweep.training import data, factories, models
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
    x_test: torch.Tensor
    y_test: torch.Tensor
    net: models.Net  # what every fit of the study trains (built-in or the user's factory), checked on this data


def prepare(cfg: StudyConfig) -> Prepared:
    """Load ``cfg.data`` (a named dataset or the data factory), make its holdout split, move it to the device.

    The model is checked here too (built once, a batch run through it), so a bad factory or bad
    data is reported before any trial, with nothing written to the store.
    """
    device = resolve_device(cfg.train.device)
    if cfg.data.factory is None:
        ds = data.load(cfg.data.dataset, cfg.data.data_dir)
        labels, classes = ds.train.y, CLASSES
        x_train, y_train = data.to_device(ds.train, device)
        x_test, y_test = data.to_device(ds.test, device)
    else:
        arrays = factories.load_data(cfg.data.factory)
        labels, classes = arrays.y_train, arrays.classes
        x_train, y_train, x_test, y_test = (t.to(device) for t in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test))
    fit_idx, val_idx = data.holdout_split(labels, cfg.data.holdout, cfg.data.split_seed)
    net = models.net_for(cfg.model, in_shape=tuple(x_train.shape[1:]), classes=classes)
    models.check_output(net, x_train[:2], seed=cfg.train.seed)
    fit_i, val_i = fit_idx.to(device), val_idx.to(device)
    return Prepared(device, x_train[fit_i], y_train[fit_i], x_train[val_i], y_train[val_i],
                    x_train, y_train, x_test, y_test, net)


def fold_indices(labels: torch.Tensor, *, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified k-fold (fit, validation) index pairs of ``labels``: disjoint validation folds covering every example."""
    y = labels.cpu().numpy()
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
