"""Studies: create or load them, their samplers and pruners, the run loop, the refit.

A study's config is stored as the study attribute ``config`` when it is created,
so workers and reports rebuild everything from the store. ``run`` continues an
interrupted study to its target count of complete trials: it never starts over
and never overshoots.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from sweep import __version__
from sweep.config import PARAM, StudyConfig, diff, from_json
from sweep.errors import StorageError, StudyConflictError, TrainingDivergedError
from sweep.objective import make_objective, prepare, refit
from sweep.select import choose, scores_of
from sweep.storage import mask, open_storage, resolve_url


def make_sampler(cfg: StudyConfig, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``offset`` shifts the seed so a resumed run does not replay its random start."""
    s = cfg.search
    seed = s.seed + offset
    if s.sampler == "tpe":
        # constant_liar: concurrent workers and batch members see each other's running trials and spread out.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, s.n_trials // 2)),
                                          constant_liar=True)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, s.n_trials // 2)))
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "qmc":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=s.seed)
    return optuna.samplers.GridSampler({PARAM: grid_points(cfg)}, seed=s.seed)


def grid_points(cfg: StudyConfig) -> list[float]:
    s = cfg.search
    return [float(v) for v in np.geomspace(s.lambda_low, s.lambda_high, s.n_trials)]


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    epochs = cfg.train.epochs
    if cfg.search.validation == "cv":
        # CV trials report the running mean of fold accuracies at step = fold (0..folds-1); see docs/cv.md.
        folds = cfg.search.folds
        if cfg.search.pruner == "median":
            # Earliest prune after the second fold: one fold alone is too noisy to stop a lambda on.
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if cfg.search.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=folds)
        return optuna.pruners.NopPruner()
    if cfg.search.pruner == "median":
        # Early epochs say little about a regulariser: wait for half the epochs.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 2))
    if cfg.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def stored_config(study: optuna.Study) -> StudyConfig | None:
    text = study.user_attrs.get("config")
    return from_json(text) if isinstance(text, str) else None


def create_or_load(cfg: StudyConfig, storage: str | None) -> optuna.Study:
    """The study named ``cfg.name``: created with its config, or loaded when the stored config is the same."""
    store = open_storage(storage)
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=store)
    except KeyError:
        existing = None
    if existing is not None:
        old = stored_config(existing)
        if old is None:
            raise StudyConflictError(
                f"study {cfg.name!r} in {mask(resolve_url(storage))} was not made by lambda-sweep; "
                "choose another name with --name"
            )
        changed = diff(old, cfg)
        if changed:
            raise StudyConflictError(
                f"study {cfg.name!r} exists with a different config ({', '.join(changed)}); "
                "run the same study file to resume it, or give a new name with --name"
            )
    study = optuna.create_study(
        study_name=cfg.name, storage=store, direction="maximize", load_if_exists=True,
        sampler=make_sampler(cfg), pruner=make_pruner(cfg),  # workers reseed it per trial
    )
    if existing is None:
        try:
            study.set_user_attr("config", cfg.to_json())
            study.set_user_attr("created_by", f"lambda-sweep {__version__}")
            study.set_user_attr("created_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
            study.set_metric_names(["val_acc"])
        except Exception:
            optuna.delete_study(study_name=cfg.name, storage=store)  # no half-made study left behind
            raise
    return study


@dataclass(frozen=True)
class Progress:
    """One finished trial, as the run loop reports it."""

    trial: int
    state: str
    lam: float | None
    value: float | None
    complete: int
    target: int
    best_value: float | None
    best_lam: float | None


ProgressCallback = Callable[[Progress], None]


def run(cfg: StudyConfig, storage: str | None = None, *, on_trial: ProgressCallback | None = None,
        refit_after: bool = True, workers: int = 1, stop=None) -> optuna.Study:
    """Create or resume the study and run trials until it has ``n_trials`` complete ones, then refit.

    This is ``worker.submit`` + ``worker.work`` (+ ``workers - 1`` extra ``sweep worker`` processes)
    + the refit. ``stop`` (a ``worker.StopFlag``) ends the run cleanly, without the refit.
    """
    import tempfile

    from sweep import worker

    prep = prepare(cfg)  # data and device problems surface before anything is written to the store
    objective = make_objective(cfg, prep)  # so do fold problems (more folds than a class has examples)
    study = worker.submit(cfg, storage)
    stop = stop if stop is not None else worker.StopFlag()
    with tempfile.TemporaryDirectory(prefix="sweep-workers-") as logs:
        procs = worker.spawn_workers(storage, cfg.name, workers - 1, log_dir=logs) if workers > 1 else []
        try:
            worker.work(storage, study_name=cfg.name, refit=False, on_trial=on_trial, stop=stop, objective=objective,
                        prep=prep)
        except BaseException:
            worker.join_workers(procs, terminate=True)
            raise
        worker.join_workers(procs, terminate=bool(stop))
    if refit_after and not stop:
        refit_best(study, cfg, prep)
    return study


def _grid_exhausted(study: optuna.Study, cfg: StudyConfig) -> bool:
    done = {t.params.get(PARAM) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
    return all(p in done for p in grid_points(cfg))


def _progress(study: optuna.Study, last: optuna.trial.FrozenTrial, target: int) -> Progress:
    scores = scores_of(study.get_trials(deepcopy=False))
    best = choose(scores, "min") if scores else None
    return Progress(
        trial=last.number, state=last.state.name, lam=last.params.get(PARAM), value=last.value,
        complete=len(scores), target=target,
        best_value=best.mean if best else None, best_lam=best.lam if best else None,
    )


def refit_best(study: optuna.Study, cfg: StudyConfig, prep=None, rules: tuple[str, ...] | None = None) -> dict:
    """Refit each rule's lambda on the whole training set and store its test accuracy (once per choice).

    ``rules`` defaults to the study's ``search.rule`` alone: test accuracies of both rules
    side by side would invite choosing the rule on the test set.
    """
    scores = scores_of(study.get_trials(deepcopy=False))
    if not scores:
        return {}
    stored = dict(study.user_attrs.get("refit", {}))
    for rule in rules or (cfg.search.rule,):
        pick = choose(scores, rule)
        if stored.get(rule, {}).get("trial") == pick.number:
            continue
        prep = prep or prepare(cfg)
        try:
            record = refit(cfg, prep, pick.lam)
        except TrainingDivergedError as err:
            raise TrainingDivergedError(f"the refit of trial {pick.number} on the whole training set failed: {err}") from None
        stored[rule] = {"rule": rule, "trial": pick.number, "val_acc": pick.mean, "val_se": pick.se, **record}
        try:
            study.set_user_attr("refit", stored)
        except Exception as err:  # pragma: no cover - storage went away mid-run
            raise StorageError(f"cannot store the refit of {cfg.name!r}: {err}") from None
    return stored
