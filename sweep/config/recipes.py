"""The optimisers and learning-rate schedules a study can name: one registry entry each.

Each entry says which ``torch.optim`` (or ``torch.optim.lr_scheduler``) class trains it and which
``[train]`` keys apply to it; ``sweep.training.optimizers`` and ``sweep.training.schedules`` build
the objects from these entries. The entries live here, beside the validators that refuse a key
that does not apply, because config sits below training in the layers and imports no torch.

Only optimisers that update each element of a tensor on its own are listed: applied to the
stacked parameters of K population members, such an optimiser is K independent optimisers
(``docs/recipes.md``). LBFGS, SparseAdam, Adafactor (factored second moments) and Muon
(orthogonalised matrices) mix elements and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimiser: its ``torch.optim`` class name and the ``[train]`` keys it reads (beside ``lr``)."""

    torch_class: str
    keys: frozenset[str] = frozenset()


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("SGD", frozenset({"momentum", "nesterov"})),
    "adam": OptimizerSpec("Adam", frozenset({"betas", "eps"})),
    # AdamW is Adam with decoupled decay: here it is Adam, and train.penalty = "l2-decoupled" is the decay.
    "adamw": OptimizerSpec("Adam", frozenset({"betas", "eps"})),
    "rmsprop": OptimizerSpec("RMSprop", frozenset({"momentum", "eps"})),
    "adagrad": OptimizerSpec("Adagrad", frozenset({"eps"})),
    "adamax": OptimizerSpec("Adamax", frozenset({"betas", "eps"})),
    "nadam": OptimizerSpec("NAdam", frozenset({"betas", "eps"})),
    "radam": OptimizerSpec("RAdam", frozenset({"betas", "eps"})),
    "adadelta": OptimizerSpec("Adadelta", frozenset({"eps"})),
    "rprop": OptimizerSpec("Rprop", frozenset()),
}
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "adamax", "nadam", "radam", "adadelta", "rprop"]
OPTIMIZER_KEYS = frozenset({"momentum", "nesterov", "betas", "eps"})  # the keys some optimisers read

# Each schedule and the keys it reads (beside train.epochs); the builders are in sweep.training.schedules.
SCHEDULES: dict[str, frozenset[str]] = {
    "constant": frozenset(),
    "cosine": frozenset(),
    "step": frozenset({"step_size", "gamma"}),
    "warmup-cosine": frozenset({"warmup_epochs"}),
}
Schedule = Literal["constant", "cosine", "step", "warmup-cosine"]
SCHEDULE_KEYS = frozenset({"step_size", "gamma", "warmup_epochs"})
