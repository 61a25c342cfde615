"""Reading a study's choice back: load it, select from its trials, and answer ``sweep best`` /
``sweep.best_lambda`` (``BestRecord``) and ``sweep evidence`` (``EvidenceChoice``).

Every answer here reads one ``Selection`` (``sweep.selection.rules.select``) over the study's searched
range, so ``sweep best``, the report and the evidence line name the same lambda for the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna

from sweep.config import StudyConfig, stored_config
from sweep.errors import ConfigError, NoCompleteTrialsError, NoRunSizeError, StudyNotFoundError
from sweep.selection.metrics import Metric, metric_named
from sweep.selection.rules import REGISTRY, Pick, Selection, rule_named, select
from sweep.selection.scores import scores_of, sign_of
from sweep.selection.transfer import Run, Transferred, target_run, tau_epoch
from sweep.storages.store import mask, open_storage, resolve_url


def load_study(name: str, storage: str | None) -> optuna.Study:
    """Study ``name`` from the store, read-only; a missing one is a StudyNotFoundError naming the studies there."""
    store = open_storage(storage, read_only=True)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
        known = ", ".join(sorted(names)[:10]) or "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {mask(resolve_url(storage))} (studies there: {known}); "
            "check the name with 'sweep ls' or pass --storage"
        ) from None


def selection_of(study: optuna.Study, cfg: StudyConfig | None = None) -> Selection | None:
    """The ``Selection`` of ``study`` over its searched range (None without complete trials)."""
    scores = scores_of(study.get_trials(deepcopy=False), sign_of(study))
    if not scores:
        return None
    if cfg is None:
        try:
            cfg = stored_config(study.user_attrs)
        except ConfigError:  # a config from another version: smooth over the trials' own span
            cfg = None
    if cfg is None:
        return select(scores)
    return select(scores, low=cfg.search.lambda_low, high=cfg.search.lambda_high)


def study_metric(study: optuna.Study) -> Metric:
    """The metric a stored study chooses lambda by: its config's ``search.metric`` (accuracy for a study made
    before the key, or by another version)."""
    try:
        cfg = stored_config(study.user_attrs)
    except ConfigError:
        cfg = None
    return metric_named(cfg.metric if cfg is not None else None)


def refit_matches(refit: object, pick: Pick) -> bool:
    """Whether a stored refit record belongs to ``pick`` (the same trial and lambda), not to an earlier pick."""
    return isinstance(refit, dict) and refit.get("trial") == pick.trial and refit.get("lambda") == pick.lam


@dataclass(frozen=True)
class BestRecord:
    """The answer of ``sweep best`` / ``best_lambda``: one rule's pick, every rule's pick, the plausible range."""

    study: str
    rule: str
    lam: float
    trial: int | None  # None for the smooth rule (its lambda need not be a trial's)
    val_acc: float
    val_se: float
    test_acc: float | None
    refit_seed: int | None
    storage: str
    # Every rule's pick, whichever ``rule`` chose ``lam``: ``<figure>_<rule key>``, filled from the registry.
    # These fields are the published JSON format (0.2's): a new rule answers ``--rule`` with no field here,
    # and is listed beside the others only when its fields are added on purpose.
    lam_min: float | None = None
    val_acc_min: float | None = None
    val_se_min: float | None = None
    lam_1se: float | None = None
    val_acc_1se: float | None = None
    val_se_1se: float | None = None
    lam_1se_paired: float | None = None
    val_acc_1se_paired: float | None = None
    lam_smooth: float | None = None
    val_acc_smooth: float | None = None
    smooth_low: float | None = None  # 5%..95% interval of the smoothed argmax
    smooth_high: float | None = None
    plausible_low: float | None = None  # lambdas not significantly worse than the best (one-sided, level 5%)
    plausible_high: float | None = None
    validation: str | None = None  # "holdout" or "cv": where val_se comes from (docs/cv.md)
    stopped: str | None = None  # why the study stopped before n_trials (search.stop = "resolved")
    # The metric the figures are in (search.metric), whether it is maximised, and the flat answer (selection.flat).
    metric: str = "accuracy"
    direction: str = "maximize"
    flat: bool = False
    flat_reason: str | None = None
    test_score: float | None = None  # the refit's test figure in the metric (None for accuracy: it is test_acc)

    # The refit's training-set size and the pick's decay timescale in epochs (docs/transfer.md); None for a
    # study refit before they were stored, whose JSON then reads as before (no such keys).
    n_train: int | None = None
    tau_epoch: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``sweep best``: ``lam*`` fields become ``lambda*`` keys, last, in field order. Another metric
        than accuracy names its figures ``val_score*`` (``val_acc*`` keep accuracy's meaning); accuracy studies
        print exactly their 0.2 keys and these new ones, ``test_score`` left out; ``n_train`` and ``tau_epoch``
        (docs/transfer.md) only where the refit stored its size."""
        out = {k: v for k, v in asdict(self).items() if v is not None or k not in ("n_train", "tau_epoch")}
        if self.metric == "accuracy":
            out.pop("test_score")
        else:
            for key in [k for k in out if k.startswith("val_acc")]:
                out["val_score" + key[7:]] = out.pop(key)
        for key in [k for k in out if k == "lam" or k.startswith("lam_")]:
            out["lambda" + key[3:]] = out.pop(key)
        for key in ("metric", "direction", "flat", "flat_reason", "test_score", "n_train", "tau_epoch"):  # after 0.2's keys
            if key in out:
                out[key] = out.pop(key)
        return out


