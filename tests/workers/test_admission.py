"""The end of an admission: a study lock lost to a server restart between the count and the asks is found,
and the trials that overlap another worker's admission (past the target, or with its lambdas) are dropped."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweep import config
from sweep import study as study_mod
from sweep.objectives.prepared import suggest_lambda
from sweep.storages.store import open_storage
from sweep.study import create_or_load as submit
from sweep.workers.admission import SURPLUS
from sweep.workers.jobs import load_study
from sweep.workers.loop import RAN, run_one
from sweep.workers.single import StopFlag
from tests.procs import end_lock_sessions, study_file, trials

pytestmark = pytest.mark.slow


def _lose_the_lock_at_admission(monkeypatch: pytest.MonkeyPatch, url: str, cfg: config.StudyConfig, *,
                                others: int) -> None:
    """Between the admission's count and its asks (where the sampler is made): the server ends the lock's session,
    as a restart does, and another worker, free to admit, asks ``others`` trials from the same count, so with a
    sampler of the same seed, and gives them their lambdas."""
    make = study_mod.make_sampler
    calls = []

    def interfere(*args: Any, **kwargs: Any) -> optuna.samplers.BaseSampler:
        if not calls:
            calls.append(1)
            engine = sqlalchemy.create_engine(url)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                cut = end_lock_sessions(conn, zlib.crc32(b"lambda-sweep:dist"))
            engine.dispose()
            assert len(cut) == 1  # the premise: the worker held the lock, and lost it
            other = optuna.load_study(study_name="dist", storage=url, sampler=make(*args, **kwargs))
            for _ in range(others):
                suggest_lambda(other.ask(), cfg.search)
        return make(*args, **kwargs)

    monkeypatch.setattr(study_mod, "make_sampler", interfere)


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("batch", [1, 2])
def test_an_admission_that_lost_its_lock_drops_what_overshoots(batch: int, tmp_path: Path, storage_url: str,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Seen in CI: a server restart mid-admission cut the lock's session, and two workers' batches made 10 of 8."""
    path = study_file(tmp_path, n_trials=2)
    path.write_text(path.read_text() + f"batch = {batch}\n")
    cfg = config.load(path)
    submit(cfg, storage_url)
    store = open_storage(storage_url)
    _lose_the_lock_at_admission(monkeypatch, storage_url, cfg, others=2)  # the other worker takes both slots
    assert run_one(load_study(store, "dist", storage_url, ()), store, stop=StopFlag()) == (RAN, [])
    ts = trials(storage_url, "dist")
    ours = [t for t in ts if t.number >= 2]
    assert [t.state for t in ts if t.number < 2] == [TrialState.RUNNING] * 2  # the other worker's, untouched
    assert [(t.state, t.user_attrs["fail_reason"]) for t in ours] == [(TrialState.FAIL, SURPLUS)] * batch
    assert all(f"trial {t.number} dropped: asked while the study lock was lost" in caplog.text for t in ours)
    store.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("batch", [1, 3])
def test_an_admission_that_lost_its_lock_keeps_what_fits_with_its_own_lambdas(batch: int, tmp_path: Path,
                                                                              storage_url: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in a loop of the fault test: two workers admitted from one count, under the lost lock, and drew the
    same lambdas. The trial with the other worker's lambda is dropped; the rest fit the target and train."""
    path = study_file(tmp_path, n_trials=3)
    path.write_text(path.read_text() + f"batch = {batch}\n")
    cfg = config.load(path)
    submit(cfg, storage_url)
    store = open_storage(storage_url)
    _lose_the_lock_at_admission(monkeypatch, storage_url, cfg, others=1)  # with our first lambda
    state, numbers = run_one(load_study(store, "dist", storage_url, ()), store, stop=StopFlag())
    ts = trials(storage_url, "dist")
    assert (state, numbers) == (RAN, [2, 3][:batch - 1])  # the first asked had the other's lambda
    assert [t.state for t in ts] == [TrialState.RUNNING, TrialState.FAIL] + [TrialState.COMPLETE] * (batch - 1)
    assert ts[1].params["lambda"] == ts[0].params["lambda"]  # the premise: the same seed, the same lambda
    assert ts[1].user_attrs["fail_reason"] == SURPLUS
    live = [t.params["lambda"] for t in ts if t.state != TrialState.FAIL]
    assert len(set(live)) == len(live)
    store.engine.dispose()
