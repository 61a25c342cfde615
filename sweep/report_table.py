"""Plain-record tables of studies and trials, for ``sweep ls`` and ``sweep show``."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.config import PARAM
from sweep.select import load_study
from sweep.storage import open_storage


def study_rows(storage: str | None) -> list[dict[str, Any]]:
    store = open_storage(storage, heartbeat=False)
    rows = []
    for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        top = max(complete, key=lambda t: t.value) if complete else None  # type: ignore[arg-type,return-value]
        rows.append({
            "study": summary.study_name,
            "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "best_val": top.value if top else None,
            "best_lambda": top.params.get(PARAM) if top else None,
        })
    return rows


def trial_rows(name: str, storage: str | None) -> list[dict[str, Any]]:
    study = load_study(name, storage)
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "lambda": t.params.get(PARAM),
            # a pruned or failed trial: its last reported validation accuracy
            "val_acc": t.value if t.state == TrialState.COMPLETE else t.user_attrs.get("val_acc", last),
            "train_acc": t.user_attrs.get("train_acc"),
            "epochs": len(t.intermediate_values),
            "seconds": t.user_attrs.get("seconds"),
            "note": t.user_attrs.get("fail_reason", ""),
        })
    return rows
