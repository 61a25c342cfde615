"""lambda-sweep: find the best L2 regularization strength with Optuna studies of MNIST training jobs."""

from sweep.errors import ConfigError, SweepError

__version__ = "0.1.0"
__all__ = ["SweepError", "__version__", "best_lambda"]


def best_lambda(name: str, *, storage: str | None = None, rule: str | None = None,
                for_run: dict[str, float] | None = None, transfer: str | None = None) -> float:
    """The chosen lambda of study ``name`` (one line: ``sweep.best_lambda("quickstart")``).

    ``rule`` is ``"min"``, ``"1se"``, ``"1se-paired"`` or ``"smooth"`` (docs/selection.md);
    by default the study's own ``search.rule``. ``for_run`` (keys ``n_train``, ``epochs``, ``batch_size``,
    ``lr``; the rest are the study's own) carries it to another run by ``transfer`` (``"reuse"``,
    ``"tau-epoch"``, ``"normalized"``; by default the measured default of docs/transfer.md).
    """
    from sweep.selection import best_for, best_record

    if for_run is None:
        return best_record(name, storage=storage, rule=rule).lam
    moved = best_for(name, for_run, storage=storage, rule=rule)
    if transfer is not None and transfer not in moved.lambdas:
        raise ConfigError(f"transfer must be one of {', '.join(moved.lambdas)}, got {transfer!r}; "
                          f"leave it out for the default ({moved.default})")
    return moved.lambdas[transfer or moved.default]
