"""Issue #28, in process: a trial with no heartbeat is retried, a bad study is skipped, a dead refit claim expires,
no admission after a signal, one submit per name under the lock, the stop rule's fit outside the lock."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweep import study as study_mod
from sweep.config import StudyConfig
from sweep.errors import StudyConflictError
from sweep.storages import lock as lock_mod
from sweep.storages.store import open_storage
from sweep.study import create_or_load as submit
from sweep.workers import jobs, loop
from sweep.workers.heartbeats import ask
from sweep.workers.single import StopFlag
from tests.workers.helpers import work_within

pytestmark = pytest.mark.slow
Build = Callable[..., StudyConfig]


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "2")


def test_ask_writes_the_first_heartbeat(storage_url: str, tiny_cfg: Build) -> None:
    study = submit(tiny_cfg(), storage_url)
    store = open_storage(storage_url)
    trial = ask(optuna.load_study(study_name=study.study_name, storage=store))
    with sqlalchemy.create_engine(storage_url).connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats WHERE trial_id = :t"),
                            {"t": trial._trial_id}).scalar()
    assert rows == 1  # a worker killed right after the ask leaves a trial that can go stale


def test_a_running_trial_with_no_heartbeat_is_failed_and_retried(storage_url: str, tiny_cfg: Build) -> None:
    cfg = tiny_cfg(train={"epochs": 1}, search={"n_trials": 2})
    submit(cfg, storage_url)
    # A worker killed between the ask and its first heartbeat, or a creation whose reply was lost: RUNNING, no row.
    orphan = optuna.load_study(study_name="t", storage=storage_url).ask()
    summary = work_within(90, storage=storage_url, study_name="t")
    ts = optuna.load_study(study_name="t", storage=storage_url).get_trials()
    assert [t.state for t in ts].count(TrialState.COMPLETE) == 2
    assert TrialState.RUNNING not in [t.state for t in ts]
    assert ts[orphan.number].state == TrialState.FAIL
    assert ts[orphan.number].user_attrs["fail_reason"].startswith("stale: ")
    assert summary.finished == ["t"]


def test_a_multi_study_worker_skips_a_broken_study(sqlite_url: str, tiny_cfg: Build,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    submit(tiny_cfg(name="bad", train={"epochs": 1}), sqlite_url)
    optuna.load_study(study_name="bad", storage=sqlite_url).set_user_attr("config", "{not json")
    submit(tiny_cfg(name="good", train={"epochs": 1}, search={"n_trials": 1}), sqlite_url)
    with caplog.at_level(logging.WARNING, logger="sweep"):
        summary = work_within(120, storage=sqlite_url, refit=False)
    assert summary.finished == ["good"] and len(summary.trials) == 1
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("study 'bad' skipped: ")
    with pytest.raises(Exception, match="cannot be read"):  # asked for by name, it still stops the worker
        loop.work(sqlite_url, study_name="bad", stop=StopFlag())


def test_a_failure_streak_skips_only_that_study(sqlite_url: str, tiny_cfg: Build,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # lr 1e6 diverges at once: every trial fails, and after max(5, n_trials) in a row the study is skipped.
    submit(tiny_cfg(name="diverges", train={"epochs": 1, "lr": 1e6}, search={"n_trials": 2}), sqlite_url)
    submit(tiny_cfg(name="good", train={"epochs": 1}, search={"n_trials": 1}), sqlite_url)
    with caplog.at_level(logging.WARNING, logger="sweep"):
        summary = work_within(180, storage=sqlite_url, refit=False)
    assert summary.finished == ["good"]
    assert any(r.getMessage().startswith("study 'diverges' skipped: ") for r in caplog.records)


def test_a_dead_workers_refit_claim_expires(storage_url: str, tiny_cfg: Build) -> None:
    submit(tiny_cfg(train={"epochs": 1}, search={"n_trials": 2}), storage_url)
    loop.work(storage_url, study_name="t", refit=False)
    study = optuna.load_study(study_name="t", storage=storage_url)
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value or 0)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # Claimed by a worker killed mid-refit (as 0.3 claimed: no beat, only its time), never refreshed since.
    study.set_user_attr("refit_claim", {"trial": best.number, "lambda": best.params["lambda"], "by": "gone:1",
                                        "at": long_ago.isoformat(timespec="seconds")})
    summary = loop.work(storage_url, study_name="t")
    assert summary.refits == ["t"]
    assert optuna.load_study(study_name="t", storage=storage_url).user_attrs["refit"]["min"]["test_acc"] is not None


def test_a_live_refit_claim_is_respected(sqlite_url: str, tiny_cfg: Build) -> None:
    submit(tiny_cfg(train={"epochs": 1}, search={"n_trials": 2}), sqlite_url)
    loop.work(sqlite_url, study_name="t", refit=False)
    study = optuna.load_study(study_name="t", storage=sqlite_url)
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value or 0)
    now = dt.datetime.now(dt.UTC)
    study.set_user_attr("refit_claim", {"trial": best.number, "lambda": best.params["lambda"], "by": "alive:1",
                                        "at": now.isoformat(timespec="seconds"), "beat": now.timestamp()})
    assert loop.work(sqlite_url, study_name="t").refits == []


def test_no_trial_is_admitted_after_a_stop_signal(sqlite_url: str, tiny_cfg: Build) -> None:
    submit(tiny_cfg(train={"epochs": 1}), sqlite_url)
    store = open_storage(sqlite_url)
    job = jobs.load_study(store, "t", sqlite_url, ())
    stop = StopFlag()
    stop.set(signal.SIGINT)  # came while the worker loaded its data or waited for the lock
    loop.run_one(job, store, stop=stop)
    assert optuna.load_study(study_name="t", storage=sqlite_url).trials == []


def test_two_submits_of_one_new_name_with_different_configs(storage_url: str, tiny_cfg: Build,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real, first, b_done = optuna.create_study, threading.Event(), threading.Event()

    def create_study(**kwargs: Any) -> optuna.Study:
        if not first.is_set():  # submit A: its check passed; B gets its chance to check before A stores its config
            first.set()
            b_done.wait(5)  # B done (no lock), or blocked on the study lock for 5 s (the fix)
        return real(**kwargs)

    monkeypatch.setattr(study_mod.optuna, "create_study", create_study)
    errors: dict[str, BaseException] = {}

    def sub(key: str, cfg: StudyConfig) -> None:
        try:
            submit(cfg, storage_url)
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors[key] = err
        finally:
            if key == "b":
                b_done.set()

    a = threading.Thread(target=sub, args=("a", tiny_cfg(search={"n_trials": 3})))
    a.start()
    assert first.wait(60)
    b = threading.Thread(target=sub, args=("b", tiny_cfg(search={"n_trials": 4})))
    b.start()
    a.join(60)
    b.join(60)
    assert list(errors) == ["b"] and isinstance(errors["b"], StudyConflictError), errors
    assert str(errors["b"]).startswith("study 't' exists with a different config (search.n_trials)")


def test_the_stop_rule_fit_runs_outside_the_study_lock(sqlite_url: str, tiny_cfg: Build,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    held, seen = [0], []
    acquire, release = lock_mod.StudyLock.acquire, lock_mod.StudyLock.release

    def counted_acquire(self: lock_mod.StudyLock) -> lock_mod.StudyLock:
        out = acquire(self)
        self._counted = True  # type: ignore[attr-defined]
        held[0] += 1
        return out

    def counted_release(self: lock_mod.StudyLock) -> None:
        if getattr(self, "_counted", False):
            self._counted = False  # type: ignore[attr-defined]
            held[0] -= 1
        release(self)

    real_selection = jobs.selection_of

    def selection_of(*args: Any, **kwargs: Any) -> Any:
        seen.append(held[0])
        return real_selection(*args, **kwargs)

    monkeypatch.setattr(lock_mod.StudyLock, "acquire", counted_acquire)
    monkeypatch.setattr(lock_mod.StudyLock, "release", counted_release)
    monkeypatch.setattr(jobs, "selection_of", selection_of)
    submit(tiny_cfg(train={"epochs": 1}, search={"n_trials": 3, "stop": "resolved"}), sqlite_url)
    loop.work(sqlite_url, study_name="t", refit=False)
    assert seen and seen == [0] * len(seen)  # the fit ran, and never while this worker held the lock
