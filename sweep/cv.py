"""Scores with honest uncertainty: k-fold cross-validation, and repeated holdout seeds.

Both objectives score a lambda by several fits and store the mean, the spread
and a standard error with the trial, so ``select``'s 1se rule has an SE to use.
Every lambda of a study sees the same folds and the same training seeds
(common random numbers): differences between lambdas come from lambda, not
from which split or initialisation it happened to draw.

CV trial (``search.validation = "cv"``): ``folds`` stratified folds of the
whole training set (``data.split_seed`` fixes them), ``repeats`` seeds per fold,
fold-major. After each fold the running mean of the validation accuracies so
far is reported at step = fold index (0-based), so a pruner compares like with
like (every trial's fold j is the same data) and can stop a weak lambda before
its last fold. The trial's value is the mean over all folds x repeats fits.

Standard errors (``val_se``):

- CV: the sample std of the ``folds`` fold means (each averaged over its
  repeats) over sqrt(folds), as cv.glmnet's ``cvsd``. Seeds inside a fold are
  averaged first because they share their data and are not independent draws.
- holdout with ``repeats > 1``: the sample std of the per-seed accuracies over
  sqrt(repeats) (seed noise on the fixed validation split).
- holdout with one seed: the binomial SE of the accuracy (``objective``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import optuna
import torch
from sklearn.model_selection import StratifiedKFold

from sweep.config import StudyConfig
from sweep.errors import DataError, TrainingDivergedError
from sweep.objective import Prepared, binomial_se, epoch_record, epoch_reporter, suggest_lambda
from sweep.train import EpochStats, FitResult, fit


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
    """The training seeds of every trial (the same for all lambdas)."""
    return [cfg.train.seed + j for j in range(cfg.search.repeats)]


def sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_history(runs: list[list[EpochStats]]) -> list[dict[str, float]]:
    """Per-epoch figures averaged over the fits done so far (a learning curve of the whole trial)."""
    out = []
    for epoch_stats in zip(*runs, strict=True):
        records = [epoch_record(s) for s in epoch_stats]
        out.append({k: float(np.mean([r[k] for r in records])) for k in records[0]})
    return out


def _fit(trial: optuna.Trial, cfg: StudyConfig, data: tuple[torch.Tensor, ...], *, lam: float, seed: int,
         on_epoch: Callable[[EpochStats], None] | None = None) -> FitResult:
    """One fit on (x_fit, y_fit, x_val, y_val); a divergence is recorded on the trial (it then fails)."""
    x_fit, y_fit, x_val, y_val = data
    try:
        return fit(x_fit, y_fit, x_val, y_val, lam=lam, cfg=cfg.train, hidden=cfg.model.hidden, seed=seed,
                   on_epoch=on_epoch)
    except TrainingDivergedError as err:
        trial.set_user_attr("fail_reason", str(err))
        raise


def make_cv_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """k-fold CV objective over the whole training set (``prep.x_train``); see the module docstring."""
    k = cfg.search.folds
    split_seed = cfg.data.split_seed
    pairs = [(a.to(prep.device), b.to(prep.device)) for a, b in fold_indices(prep.y_train, folds=k, seed=split_seed)]
    train_seeds = seeds(cfg)
    n_train = int(prep.y_train.shape[0])

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        for key, value in (("device", str(prep.device)), ("seed", cfg.train.seed), ("seeds", train_seeds),
                           ("folds", k), ("repeats", len(train_seeds)), ("split_seed", split_seed),
                           ("validation", "cv"), ("n_val", n_train)):
            trial.set_user_attr(key, value)
        scores: list[float] = []
        fold_means: list[float] = []
        train_accs: list[float] = []
        losses: list[tuple[float, float]] = []
        runs: list[list[EpochStats]] = []
        start = time.perf_counter()
        for fold, (fit_i, val_i) in enumerate(pairs):
            # Sliced per fold, not kept for all folds: keeping all k would cost k times the training set in device memory.
            split = (prep.x_train[fit_i], prep.y_train[fit_i], prep.x_train[val_i], prep.y_train[val_i])
            for seed in train_seeds:
                result = _fit(trial, cfg, split, lam=lam, seed=seed)
                runs.append(result.history)
                scores.append(result.final.val_acc)
                train_accs.append(result.final.train_acc)
                losses.append((result.final.val_loss, result.final.train_loss))
            fold_means.append(float(np.mean(scores[-len(train_seeds):])))
            trial.set_user_attr("fold_scores", scores)  # one write per fold; the summary once, below
            trial.report(float(np.mean(scores)), fold)
            if fold < k - 1 and trial.should_prune():
                _store(trial, scores, fold_means, train_accs, losses, runs, start)
                raise optuna.TrialPruned(f"pruned after fold {fold}: running mean val_acc {np.mean(scores):.4f}")
        _store(trial, scores, fold_means, train_accs, losses, runs, start)
        return float(np.mean(scores))

    return objective


def _store(trial: optuna.Trial, scores: list[float], fold_means: list[float], train_accs: list[float],
           losses: list[tuple[float, float]], runs: list[list[EpochStats]], start: float) -> None:
    """Write the summary of the fits done so far (a pruned trial keeps what it measured)."""
    trial.set_user_attr("fold_scores", scores)
    trial.set_user_attr("val_acc", float(np.mean(scores)))
    trial.set_user_attr("val_std", sample_std(scores))
    trial.set_user_attr("val_se", sample_std(fold_means) / math.sqrt(len(fold_means)))
    trial.set_user_attr("train_acc", float(np.mean(train_accs)))
    trial.set_user_attr("val_loss", float(np.mean([v for v, _ in losses])))
    trial.set_user_attr("train_loss", float(np.mean([t for _, t in losses])))
    trial.set_user_attr("history", _mean_history(runs))
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 4))


def make_repeated_holdout_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """Holdout with ``repeats`` seeds: the mean validation accuracy; pruning per epoch on the first seed.

    Only the first seed reports epochs, so intermediate values keep the plain holdout
    meaning (step = epoch) and the epoch pruners work unchanged.
    """
    train_seeds = seeds(cfg)
    n_val = int(prep.y_val.shape[0])

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        for key, value in (("device", str(prep.device)), ("seed", cfg.train.seed), ("seeds", train_seeds),
                           ("repeats", len(train_seeds)), ("validation", "holdout"), ("n_val", n_val)):
            trial.set_user_attr(key, value)
        scores: list[float] = []
        train_accs: list[float] = []
        losses: list[tuple[float, float]] = []
        runs: list[list[EpochStats]] = []
        start = time.perf_counter()
        split = (prep.x_fit, prep.y_fit, prep.x_val, prep.y_val)
        for j, seed in enumerate(train_seeds):
            result = _fit(trial, cfg, split, lam=lam, seed=seed, on_epoch=epoch_reporter(trial) if j == 0 else None)
            runs.append(result.history)
            scores.append(result.final.val_acc)
            train_accs.append(result.final.train_acc)
            losses.append((result.final.val_loss, result.final.train_loss))
        # One "fold" per seed: the SE is then std(seed scores)/sqrt(repeats).
        _store(trial, scores, scores, train_accs, losses, runs, start)
        trial.set_user_attr("val_se_binomial", binomial_se(float(np.mean(scores)), n_val))
        return float(np.mean(scores))

    return objective

