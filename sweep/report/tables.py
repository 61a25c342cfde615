"""Plain-record tables of studies and trials (``sweep ls``, ``sweep show``) and how a number is printed.

Rows are dicts of plain values, so the CLI prints them as a table, JSON or CSV
from the same records.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.config import PARAM, stored_config
from sweep.errors import SweepError
from sweep.selection import best_score, load_study, scores_of, sign_of, state_counts, study_metric, study_run, tau_epoch
from sweep.storages.store import open_storage


def fmt(v: float | None, spec: str = ".4f", *, none: str = "-") -> str:
    """``v`` formatted with ``spec``, or ``none`` for a missing value: the one number formatter of tables and lines."""
    return none if v is None else format(v, spec)


def study_rows(storage: str | None) -> list[dict[str, Any]]:
    """One row per study in the store: trial counts and the best (rule ``min``) trial."""
    store = open_storage(storage, read_only=True)
    rows = []
    for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        trials = study.get_trials(deepcopy=False)
        counts = state_counts(trials)
        scores = scores_of(trials, sign_of(study))
        top = best_score(scores) if scores else None
        rows.append({
            "metric": study_metric(study).name,
            "study": summary.study_name,
            "complete": counts["COMPLETE"],
            "running": counts["RUNNING"],
            "pruned": counts["PRUNED"],
            "failed": counts["FAIL"],
            "best_val": top.mean if top else None,
            "best_lambda": top.lam if top else None,
        })
    return rows


def trial_rows(name: str, storage: str | None) -> list[dict[str, Any]]:
    """One row per trial of study ``name``."""
    study = load_study(name, storage)
    metric = study_metric(study).name
    try:
        run = study_run(study.user_attrs, stored_config(study.user_attrs))
    except SweepError:  # a config from another version: the trials without their timescale
        run = None
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        # the decay timescale in epochs at the study's refit size (docs/transfer.md); None before sizes were stored
        tau = tau_epoch(t.params[PARAM], run) if run is not None and PARAM in t.params else None
        if metric != "accuracy":  # val_acc keeps its meaning (a classifier's accuracy); the metric has its own keys
            rows.append({"number": t.number, "state": t.state.name.lower(), "lambda": t.params.get(PARAM),
                         "tau_epoch": tau, "metric": metric, "val_score": t.value if t.state == TrialState.COMPLETE else last,
                         "val_acc": t.user_attrs.get("val_acc"), "train_acc": t.user_attrs.get("train_acc"),
                         "epochs": len(t.intermediate_values), "seconds": t.user_attrs.get("seconds"),
                         "note": t.user_attrs.get("fail_reason", "")})
            continue
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "lambda": t.params.get(PARAM),
            "tau_epoch": tau,
            # a pruned or failed trial: its last reported validation accuracy
            "val_acc": t.value if t.state == TrialState.COMPLETE else t.user_attrs.get("val_acc", last),
            "train_acc": t.user_attrs.get("train_acc"),
            "epochs": len(t.intermediate_values),
            "seconds": t.user_attrs.get("seconds"),
            "note": t.user_attrs.get("fail_reason", ""),
        })
    return rows
