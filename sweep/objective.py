"""Where an Optuna trial meets training: the holdout objective and the final refit.

Every figure a trial produces goes into the store: the validation accuracy of
each epoch as an intermediate value (what pruners read), and the per-epoch
history, final figures, seconds, device and seed as user attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from sweep import data
from sweep.config import PARAM, SearchConfig, StudyConfig
from sweep.errors import TrainingDivergedError
from sweep.train import EpochStats, evaluate, fit, resolve_device


@dataclass(frozen=True)
class Prepared:
    """A dataset split and moved to the device once, shared by every trial of a process."""

    device: torch.device
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_train: torch.Tensor  # fit + validation: the whole training set, for the refit
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def prepare(cfg: StudyConfig) -> Prepared:
    device = resolve_device(cfg.train.device)
    ds = data.load(cfg.data.dataset, cfg.data.data_dir)
    fit_idx, val_idx = data.holdout_split(ds.train.y, cfg.data.holdout, cfg.data.split_seed)
    x_train, y_train = data.to_device(ds.train, device)
    x_test, y_test = data.to_device(ds.test, device)
    fit_i, val_i = fit_idx.to(device), val_idx.to(device)
    return Prepared(device, x_train[fit_i], y_train[fit_i], x_train[val_i], y_train[val_i],
                    x_train, y_train, x_test, y_test)


def suggest_lambda(trial: optuna.Trial, search: SearchConfig) -> float:
    return trial.suggest_float(PARAM, search.lambda_low, search.lambda_high, log=True)


def binomial_se(acc: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent examples."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1))


def epoch_record(s: EpochStats) -> dict[str, float]:
    return {"epoch": s.epoch, "train_loss": s.train_loss, "train_acc": s.train_acc,
            "val_loss": s.val_loss, "val_acc": s.val_acc, "seconds": round(s.seconds, 4)}


def epoch_reporter(trial: optuna.Trial) -> Callable[[EpochStats], None]:
    """Per-epoch report and prune, keeping the history (also of a pruned trial) in the store."""
    history: list[dict[str, float]] = []

    def on_epoch(s: EpochStats) -> None:
        history.append(epoch_record(s))
        trial.report(s.val_acc, s.epoch)
        trial.set_user_attr("history", history)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {s.epoch}: val_acc {s.val_acc:.4f}")

    return on_epoch


def make_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """Holdout objective: train on the fit split, report validation accuracy every epoch.

    ``search.validation = "cv"`` and holdout ``repeats > 1`` are in ``sweep.cv``.
    """
    if cfg.search.validation == "cv" or cfg.search.repeats > 1:
        from sweep import cv  # imported here: cv builds on this module

        if cfg.search.validation == "cv":
            return cv.make_cv_objective(cfg, prep)
        return cv.make_repeated_holdout_objective(cfg, prep)

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        seed = cfg.train.seed  # one seed for all lambdas: differences come from lambda, not luck
        trial.set_user_attr("device", str(prep.device))
        trial.set_user_attr("seed", seed)
        on_epoch = epoch_reporter(trial)
        try:
            result = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=lam, cfg=cfg.train,
                         hidden=cfg.model.hidden, seed=seed, on_epoch=on_epoch)
        except TrainingDivergedError as err:
            trial.set_user_attr("fail_reason", str(err))
            raise
        final = result.final
        n_val = int(prep.y_val.shape[0])
        trial.set_user_attr("val_acc", final.val_acc)
        trial.set_user_attr("val_loss", final.val_loss)
        trial.set_user_attr("train_acc", final.train_acc)
        trial.set_user_attr("train_loss", final.train_loss)
        trial.set_user_attr("val_se", binomial_se(final.val_acc, n_val))
        trial.set_user_attr("n_val", n_val)
        trial.set_user_attr("seconds", round(sum(h.seconds for h in result.history), 4))
        return final.val_acc

    return objective


def refit(cfg: StudyConfig, prep: Prepared, lam: float) -> dict[str, float | int | str]:
    """Train on the whole training set with ``lam`` and evaluate once on the test set."""
    seed = cfg.train.seed
    result = fit(prep.x_train, prep.y_train, None, None, lam=lam, cfg=cfg.train,
                 hidden=cfg.model.hidden, seed=seed)
    assert result.model is not None
    test_loss, test_acc = evaluate(result.model, prep.x_test, prep.y_test)
    return {"lambda": lam, "seed": seed, "test_acc": test_acc, "test_loss": test_loss,
            "train_acc": result.final.train_acc, "device": str(prep.device),
            "seconds": round(sum(h.seconds for h in result.history), 4)}
