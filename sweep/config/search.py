"""``[search]``: the lambda range, the sampler and pruner, how a lambda is scored, the rule and the stop."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweep.config.common import GRID_MAX, Metric, Pruner, Rule, Sampler, Seed, Stop, Validation, _Section


class SearchConfig(_Section):
    """``[search]``: the lambda range, sampler, pruner, validation scheme, rule, stop rule and batch size."""

    sampler: Sampler = "tpe"
    n_trials: int = Field(default=20, ge=1)
    lambda_low: float = Field(default=1e-5, gt=0)
    lambda_high: float = Field(default=1e-2, gt=0)
    pruner: Pruner = "median"
    seed: Seed = 0
    # How a lambda is scored (see docs/cv.md): one holdout split, stratified k-fold CV of the training
    # set, or the Laplace evidence on the whole training set (docs/evidence.md); ``repeats`` training
    # seeds per split or fold; ``rule`` picks the refit's lambda.
    validation: Validation = "holdout"
    folds: int = Field(default=5, ge=2)
    repeats: int = Field(default=1, ge=1)
    rule: Rule = "min"
    # The score a lambda is chosen by (sweep.selection.metrics); None: the loss's own (accuracy, or rmse for mse).
    metric: Metric | None = None
    # "resolved": stop before n_trials once more trials cannot change the answer beyond the noise (docs/selection.md).
    stop: Stop = "n_trials"
    # Trials trained together as one population (sweep.workers.batch); "auto" sizes it to the device's memory.
    batch: int | Literal["auto"] = 1

    @field_validator("batch", mode="before")
    @classmethod
    def _check_batch(cls, v: Any) -> Any:
        # One plain message instead of pydantic's per-branch union errors.
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be a whole number >= 1 or 'auto'")

    @model_validator(mode="after")
    def _check_bounds(self) -> SearchConfig:
        if self.lambda_low >= self.lambda_high:
            raise ValueError(
                f"lambda_low must be below lambda_high, got {self.lambda_low:g} >= {self.lambda_high:g}"
            )
        if self.sampler == "grid" and self.n_trials > GRID_MAX:
            raise ValueError(f"a grid has at most {GRID_MAX} points (n_trials), got {self.n_trials}; "
                             "use sampler 'tpe' or 'random' for longer searches")
        return self
