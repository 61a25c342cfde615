"""Evidence as a validation: objectives that score a lambda by its Laplace log evidence, and ``sweep evidence``.

- ``search.validation = "evidence"``: each trial trains on the whole training set
  (no validation split) and its value is the Laplace log evidence of its lambda, in
  nats. It is reported once, at the end, so nothing is pruned.
- ``search.sampler = "marglik"``: one trial trains one network while tuning the
  prior precision online; the lambda it ends with is the study's answer, stored
  with its trajectory per epoch.
- ``evidence_of_study``: for a study that used holdout or CV, the log evidence of
  every complete trial's lambda (each refit on the whole training set), stored as
  the study attribute ``evidence``, which the report draws beside validation accuracy.

The test set stays untouched: the chosen lambda is refit and tested once, as for
every study. The mathematics is in ``sweep.training.laplace``; docs/evidence.md
says when the approximation is expected to fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from torch import nn

from sweep.config import PARAM, StudyConfig, require_config
from sweep.errors import NoCompleteTrialsError, TrainingDivergedError
from sweep.objectives.attrs import Split, epoch_record, fit_recorded
from sweep.objectives.prepared import Prepared, prepare, suggest_lambda
from sweep.selection import load_study, scores_of
from sweep.storages.writes import set_user_attrs
from sweep.training.fit import FitResult, fit
from sweep.training.laplace import MarglikEpoch, log_evidence, marglik_search, require


def _model(result: FitResult) -> nn.Module:
    if result.model is None:  # fit returns its model whenever it finishes
        raise TrainingDivergedError("training returned no model to compute the evidence of")
    return result.model


def _whole(prep: Prepared) -> Split:
    return prep.x_train, prep.y_train, None, None


def make_evidence_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """Train on the whole training set, return the Laplace log evidence of the trial's lambda."""
    require()
    n_train = int(prep.y_train.shape[0])

    def objective(trial: optuna.Trial) -> float:
        lam = suggest_lambda(trial, cfg.search)
        set_user_attrs(trial, {"device": str(prep.device), "seed": cfg.train.seed, "validation": "evidence",
                            "n_train": n_train})
        result = fit_recorded(trial, cfg, _whole(prep), lam=lam, seed=cfg.train.seed, net=prep.net)
        start = time.perf_counter()
        value = log_evidence(_model(result), prep.x_train, prep.y_train, lam=lam, decay_bias=cfg.train.decay_bias)
        final = result.final
        set_user_attrs(trial, {"log_evidence": value, "log_evidence_per_example": value / n_train,
                            "train_acc": final.train_acc, "train_loss": final.train_loss, "val_se": 0.0,
                            "history": [epoch_record(s) for s in result.history],
                            "evidence_seconds": round(time.perf_counter() - start, 4),
                            "seconds": round(sum(s.seconds for s in result.history) + time.perf_counter() - start, 4)})
        return value

    return objective


def make_marglik_objective(cfg: StudyConfig, prep: Prepared) -> Callable[[optuna.Trial], float]:
    """One trial: train once while tuning lambda by marginal likelihood; its lambda is the one it found."""
    require()
    s, t = cfg.search, cfg.train

    def objective(trial: optuna.Trial) -> float:
        trajectory: list[dict[str, float]] = []

        def on_epoch(e: MarglikEpoch) -> None:
            trajectory.append({"epoch": e.epoch, "lambda": e.lam, "log_evidence": e.log_evidence,
                               "train_loss": e.train_loss})
            trial.set_user_attr("marglik_trajectory", trajectory)  # a killed run keeps what it saw

        start = time.perf_counter()
        model = prep.net.build(t.seed).to(prep.device)  # seeded as every member of a study is
        lam_init = (s.lambda_low * s.lambda_high) ** 0.5  # the middle of the range on the log scale
        result = marglik_search(model, prep.x_train, prep.y_train, lr=t.lr, batch_size=t.batch_size,
                                epochs=t.epochs, lam_init=lam_init, lam_range=(s.lambda_low, s.lambda_high),
                                seed=t.seed, on_epoch=on_epoch)
        # The lambda is known only now: a one-point distribution makes the trial's parameter exactly that value.
        trial.suggest_float(PARAM, result.lam, result.lam, log=True)
        set_user_attrs(trial, {"device": str(prep.device), "seed": t.seed, "validation": "marglik", "val_se": 0.0,
                            "lambda_unclamped": result.unclamped, "marglik_trajectory": trajectory,
                            "log_evidence": result.trajectory[-1].log_evidence,
                            "seconds": round(time.perf_counter() - start, 4)})
        return result.trajectory[-1].log_evidence

    return objective


def evidence_of_study(name: str, *, storage: str | None = None,
                      on_trial: Callable[[int, float, float], None] | None = None) -> dict[str, dict[str, float]]:
    """Log evidence of each complete trial's lambda of a holdout or CV study, stored as the study attribute
    ``evidence`` ({trial number: {lambda, log_evidence, train_acc}}); trials already scored are kept."""
    require()
    study = load_study(name, storage)
    cfg = require_config(study.user_attrs, name, fix="sweep evidence needs its stored config")
    scores = scores_of(study.get_trials(deepcopy=False))
    if not scores:
        raise NoCompleteTrialsError(f"study {name!r} has no complete trial yet; run it with 'sweep run' first")
    stored: dict[str, dict[str, float]] = dict(study.user_attrs.get("evidence", {}))
    prep = prepare(cfg)
    for s in sorted(scores, key=lambda s: s.lam):
        if str(s.number) in stored:
            continue
        result = fit(prep.x_train, prep.y_train, None, None, lam=s.lam, cfg=cfg.train, seed=cfg.train.seed,
                     net=prep.net)
        value = log_evidence(_model(result), prep.x_train, prep.y_train, lam=s.lam, decay_bias=cfg.train.decay_bias)
        stored[str(s.number)] = {"lambda": s.lam, "log_evidence": value, "train_acc": result.final.train_acc,
                                 "n_train": int(prep.y_train.shape[0])}
        study.set_user_attr("evidence", stored)  # after each lambda: an interrupted run keeps what it computed
        if on_trial is not None:
            on_trial(s.number, s.lam, value)
    return stored
