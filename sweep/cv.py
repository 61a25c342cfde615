"""The k-fold cross-validation objective (``search.validation = "cv"``).

``folds`` stratified folds of the whole training set (``data.split_seed`` fixes
them), ``repeats`` seeds per fold, fold-major; every lambda sees the same folds
and seeds. After each fold the running mean of the validation accuracies so far
is reported at step = fold index (0-based), so a pruner compares like with like
(every trial's fold j is the same data) and can stop a weak lambda before its
last fold. The trial's value is the mean over all folds x repeats fits; its SE
is computed in ``sweep.trial_attrs`` (docs/cv.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import optuna

from sweep.config import StudyConfig
from sweep.training.fit import EpochStats
from sweep.trial_attrs import fit_recorded, many_fits_attrs, write_attrs
from sweep.trial_data import Prepared, fold_indices, seeds, suggest_lambda


def make_cv_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """k-fold CV objective over the whole training set (``prep.x_train``); see the module docstring."""
    k = cfg.search.folds
    split_seed = cfg.data.split_seed
    pairs = [(a.to(prep.device), b.to(prep.device)) for a, b in fold_indices(prep.y_train, folds=k, seed=split_seed)]
    train_seeds = seeds(cfg)
    n_train = int(prep.y_train.shape[0])

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        write_attrs(trial, {"device": str(prep.device), "seed": cfg.train.seed, "seeds": train_seeds, "folds": k,
                            "repeats": len(train_seeds), "split_seed": split_seed, "validation": "cv",
                            "n_val": n_train})
        runs: list[list[EpochStats]] = []
        start = time.perf_counter()
        for fold, (fit_i, val_i) in enumerate(pairs):
            # Sliced per fold, not kept for all folds: keeping all k would cost k times the training set in device memory.
            split = (prep.x_train[fit_i], prep.y_train[fit_i], prep.x_train[val_i], prep.y_train[val_i])
            for seed in train_seeds:
                runs.append(fit_recorded(trial, cfg, split, lam=lam, seed=seed, net=prep.net).history)
            scores = [r[-1].val_acc for r in runs]
            trial.set_user_attr("fold_scores", scores)  # one write per fold; the summary once, below
            trial.report(float(np.mean(scores)), fold)
            if fold < k - 1 and trial.should_prune():
                write_attrs(trial, many_fits_attrs(runs, per_group=len(train_seeds), seconds=time.perf_counter() - start))
                raise optuna.TrialPruned(f"pruned after fold {fold}: running mean val_acc {np.mean(scores):.4f}")
        attrs = many_fits_attrs(runs, per_group=len(train_seeds), seconds=time.perf_counter() - start)
        write_attrs(trial, attrs)
        return float(attrs["val_acc"])

    return objective
