"""sweep.storages.writes: report_many and set_user_attrs: a population's epoch, a trial's attributes, each in one
transaction, on both backends."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweep.storages.optuna_compat import latest_trial, rdb_backend
from sweep.storages.store import open_storage
from sweep.storages.writes import report_many


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


def test_set_user_attrs_writes_a_trials_attributes_in_one_commit(storage_url: str) -> None:
    from sweep.storages.writes import set_user_attrs

    study = optuna.create_study(storage=open_storage(storage_url), direction="maximize")
    trial, done = study.ask(), study.ask()
    study.tell(done, state=TrialState.FAIL)  # as if failed as stale while this worker was paused
    backend = rdb_backend(study)
    assert backend is not None
    commits = []
    sqlalchemy.event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    attrs = {"val_se": 0.01, "fold_scores": [0.9, 0.8], "seed": 0}
    set_user_attrs(trial, attrs)
    assert len(commits) == 1
    assert study.get_trials()[0].user_attrs == attrs
    assert latest_trial(trial).user_attrs == attrs  # the live trial knows them, as after set_user_attr
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(done, attrs)
    assert study.get_trials()[1].user_attrs == {}


def test_set_user_attrs_sets_one_by_one_on_other_storages() -> None:
    from sweep.storages.writes import set_user_attrs

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    set_user_attrs(trial, {"a": 1, "b": [2]})
    assert study.get_trials()[0].user_attrs == {"a": 1, "b": [2]}
