"""Which objective a study uses, and the refit of a chosen lambda on the whole training set.

The objectives themselves live in ``holdout`` and ``cv``; what they share
(prepared data, folds, standard errors, the attribute writer) lives below them in
``trial_data`` and ``trial_attrs``. This module only dispatches, so nothing
below imports it.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from sweep.config import StudyConfig
from sweep.objectives.cv import make_cv_objective
from sweep.errors import TrainingDivergedError
from sweep.objectives.evidence import make_evidence_objective, make_marglik_objective
from sweep.objectives.holdout import make_holdout_objective, make_repeated_holdout_objective
from sweep.training.fit import evaluate, fit
from sweep.objectives.prepared import Prepared


def make_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """The study's objective: the one-run marglik search, evidence, k-fold CV, holdout with repeats, or one
    holdout fit (the default)."""
    if cfg.search.sampler == "marglik":
        return make_marglik_objective(cfg, prep)
    if cfg.search.validation == "evidence":
        return make_evidence_objective(cfg, prep)
    if cfg.search.validation == "cv":
        return make_cv_objective(cfg, prep)
    if cfg.search.repeats > 1:
        return make_repeated_holdout_objective(cfg, prep)
    return make_holdout_objective(cfg, prep)


def refit(cfg: StudyConfig, prep: Prepared, lam: float) -> dict[str, float | int | str]:
    """Train on the whole training set with ``lam`` and evaluate once on the test set."""
    seed = cfg.train.seed
    result = fit(prep.x_train, prep.y_train, None, None, lam=lam, cfg=cfg.train, seed=seed, net=prep.net)
    if result.model is None:  # fit returns its model whenever it finishes; keep mypy and readers sure of it
        raise TrainingDivergedError(f"the refit of lambda {lam:g} returned no model")
    test_loss, test_acc = evaluate(result.model, prep.x_test, prep.y_test)
    return {"lambda": lam, "seed": seed, "test_acc": test_acc, "test_loss": test_loss,
            "train_acc": result.final.train_acc, "device": str(prep.device),
            "seconds": round(sum(h.seconds for h in result.history), 4)}
