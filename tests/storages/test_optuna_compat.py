"""Each private Optuna internal in sweep.storages.optuna_compat, exercised against the installed Optuna.

When an Optuna release renames or changes one of them, these tests fail here, with its name,
instead of a worker failing in the middle of a study.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from sweep.storages.optuna_compat import BaseHeartbeat, frozen, heartbeat_storage, latest_trial, storage_of, trial_id


def _study(url: str, *, heartbeat: int | None) -> optuna.Study:
    store = RDBStorage(url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat if heartbeat else None)
    return optuna.create_study(storage=store, direction="maximize")


def test_storage_of_is_the_study_storage(sqlite_url: str) -> None:
    study = _study(sqlite_url, heartbeat=None)
    storage = storage_of(study)
    assert storage.get_study_id_from_name(study.study_name) == study._study_id


def test_trial_id_and_frozen_read_a_live_trial(sqlite_url: str) -> None:
    study = _study(sqlite_url, heartbeat=None)
    study.ask()
    trial = study.ask()
    trial.set_user_attr("x", 1)
    assert trial_id(trial) == storage_of(study).get_trial_id_from_study_id_trial_number(study._study_id, 1)
    live = frozen(study, trial)
    assert (live.number, live.state, live.user_attrs) == (1, TrialState.RUNNING, {"x": 1})
    study.tell(trial, 0.5)
    assert frozen(study, trial).state == TrialState.COMPLETE


def test_latest_trial_has_the_reports_without_a_storage_read(sqlite_url: str, monkeypatch) -> None:
    study = _study(sqlite_url, heartbeat=None)
    trial = study.ask()
    trial.report(0.25, 1)
    trial.report(0.5, 2)
    monkeypatch.setattr(storage_of(study), "get_trial", lambda *_: pytest.fail("latest_trial read the storage"))
    seen = latest_trial(trial)
    assert (seen.number, seen.state, seen.intermediate_values, seen.last_step) == (0, TrialState.RUNNING, {1: 0.25, 2: 0.5}, 2)


def test_heartbeat_storage_only_when_heartbeats_are_on(sqlite_url: str, tmp_path) -> None:
    on = storage_of(_study(sqlite_url, heartbeat=1))
    off = storage_of(_study(f"sqlite:///{tmp_path / 'off.db'}", heartbeat=None))
    beat = heartbeat_storage(on)
    assert isinstance(beat, BaseHeartbeat) and beat.get_heartbeat_interval() == 1
    assert heartbeat_storage(off) is None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_recorded_heartbeat_keeps_a_trial_from_being_failed_as_stale(sqlite_url: str) -> None:
    study = _study(sqlite_url, heartbeat=1)
    trial = study.ask()
    beat = heartbeat_storage(storage_of(study))
    assert beat is not None
    beat.record_heartbeat(trial_id(trial))
    optuna.storages.fail_stale_trials(study)
    assert frozen(study, trial).state == TrialState.RUNNING


def test_study_id_and_stale_trial_ids(sqlite_url: str) -> None:
    import time

    from sweep.storages.optuna_compat import stale_trial_ids, study_id

    store = RDBStorage(sqlite_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=store, direction="maximize")
    assert study_id(study) == store.get_study_id_from_name(study.study_name)
    trial = study.ask()
    store.record_heartbeat(trial_id(trial))
    assert stale_trial_ids(storage_of(study), study_id(study)) == []
    time.sleep(2.2)  # older than the grace period, by the database's clock
    assert stale_trial_ids(storage_of(study), study_id(study)) == [trial_id(trial)]


def test_backend_private_calls_are_every_private_method_the_cache_calls() -> None:
    import inspect
    import re

    from optuna.storages._cached_storage import _CachedStorage

    from sweep.storages.optuna_compat import BACKEND_PRIVATE_CALLS

    called = set(re.findall(r"self\._backend\.(_[a-z_]+)\(", inspect.getsource(_CachedStorage)))
    # Each is retried through an outage by store.SweepStorage; a new one would bypass the retries.
    assert called == {*BACKEND_PRIVATE_CALLS, "_get_stale_trial_ids"}
    assert all(callable(getattr(RDBStorage, name)) for name in BACKEND_PRIVATE_CALLS)


def test_write_reports_stores_many_trials_in_one_commit_and_skips_finished_ones(sqlite_url: str) -> None:
    import sqlalchemy

    from sweep.storages.optuna_compat import rdb_backend, write_reports

    study = _study(sqlite_url, heartbeat=None)
    trials = [study.ask() for _ in range(3)]
    study.tell(trials[1], state=TrialState.FAIL)
    backend = rdb_backend(study)
    assert isinstance(backend, RDBStorage)
    commits = []
    sqlalchemy.event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    refused = write_reports(backend, [(trial_id(t), 3, 0.25 * (n + 1)) for n, t in enumerate(trials)])
    assert refused == {trial_id(trials[1])}
    assert len(commits) == 1
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert stored == {0: {3: 0.25}, 1: {}, 2: {3: 0.75}}
    write_reports(backend, [(trial_id(trials[0]), 3, 0.5)])  # again (a retried transaction): overwritten, not added
    assert study.get_trials()[0].intermediate_values == {3: 0.5}
    # Optuna's own encoding of values a float column cannot hold.
    write_reports(backend, [(trial_id(trials[2]), 4, float("inf")), (trial_id(trials[2]), 5, float("nan"))])
    stored_2 = study.get_trials()[2].intermediate_values
    assert stored_2[4] == float("inf") and stored_2[5] != stored_2[5] and stored_2[3] == 0.75
    with pytest.raises(KeyError, match="no trial with id 999"):
        write_reports(backend, [(999, 1, 0.5)])


def test_rdb_backend_is_none_for_an_in_memory_study() -> None:
    from sweep.storages.optuna_compat import rdb_backend

    assert rdb_backend(optuna.create_study()) is None


def test_remember_report_is_what_the_pruner_reads(sqlite_url: str) -> None:
    from sweep.storages.optuna_compat import remember_report

    study = _study(sqlite_url, heartbeat=None)
    trial = study.ask()
    remember_report(trial, 2, 0.5)
    assert latest_trial(trial).intermediate_values == {2: 0.5}


def test_write_user_attrs_stores_every_key_in_one_commit_and_refuses_a_finished_trial(sqlite_url: str) -> None:
    import sqlalchemy

    from sweep.storages.optuna_compat import rdb_backend, remember_user_attrs, write_user_attrs

    study = _study(sqlite_url, heartbeat=None)
    live, done = study.ask(), study.ask()
    study.tell(done, state=TrialState.FAIL)
    backend = rdb_backend(study)
    assert isinstance(backend, RDBStorage)
    commits = []
    sqlalchemy.event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    attrs = {"val_se": 0.0078, "history": [{"epoch": 1, "val_acc": 0.5}], "seed": 0, "device": "cpu"}
    write_user_attrs(backend, trial_id(live), attrs)
    assert len(commits) == 1
    assert study.get_trials()[0].user_attrs == attrs  # stored as set_user_attr stores them
    write_user_attrs(backend, trial_id(live), {"seed": 1})  # again (a retried transaction): replaced, not added
    assert study.get_trials()[0].user_attrs == {**attrs, "seed": 1}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_user_attrs(backend, trial_id(done), attrs)
    assert study.get_trials()[1].user_attrs == {}  # refused: nothing written
    remember_user_attrs(live, {"seed": 1})
    assert live.user_attrs == {"seed": 1}  # the live trial's own copy, which set_user_attr keeps


class _Watched:
    """A study as a pruner sees it, recording how the pruner reads trials (``get_trials`` states, other reads)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self.states: list[tuple[TrialState, ...] | None] = []
        self.other: list[str] = []

    def get_trials(self, deepcopy: bool = True, states=None):  # noqa: ANN001, ANN201 - Study.get_trials' signature
        self.states.append(None if states is None else tuple(states))
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str):  # noqa: ANN204
        if name in ("trials", "_get_trials", "best_trial", "best_trials", "best_value", "_storage"):
            self.other.append(name)
        return getattr(self._study, name)


