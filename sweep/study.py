"""Studies: create or load them, their samplers and pruners, progress records, the refit.

A study's config is stored as the study attribute ``config`` when it is created,
so workers and reports rebuild everything from the store. ``run`` continues an
interrupted study to its target count of complete trials (``sweep.workers.run``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from sweep import __version__
from sweep.config import PARAM, StudyConfig, diff, require_config
from sweep.errors import NoCompleteTrialsError, StorageError, StudyConflictError, TrainingDivergedError
from sweep.objectives.prepared import Prepared, prepare
from sweep.objectives.scheme import refit, scheme_of
from sweep.objectives.scoring import metric_of
from sweep.selection import best_score, refit_matches, rule_named, scores_of, selection_of, sign_of
from sweep.storages.lock import StudyLock
from sweep.storages.optuna_compat import experimental_allowed
from sweep.storages.store import mask, open_storage, resolve_url
from sweep.training.factories import check_fingerprints, fingerprints


def sampler_seed(seed: int, offset: int) -> int:
    """The sampler's seed after ``offset`` trials: ``seed`` itself at 0, then a hash of both.

    Not ``seed + offset``: with that, the study with seed s + 1 drew the lambdas of seed s one trial
    later, so replicate studies seeded 0, 1, 2, ... shared most of their lambdas.
    """
    if offset == 0:
        return seed
    return int(np.random.SeedSequence([seed, offset]).generate_state(1)[0])  # below 2**32, as numpy wants


def make_sampler(cfg: StudyConfig, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``offset`` (the trials so far) reseeds it so a resumed run does not replay its random start."""
    s = cfg.search
    seed = sampler_seed(s.seed, offset)
    if s.sampler == "tpe":
        # constant_liar: concurrent workers and batch members see each other's running trials and spread out.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, s.n_trials // 2)),
                                          constant_liar=True)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, s.n_trials // 2)))
    if s.sampler in ("random", "marglik"):  # marglik: its one trial fixes its own lambda (sweep.objectives.evidence)
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "qmc":
        with experimental_allowed():
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=s.seed)
    return optuna.samplers.GridSampler({PARAM: grid_points(cfg)}, seed=s.seed)


def grid_points(cfg: StudyConfig) -> list[float]:
    """The lambdas of a grid study: ``n_trials`` points, geometric over the range."""
    s = cfg.search
    return [float(v) for v in np.geomspace(s.lambda_low, s.lambda_high, s.n_trials)]


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; CV trials report per fold, holdout trials per epoch."""
    epochs = cfg.train.epochs
    scheme = scheme_of(cfg)
    if scheme in ("evidence", "marglik"):
        return optuna.pruners.NopPruner()  # the evidence is known only at the end of a trial
    if scheme == "cv":
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


def create_or_load(cfg: StudyConfig, storage: str | None) -> optuna.Study:
    """The study named ``cfg.name``: created with its config, or loaded when the stored config is the same.

    A study with factories also stores their import paths and source hashes (``factories``); loading it
    with a factory whose source differs is refused like a changed config.
    """
    prints = fingerprints(cfg)  # imports the factories: a bad one fails before the store is touched
    store = open_storage(storage)
    # Check and create under the study lock: two submits of one new name with different configs cannot both pass
    # the check before either has stored its config (the second now finds the first and is refused).
    with StudyLock(store, cfg.name):
        return _create_or_check(cfg, storage, store, prints)


def _create_or_check(cfg: StudyConfig, storage: str | None, store: optuna.storages.BaseStorage,
                     prints: dict[str, dict[str, str]]) -> optuna.Study:
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=store)
    except KeyError:
        existing = None
    if existing is not None:
        old = require_config(existing.user_attrs, cfg.name, where=mask(resolve_url(storage)),
                             fix="choose another name with --name")
        changed = diff(old, cfg)
        if changed:
            raise StudyConflictError(
                f"study {cfg.name!r} exists with a different config ({', '.join(changed)}); "
                "run the same study file to resume it, or give a new name with --name"
            )
        check_fingerprints(existing.user_attrs.get("factories"), cfg)
    study = optuna.create_study(
        study_name=cfg.name, storage=store, direction=metric_of(cfg).direction, load_if_exists=True,
        sampler=make_sampler(cfg), pruner=make_pruner(cfg),  # workers reseed it per trial
    )
    if existing is None:
        try:
            study.set_user_attr("config", cfg.to_json())
            if prints:
                study.set_user_attr("factories", prints)
            study.set_user_attr("created_by", f"lambda-sweep {__version__}")
            study.set_user_attr("created_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
            with experimental_allowed():
                study.set_metric_names(["val_acc" if metric_of(cfg).name == "accuracy" else metric_of(cfg).name])
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


ProgressCallback = Callable[[Progress], None]  # called by the run loop after each finished trial


def grid_exhausted(study: optuna.Study, cfg: StudyConfig) -> bool:
    """True when every grid point has a finished (complete or pruned) trial."""
    done = {t.params.get(PARAM) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
    return all(p in done for p in grid_points(cfg))


def progress(study: optuna.Study, last: optuna.trial.FrozenTrial, target: int) -> Progress:
    """What the run loop reports after trial ``last``: its figures and the best lambda so far."""
    scores = scores_of(study.get_trials(deepcopy=False), sign_of(study))
    best = best_score(scores) if scores else None
    return Progress(
        trial=last.number, state=last.state.name, lam=last.params.get(PARAM), value=last.value,
        complete=len(scores), target=target,
        best_value=best.mean if best else None, best_lam=best.lam if best else None,
    )


def refit_best(study: optuna.Study, cfg: StudyConfig, prep: Prepared | None = None, *,
               rules: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Refit each rule's lambda on the whole training set and store its test accuracy (once per choice).

    ``rules`` defaults to the study's ``search.rule`` alone: test accuracies of every rule
    side by side would invite choosing the rule on the test set (``sweep refit --rule`` asks for more).
    """
    sel = selection_of(study, cfg)
    if sel is None:
        return {}
    stored = dict(study.user_attrs.get("refit", {}))
    for rule in rules or (cfg.search.rule,):
        pick = sel.picks[rule_named(rule).name]  # an unknown rule: a ValueError naming the registry's
        if refit_matches(stored.get(rule), pick):
            continue
        prep = prep or prepare(cfg)
        what = f"trial {pick.trial}" if pick.trial is not None else f"the {rule} pick (lambda {pick.lam:.3g})"
        try:
            record = refit(cfg, prep, pick.lam)
        except TrainingDivergedError as err:
            raise TrainingDivergedError(f"the refit of {what} on the whole training set failed: {err}") from None
        stored[rule] = {"rule": rule, "trial": pick.trial, "val_acc": pick.val_acc, "val_se": pick.val_se, **record}
        try:
            study.set_user_attr("refit", stored)
        except Exception as err:  # pragma: no cover - storage went away mid-run
            raise StorageError(f"cannot store the refit of {cfg.name!r}: {err}") from None
    return stored


def refit_for(study: optuna.Study, rule: str) -> dict[str, Any]:
    """``sweep refit NAME --rule RULE``: refit one more rule's pick of a stored study (its config from the store)."""
    cfg = require_config(study.user_attrs, study.study_name, fix="it has no config to refit with")
    if selection_of(study, cfg) is None:
        raise NoCompleteTrialsError(f"study {study.study_name!r} has no complete trial to refit; run it with 'sweep run'")
    return refit_best(study, cfg, rules=(rule,))