def _every_pick(picks: dict[str, Pick]) -> dict[str, float]:
    """The per-rule fields of ``BestRecord`` that exist, from each registry entry's pick."""
    have = {f.name for f in fields(BestRecord)}
    out = {}
    for name, rule in REGISTRY.items():
        for figure in ("lam", "val_acc", "val_se"):
            if f"{figure}_{rule.key}" in have:
                out[f"{figure}_{rule.key}"] = getattr(picks[name], figure)
    return out


def best_record(name: str, *, storage: str | None = None, rule: str | None = None) -> BestRecord:
    """The lambda chosen by ``rule`` (default: the study's own ``search.rule``) for study ``name``,
    with every rule's pick, the plausible range and the refit's test accuracy."""
    if rule is not None:
        rule_named(rule)
    study = load_study(name, storage)
    cfg = stored_config(study.user_attrs)
    rule = rule or (cfg.search.rule if cfg is not None else "min")
    sel = selection_of(study, cfg)
    if sel is None:
        raise NoCompleteTrialsError(
            f"study {name!r} has no complete trial yet; run it with 'sweep run' (see 'sweep show {name}')"
        )
    pick = sel.picks[rule]
    refit = study.user_attrs.get("refit", {}).get(rule)
    matches = refit_matches(refit, pick)
    run = study_run(study.user_attrs, cfg)
    stopped = study.user_attrs.get("stopped")
    metric = metric_named(cfg.metric if cfg is not None else None)
    validation = None
    if cfg is not None:
        validation = "marglik" if cfg.search.sampler == "marglik" else cfg.search.validation
    return BestRecord(
        study=name, rule=rule, lam=pick.lam, trial=pick.trial, val_acc=pick.val_acc, val_se=pick.val_se,
        test_acc=refit["test_acc"] if matches else None, refit_seed=refit["seed"] if matches else None,
        storage=mask(resolve_url(storage)), **_every_pick(sel.picks),
        smooth_low=sel.smooth.interval[0] if sel.smooth else None,
        smooth_high=sel.smooth.interval[1] if sel.smooth else None,
        plausible_low=sel.plausible[0], plausible_high=sel.plausible[1],
        validation=validation, stopped=stopped.get("reason") if isinstance(stopped, dict) else None,
        metric=metric.name, direction=metric.direction, flat=sel.flat is not None, flat_reason=sel.flat,
        test_score=refit.get("test_score") if matches else None,
        n_train=run.n_train if run else None, tau_epoch=tau_epoch(pick.lam, run) if run else None,
    )


def study_run(attrs: dict[str, Any], cfg: StudyConfig | None) -> Run | None:
    """The run a study's lambda is for (its refit's training-set size, ``train.epochs/batch_size/lr``);
    None without a config or a refit that stored its size (studies refit before sizes were stored)."""
    sizes = [r.get("n_train") for r in (attrs.get("refit") or {}).values() if isinstance(r, dict)]
    n_train = next((n for n in sizes if isinstance(n, int)), None)
    if cfg is None or n_train is None:
        return None
    return Run(n_train=n_train, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr)


def best_for(name: str, for_run: Mapping[str, float], *, storage: str | None = None,
             rule: str | None = None) -> Transferred:
    """``sweep best NAME --for ...``: the study's pick carried to another run by every transfer rule."""
    rec = best_record(name, storage=storage, rule=rule)
    study = load_study(name, storage)
    src = study_run(study.user_attrs, stored_config(study.user_attrs))
    if src is None:
        raise NoRunSizeError(
            f"study {name!r} has no stored training-set size (no refit since sizes were stored); "
            f"refit it with 'sweep refit {name} --rule {rec.rule}', then ask again")
    return Transferred.of(rec.lam, (rec.plausible_low, rec.plausible_high), src, target_run(src, for_run))


@dataclass(frozen=True)
class EvidenceChoice:
    """The lambda with the highest Laplace log evidence (``sweep evidence``) beside the study rule's pick."""

    lam: float
    trial: int
    log_evidence: float
    rule: str
    rule_lam: float
    rule_trial: int | None  # None when the rule's lambda is not a trial's (``smooth``'s curve)
    rule_range: tuple[float, float] | None = None  # such a pick's own 5%..95% interval

    @property
    def agree(self) -> bool:
        """Same trial; for a pick between trials, the evidence's lambda inside that pick's interval."""
        if self.rule_trial is not None:
            return self.trial == self.rule_trial
        return self.rule_range is not None and self.rule_range[0] <= self.lam <= self.rule_range[1]


def evidence_pick(study_attrs: dict[str, Any], sel: Selection, rule: str) -> EvidenceChoice | None:
    """The evidence's pick from the stored ``evidence`` attribute beside ``sel``'s ``rule`` pick; None without one."""
    stored = study_attrs.get("evidence") or {}
    rows = [(int(k), float(v["lambda"]), float(v["log_evidence"])) for k, v in stored.items()]
    if not rows:
        return None
    trial, lam, value = max(rows, key=lambda r: (r[2], -r[0]))
    other = sel.picks[rule]
    return EvidenceChoice(lam, trial, value, rule, other.lam, other.trial, other.interval)


def evidence_choice(name: str, *, storage: str | None = None) -> EvidenceChoice:
    """The evidence's pick for study ``name`` (after ``sweep evidence``) beside its own rule's pick."""
    study = load_study(name, storage)
    cfg = stored_config(study.user_attrs)
    sel = selection_of(study, cfg)
    pick = evidence_pick(study.user_attrs, sel, cfg.search.rule if cfg else "min") if sel is not None else None
    if pick is None:
        raise NoCompleteTrialsError(f"study {name!r} has no evidence yet; compute it with 'sweep evidence {name}'")
    return pick
