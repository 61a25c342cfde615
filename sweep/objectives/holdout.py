"""The holdout objectives: train on the fit split, score on the validation split.

With one seed (``search.repeats = 1``) the trial reports its validation accuracy
every epoch, so the epoch pruners work on it. With ``repeats`` seeds the trial's
value is the mean over the seeds, and only the first seed reports epochs, so
intermediate values keep the plain holdout meaning (step = epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from sweep.config import StudyConfig
from sweep.objectives.attrs import (
    binomial_se,
    correct_bits,
    epoch_reporter,
    fit_recorded,
    many_fits_attrs,
    single_fit_attrs,
)
from sweep.objectives.prepared import Prepared, seeds, suggest_lambda
from sweep.objectives.scoring import FitScore, fit_score, metric_of, score_attrs, trial_value
from sweep.storages.writes import set_user_attrs
from sweep.training.fit import EpochStats


def make_holdout_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """One fit per trial on the holdout split, with one seed for all lambdas."""
    split = (prep.x_fit, prep.y_fit, prep.x_val, prep.y_val)
    n_val = int(prep.y_val.shape[0])

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        seed = cfg.train.seed  # one seed for all lambdas: differences come from lambda, not luck
        set_user_attrs(trial, {"device": str(prep.device), "seed": seed})
        result = fit_recorded(trial, cfg, split, lam=lam, seed=seed, on_epoch=epoch_reporter(trial, metric_of(cfg)),
                              net=prep.net)
        attrs = single_fit_attrs(result.history, n_val=n_val)
        if result.model is not None:  # per-example correctness or scores, for paired comparisons between lambdas
            attrs.update(model_attrs(cfg, prep, [result.model]))
        set_user_attrs(trial, attrs)
        return trial_value(attrs)

    return objective


def model_attrs(cfg: StudyConfig, prep: Prepared, models: Sequence[Any],
                fits: Sequence[FitScore] | None = None) -> dict[str, Any]:
    """What a holdout trial stores of its fits' models (one per seed): the per-example correct bits of a
    classifier (``val_correct``) and its metric's figures (``scoring.score_attrs``; ``fits``: already scored)."""
    attrs: dict[str, Any] = {}
    if metric_of(cfg).target == "classes":
        attrs["val_correct"] = [correct_bits(m, prep.x_val, prep.y_val) for m in models]
    if fits is None:
        fits = [fit_score(cfg, m, prep.x_val, prep.y_val) for m in models]
    attrs.update(score_attrs(cfg, fits))
    return attrs


def repeats_attrs(cfg: StudyConfig, prep: Prepared) -> dict[str, Any]:
    """What a holdout trial with repeats stores when it starts (single trials and batch members alike)."""
    train_seeds = seeds(cfg)
    return {"device": str(prep.device), "seed": cfg.train.seed, "seeds": train_seeds,
            "repeats": len(train_seeds), "validation": "holdout", "n_val": int(prep.y_val.shape[0])}


def repeats_final_attrs(runs: Sequence[Sequence[EpochStats]], *, n_val: int, seconds: float,
                        scores: Sequence[float] | None = None, metric: str = "accuracy") -> dict[str, Any]:
    """What a complete holdout trial with repeats stores: one group per seed, so the SE is
    std(seed scores)/sqrt(repeats), beside the binomial SE of the mean accuracy (a classifier's)."""
    attrs = many_fits_attrs(runs, per_group=1, seconds=seconds, scores=scores, metric=metric)
    if attrs["val_acc"] is not None:
        attrs["val_se_binomial"] = binomial_se(attrs["val_acc"], n_val)
    return attrs


def make_repeated_holdout_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """Holdout with ``repeats`` seeds: the mean validation accuracy; pruning per epoch on the first seed."""
    train_seeds = seeds(cfg)
    n_val = int(prep.y_val.shape[0])
    split = (prep.x_fit, prep.y_fit, prep.x_val, prep.y_val)

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        set_user_attrs(trial, repeats_attrs(cfg, prep))
        runs: list[list[EpochStats]] = []
        models: list[Any] = []
        start = time.perf_counter()
        for j, seed in enumerate(train_seeds):
            result = fit_recorded(trial, cfg, split, lam=lam, seed=seed, net=prep.net,
                                  on_epoch=epoch_reporter(trial, metric_of(cfg)) if j == 0 else None)
            runs.append(result.history)
            if result.model is not None:
                models.append(result.model)
        fits = [fit_score(cfg, m, prep.x_val, prep.y_val) for m in models]
        metric = metric_of(cfg).name
        attrs = repeats_final_attrs(runs, n_val=n_val, seconds=time.perf_counter() - start, metric=metric,
                                    scores=None if metric == "accuracy" else [f.value for f in fits])
        if len(models) == len(runs):
            attrs.update(model_attrs(cfg, prep, models, fits))  # one bitset (or score) per seed
        set_user_attrs(trial, attrs)
        return trial_value(attrs)

    return objective
