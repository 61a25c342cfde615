"""sweep.storage.report_many: a population's epoch reported in one transaction, on both backends."""

from __future__ import annotations

import optuna
import sqlalchemy
from optuna.trial import TrialState

from sweep.optuna_compat import latest_trial, rdb_backend
from sweep.storage import open_storage, report_many


def test_report_many_stores_every_live_trial_in_one_commit(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), direction="maximize")
    trials = [study.ask() for _ in range(4)]
    study.tell(trials[2], state=TrialState.FAIL)  # as if failed as stale while this worker was paused
    backend = rdb_backend(study)
    assert backend is not None
    commits = []
    sqlalchemy.event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    refused = report_many(study, [(t, 0.1 * (n + 1), 5) for n, t in enumerate(trials)])
    assert refused == [trials[2]]
    assert len(commits) == 1
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert stored == {0: {5: 0.1}, 1: {5: 0.2}, 2: {}, 3: {5: 0.4}}
    # The live trials know their reports (the pruner reads them there), as after trial.report.
    assert [latest_trial(t).intermediate_values for t in trials] == [{5: 0.1}, {5: 0.2}, {}, {5: 0.4}]


def test_report_many_reports_one_by_one_on_other_storages() -> None:
    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(3)]
    study.tell(trials[0], state=TrialState.FAIL)
    assert report_many(study, [(t, 0.5, 1) for t in trials]) == [trials[0]]
    assert [t.intermediate_values for t in study.get_trials()] == [{}, {1: 0.5}, {1: 0.5}]
