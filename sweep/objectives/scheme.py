"""Which validation scheme and objective a study uses, and the refit of a chosen lambda on the whole training set.

The objectives themselves live in ``holdout``, ``cv`` and ``evidence``; what they share
(prepared data, folds, standard errors, the attribute writer) lives below them in
``prepared`` and ``attrs``. ``scheme_of`` is the one place a config's scheme is decided:
the single objectives, the batches (``batched``) and the batch size read it. The objectives
do not import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import optuna

from sweep.config import StudyConfig
from sweep.errors import TrainingDivergedError
from sweep.objectives.attrs import finite
from sweep.objectives.cv import make_cv_objective
from sweep.objectives.evidence import make_evidence_objective, make_marglik_objective
from sweep.objectives.holdout import make_holdout_objective, make_repeated_holdout_objective
from sweep.objectives.prepared import Prepared
from sweep.objectives.scoring import metric_of, outputs
from sweep.training.fit import evaluate, fit

Scheme = Literal["marglik", "evidence", "cv", "repeats", "holdout"]


def scheme_of(cfg: StudyConfig) -> Scheme:
    """How ``cfg``'s trials score a lambda: the one-run marglik search (``search.sampler``), the Laplace evidence,
    k-fold CV (with any ``repeats`` seeds per fold), holdout with ``repeats`` seeds, or one holdout fit (the default)."""
    if cfg.search.sampler == "marglik":
        return "marglik"
    if cfg.search.validation == "evidence":
        return "evidence"
    if cfg.search.validation == "cv":
        return "cv"
    return "repeats" if cfg.search.repeats > 1 else "holdout"


_OBJECTIVES: dict[Scheme, Callable[[StudyConfig, Prepared], Callable[[optuna.Trial], float]]] = {
    "marglik": make_marglik_objective, "evidence": make_evidence_objective, "cv": make_cv_objective,
    "repeats": make_repeated_holdout_objective, "holdout": make_holdout_objective,
}


def make_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """The objective of the study's scheme (``scheme_of``)."""
    return _OBJECTIVES[scheme_of(cfg)](cfg, prep)


def refit(cfg: StudyConfig, prep: Prepared, lam: float) -> dict[str, Any]:
    """Train on the whole training set with ``lam`` and evaluate once on the test set."""
    seed = cfg.train.seed
    result = fit(prep.x_train, prep.y_train, None, None, lam=lam, cfg=cfg.train, seed=seed, net=prep.net)
    if result.model is None:  # fit returns its model whenever it finishes; keep mypy and readers sure of it
        raise TrainingDivergedError(f"the refit of lambda {lam:g} returned no model")
    test_loss, test_acc = evaluate(result.model, prep.x_test, prep.y_test, cfg.train)
    metric = metric_of(cfg)
    score = {} if metric.name == "accuracy" else {
        "metric": metric.name, "test_score": metric.score(prep.y_test.cpu().numpy(), outputs(result.model, prep.x_test))}
    return {"lambda": lam, "seed": seed, "test_acc": finite(test_acc), "test_loss": test_loss, **score,
            "train_acc": finite(result.final.train_acc), "device": str(prep.device),
            "n_train": int(prep.y_train.shape[0]),  # the run the lambda is delivered for: tau_epoch's n_train
            "seconds": round(sum(h.seconds for h in result.history), 4)}
