"""lambda-sweep: find the best L2 regularization strength with Optuna studies of MNIST training jobs."""

from sweep.errors import SweepError

__version__ = "0.1.0"
__all__ = ["SweepError", "__version__", "best_lambda"]


def best_lambda(name: str, *, storage: str | None = None, rule: str | None = None) -> float:
    """The chosen lambda of study ``name`` (one line: ``sweep.best_lambda("quickstart")``).

    ``rule`` is ``"min"``, ``"1se"``, ``"1se-paired"`` or ``"smooth"`` (docs/selection.md);
    by default the study's own ``search.rule``.
    """
    from sweep.selection import best_record

    return best_record(name, storage=storage, rule=rule).lam