def _pruners_of_the_project(tiny_cfg) -> list[optuna.pruners.BasePruner]:  # noqa: ANN001
    from sweep.study import make_pruner

    cfgs = [tiny_cfg(train={"epochs": 4}, search={"validation": validation, "pruner": pruner, "folds": 3})
            for validation in ("holdout", "cv") for pruner in ("median", "hyperband", "none")]
    return [make_pruner(cfg) for cfg in cfgs]


def _complete_trials(study: optuna.Study) -> None:
    """Six COMPLETE trials, each reporting steps 0..3: past the startup and warm-up of the project's pruners."""
    for v in (0.4, 0.6, 0.8, 0.5, 0.7, 0.65):
        t = study.ask()
        for step in range(4):
            t.report(v + step / 100, step)
        study.tell(t, v)


def test_complete_only_pruners_read_only_complete_trials_through_get_trials(sqlite_url: str, tiny_cfg) -> None:
    # PrunerView hands these pruners the study's trials read once every few seconds: right only while
    # they read nothing but COMPLETE trials, through study.get_trials(states=...). A RUNNING trial (a batch
    # member, another worker's trial) and a PRUNED one are in the study to be (not) read.
    from sweep.storages.optuna_compat import COMPLETE_ONLY_PRUNERS

    pruners = [p for p in _pruners_of_the_project(tiny_cfg) if isinstance(p, COMPLETE_ONLY_PRUNERS)]
    assert {type(p) for p in pruners} == {optuna.pruners.MedianPruner, optuna.pruners.NopPruner}
    for pruner in pruners:
        study = optuna.create_study(storage=sqlite_url, direction="maximize", pruner=pruner)
        _complete_trials(study)
        running = study.ask()
        for step in range(4):
            running.report(0.99, step)
        pruned = study.ask()
        pruned.report(0.01, 0)
        study.tell(pruned, state=TrialState.PRUNED)
        trial = study.ask()
        for step in range(4):
            trial.report(0.3, step)
            watched = _Watched(study)
            decision = pruner.prune(watched, latest_trial(trial))  # type: ignore[arg-type]
            assert decision == trial.should_prune(), (type(pruner).__name__, step)
            assert all(s == (TrialState.COMPLETE,) for s in watched.states), (type(pruner).__name__, watched.states)
            assert watched.other == [], (type(pruner).__name__, watched.other)
        if isinstance(pruner, optuna.pruners.MedianPruner):
            assert watched.states, "the median pruner no longer reads the study through get_trials"
            assert decision  # 0.3 is below the median of the complete trials: it was asked for real


