"""What every section of a study file shares: constants, the frozen base model, the factory-path check."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PARAM = "lambda"  # the name of the searched parameter in every study
# NumPy's and Optuna's seeded generators take seeds in 0..2**32-1; torch takes more, numpy is the limit.
SEED_MAX = 2**32 - 1
# A grid study holds its points in memory (GridSampler) and checks them all on every admission.
GRID_MAX = 1_000_000
NAME_MAX = 200  # study names; Optuna's column is wider, this keeps tables and file names readable
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]

Dataset = Literal["mnist", "fashion-mnist", "mnist-sample"]
Penalty = Literal["l2", "l2-loss", "l2-decoupled", "l1", "elastic-net"]
Sampler = Literal["tpe", "gp", "random", "qmc", "grid", "marglik"]
Pruner = Literal["none", "median", "hyperband"]
Validation = Literal["holdout", "cv", "evidence"]
Rule = Literal["min", "1se", "1se-paired", "smooth"]
Stop = Literal["n_trials", "resolved"]
Arch = Literal["simplenet", "mlp", "cnn"]
Loss = Literal["cross-entropy", "mse"]
Metric = Literal["accuracy", "balanced-accuracy", "macro-f1", "log-loss", "auroc", "rmse", "mae", "r2"]
# What each loss and metric needs as targets: class labels or real values. The config checks a study's pair
# with these; the registries (sweep.training.losses, sweep.selection.metrics) hold the rest and a test keeps them
# in agreement. The first metric of a target kind is that kind's default (search.metric unset).
LOSS_TARGETS: dict[str, str] = {"cross-entropy": "classes", "mse": "values"}
METRIC_TARGETS: dict[str, str] = {"accuracy": "classes", "balanced-accuracy": "classes", "macro-f1": "classes",
                                  "log-loss": "classes", "auroc": "classes", "rmse": "values", "mae": "values",
                                  "r2": "values"}
FACTORY_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # package.module:function


def _check_factory(v: str | None) -> str | None:
    if v is not None and not FACTORY_PATH.match(v):
        raise ValueError("must be an import path 'package.module:function'")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
