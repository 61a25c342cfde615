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
from sklearn.model_selection import StratifiedKFold

from sweep.config import PARAM, SearchConfig, StudyConfig
from sweep.errors import DataError, TooLargeError
from sweep.training import data
from sweep.training.fit import resolve_device
from sweep.training.population import CPU_AUTO_SIZE, member_bytes


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


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's total, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(cfg: StudyConfig, device: torch.device, *, n_fit: int) -> None:
    """Refuse, before allocating anything, a model population that cannot fit in ``device``'s memory."""
    batch = cfg.search.batch
    population = min(CPU_AUTO_SIZE if batch == "auto" and device.type != "cuda" else 1 if batch == "auto" else batch,
                     cfg.search.n_trials)
    need = population * member_bytes(hidden=cfg.model.hidden, batch_size=cfg.train.batch_size, n_fit=n_fit)
    have = device_memory(device)
    if need > have:
        gib = 2**30
        raise TooLargeError(
            f"model.hidden = {cfg.model.hidden} with a population of {population} (search.batch) needs about "
            f"{need / gib:.1f} GiB on {device}, more than its {have / gib:.1f} GiB of memory; "
            "lower model.hidden or search.batch")


def prepare(cfg: StudyConfig) -> Prepared:
    """Load ``cfg.data``, make its holdout split and move everything to ``cfg.train.device``."""
    device = resolve_device(cfg.train.device)
    ds = data.load(cfg.data.dataset, cfg.data.data_dir)
    fit_idx, val_idx = data.holdout_split(ds.train.y, cfg.data.holdout, cfg.data.split_seed)
    check_memory(cfg, device, n_fit=len(fit_idx))
    x_train, y_train = data.to_device(ds.train, device)
    x_test, y_test = data.to_device(ds.test, device)
    fit_i, val_i = fit_idx.to(device), val_idx.to(device)
    return Prepared(device, x_train[fit_i], y_train[fit_i], x_train[val_i], y_train[val_i],
                    x_train, y_train, x_test, y_test)


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