def test_pruner_view_decides_as_should_prune_for_every_pruner_of_the_project(sqlite_url: str, tiny_cfg) -> None:
    from sweep.storages.optuna_compat import PrunerView

    for n, pruner in enumerate(_pruners_of_the_project(tiny_cfg)):
        study = optuna.create_study(storage=sqlite_url, study_name=f"p{n}", direction="maximize", pruner=pruner)
        _complete_trials(study)
        view = PrunerView(study, max_age=0)
        assert view.fast == isinstance(pruner, optuna.pruners.MedianPruner | optuna.pruners.NopPruner)
        for v in (0.3, 0.9):
            trial = study.ask()
            for step in range(4):
                trial.report(v, step)
                view.refresh()
                assert view.should_prune(trial) == trial.should_prune(), (type(pruner).__name__, v, step)
            study.tell(trial, v)


def test_tell_after_a_grid_is_used_up_raises_about_study_stop_and_stores_the_trial(sqlite_url: str) -> None:
    # GridSampler.after_trial calls study.stop() once the grid is used up; outside optimize Optuna raises, after
    # storing the trial. tell_past_stop matches that error by the text "Study.stop".
    from sweep.storages.optuna_compat import tell_past_stop

    study = optuna.create_study(storage=sqlite_url, sampler=optuna.samplers.GridSampler({"x": [0.5]}))
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    with pytest.raises(RuntimeError, match="Study.stop"):
        study.tell(trial, 1.0)
    assert frozen(study, trial).state == TrialState.COMPLETE  # stored all the same

    again = optuna.create_study(storage=sqlite_url, study_name="again", sampler=optuna.samplers.GridSampler({"x": [0.5]}))
    trial = again.ask()
    trial.suggest_float("x", 0.0, 1.0)
    told = tell_past_stop(again, trial, TrialState.COMPLETE, 1.0)
    assert (told.number, told.state, told.value) == (0, TrialState.COMPLETE, 1.0)


def test_tell_past_stop_raises_any_other_runtime_error(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.storages.optuna_compat import tell_past_stop

    study = _study(sqlite_url, heartbeat=None)
    trial = study.ask()
    monkeypatch.setattr(study, "tell", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):
        tell_past_stop(study, trial, TrialState.COMPLETE, 1.0)
