"""The k-fold cross-validation objective (``search.validation = "cv"``).

``folds`` stratified folds of the whole training set (``data.split_seed`` fixes
them), ``repeats`` seeds per fold, fold-major; every lambda sees the same folds
and seeds. After each fold the running mean of the validation accuracies so far
is reported at step = fold index (0-based), so a pruner compares like with like
(every trial's fold j is the same data) and can stop a weak lambda before its
last fold. The trial's value is the mean over all folds x repeats fits; its SE
is computed in ``sweep.objectives.attrs`` (docs/cv.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import torch

from sweep.config import StudyConfig
from sweep.objectives.attrs import fit_recorded, many_fits_attrs
from sweep.objectives.prepared import Prepared, fold_indices, seeds, suggest_lambda
from sweep.objectives.scoring import fit_score, metric_of, trial_value
from sweep.storages.writes import set_user_attrs
from sweep.training.fit import EpochStats
from sweep.training.stream import rows


def cv_attrs(cfg: StudyConfig, prep: Prepared) -> dict[str, Any]:
    """What a CV trial stores when it starts (single trials and batch members alike)."""
    train_seeds = seeds(cfg)
    return {"device": str(prep.device), "seed": cfg.train.seed, "seeds": train_seeds, "folds": cfg.search.folds,
            "repeats": len(train_seeds), "split_seed": cfg.data.split_seed, "validation": "cv",
            "n_val": int(prep.y_train.shape[0])}


def fold_pairs(cfg: StudyConfig, prep: Prepared) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (fit, validation) index pairs of the study's folds, on the device."""
    pairs = fold_indices(prep.y_train, folds=cfg.search.folds, seed=cfg.data.split_seed)
    return [(a.to(prep.device), b.to(prep.device)) for a, b in pairs]


def report_fold(trial: optuna.Trial, runs: Sequence[Sequence[EpochStats]], *, fold: int, folds: int,
                per_group: int, seconds: float, scores: Sequence[float] | None = None, metric: str = "accuracy") -> bool:
    """After fold ``fold`` (``runs``: every fit so far, fold-major; ``scores``: their ``metric``, default their
    accuracy): report the running mean at step = fold and ask the pruner; True means pruned, with the trial's
    figures so far stored. Batches call it too."""
    scores = list(scores) if scores is not None else [r[-1].val_acc for r in runs]
    trial.set_user_attr("fold_scores", scores)  # one write per fold; the summary once, at the end
    trial.report(float(np.mean(scores)), fold)
    if fold < folds - 1 and trial.should_prune():
        set_user_attrs(trial, many_fits_attrs(runs, per_group=per_group, seconds=seconds, scores=scores, metric=metric))
        return True
    return False


def make_cv_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """k-fold CV objective over the whole training set (``prep.x_train``); see the module docstring."""
    k = cfg.search.folds
    pairs = fold_pairs(cfg, prep)
    train_seeds = seeds(cfg)
    metric = metric_of(cfg).name

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        set_user_attrs(trial, cv_attrs(cfg, prep))
        runs: list[list[EpochStats]] = []
        scores: list[float] = []
        start = time.perf_counter()
        for fold, (fit_i, val_i) in enumerate(pairs):
            # Sliced per fold, not kept for all folds: keeping all k would cost k times the training set in device memory.
            split = (rows(prep.x_train, fit_i), prep.y_train[fit_i], rows(prep.x_train_eval, val_i), prep.y_train[val_i])
            for seed in train_seeds:
                result = fit_recorded(trial, cfg, split, lam=lam, seed=seed, net=prep.net)
                runs.append(result.history)
                scores.append(fit_score(cfg, result.model, split[2], split[3]).value if result.model is not None
                              and metric != "accuracy" else result.final.val_acc)
            if report_fold(trial, runs, fold=fold, folds=k, per_group=len(train_seeds),
                           seconds=time.perf_counter() - start, scores=scores, metric=metric):
                what = "val_acc" if metric == "accuracy" else metric
                raise optuna.TrialPruned(f"pruned after fold {fold}: running mean {what} {np.mean(scores):.4f}")
        attrs = many_fits_attrs(runs, per_group=len(train_seeds), seconds=time.perf_counter() - start,
                                scores=scores, metric=metric)
        set_user_attrs(trial, attrs)
        return trial_value(attrs)

    return objective
