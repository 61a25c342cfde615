"""Batches of CV and repeated trials (sweep.objectives.batched): the same values, attributes and pruning
decisions as the single-trial objectives, on the CPU and the shipped sample."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

import sweep.objectives.batched
import sweep.training.trainers
import sweep.workers.batch
from sweep import study
from sweep.config import PARAM, StudyConfig
from sweep.objectives.prepared import prepare
from sweep.objectives.scheme import make_objective
from sweep.storages.optuna_compat import PrunerView
from sweep.workers.batch import run_batch


def _fresh(cfg: StudyConfig, url: str, lams: list[float], *, startup: dict[int, float] | None = None) -> optuna.Study:
    """A study with ``lams`` queued, after five COMPLETE trials reporting ``startup`` (the median pruner's start)."""
    s = study.create_or_load(cfg, url)
    dist: dict[str, BaseDistribution] = {PARAM: FloatDistribution(cfg.search.lambda_low, cfg.search.lambda_high, log=True)}
    for _ in range(5 if startup else 0):
        s.add_trial(optuna.trial.create_trial(params={PARAM: 1e-3}, distributions=dist, value=0.5,
                                              intermediate_values=startup))
    for lam in lams:
        s.enqueue_trial({PARAM: lam})
    return s


def _single(cfg: StudyConfig, url: str, lams: list[float], **kw: Any) -> list[optuna.trial.FrozenTrial]:
    s = _fresh(cfg, url, lams, **kw)
    s.optimize(make_objective(cfg, prepare(cfg)), n_trials=len(lams), catch=())
    return s.get_trials()[-len(lams):]


def _batch(cfg: StudyConfig, url: str, lams: list[float], **kw: Any) -> list[optuna.trial.FrozenTrial]:
    s = _fresh(cfg, url, lams, **kw)
    return run_batch(s, cfg, prepare(cfg), size=len(lams))


def _same_trial(batch: optuna.trial.FrozenTrial, alone: optuna.trial.FrozenTrial, *, tol: float) -> None:
    assert batch.state == alone.state and batch.params == alone.params
    assert set(batch.user_attrs) == set(alone.user_attrs) | {"population"}
    assert list(batch.intermediate_values) == list(alone.intermediate_values)
    for step, v in alone.intermediate_values.items():
        assert batch.intermediate_values[step] == pytest.approx(v, abs=tol)
    for key in ("val_acc", "val_se", "val_loss", "train_loss"):
        assert batch.user_attrs[key] == pytest.approx(alone.user_attrs[key], abs=tol), key
    assert batch.user_attrs["fold_scores"] == pytest.approx(alone.user_attrs["fold_scores"], abs=tol)
    for key in ("seeds", "folds", "repeats", "validation", "n_val", "split_seed"):
        assert batch.user_attrs.get(key) == alone.user_attrs.get(key), key
    if alone.value is not None:
        assert batch.value == pytest.approx(alone.value, abs=tol)


@pytest.mark.parametrize("repeats", [1, 2], ids=["cv", "cv-repeats"])
def test_cv_batch_equals_single_cv_trials(tiny_cfg, sqlite_url: str, tmp_path, repeats: int) -> None:
    cfg = tiny_cfg(name="cvb", train={"epochs": 1},
                   search={"validation": "cv", "folds": 3, "repeats": repeats, "n_trials": 3, "batch": 3})
    lams = [1e-5, 1e-3, 1e-2]
    batch = _batch(cfg, sqlite_url, lams)
    alone = _single(cfg, f"sqlite:///{tmp_path / 'single.db'}", lams)
    assert [t.state for t in batch] == [TrialState.COMPLETE] * 3
    for b, a in zip(batch, alone, strict=True):
        _same_trial(b, a, tol=1.5 / 1333)  # each fold: an argmax tie may flip one of ~1,333 validation digits
        assert len(b.user_attrs["fold_scores"]) == 3 * repeats and b.user_attrs["population"] == 3


def test_repeated_holdout_batch_equals_single_trials(tiny_cfg, sqlite_url: str, tmp_path) -> None:
    cfg = tiny_cfg(name="rep", train={"epochs": 2}, search={"repeats": 3, "n_trials": 2, "batch": 2})
    lams = [1e-5, 1e-2]
    batch = _batch(cfg, sqlite_url, lams)
    alone = _single(cfg, f"sqlite:///{tmp_path / 'single.db'}", lams)
    for b, a in zip(batch, alone, strict=True):
        _same_trial(b, a, tol=1.5 / 1000)
        assert b.user_attrs["val_se_binomial"] == pytest.approx(a.user_attrs["val_se_binomial"], abs=1e-3)
        assert list(b.intermediate_values) == [1, 2]  # the first seed reports each epoch, as the objective does


def test_cv_batch_prunes_as_the_single_cv_objective(tiny_cfg, sqlite_url: str, tmp_path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Five complete trials at 0.5 on every fold; lambda 1e-5 learns (about 0.8), lambda 3 decays every
    # weight away (about 0.1): the median pruner stops it after fold 1 (its warm-up is one fold).
    cfg = tiny_cfg(name="cvp", train={"epochs": 1},
                   search={"validation": "cv", "folds": 4, "pruner": "median", "lambda_high": 5.0, "batch": 2})
    lams, startup = [1e-5, 3.0], {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}
    widths: list[list[int]] = []
    real = sweep.training.trainers.train_population

    def counting(sets, members, **kw):  # type: ignore[no-untyped-def]
        widths.append(sorted({m.fit_set for m in members}) + [len(members)])
        return real(sets, members, **kw)

    monkeypatch.setattr(sweep.training.trainers, "train_population", counting)
    batch = _batch(cfg, sqlite_url, lams, startup=startup)
    alone = _single(cfg, f"sqlite:///{tmp_path / 'single.db'}", lams, startup=startup)
    assert [t.state for t in alone] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(alone[1].intermediate_values) == [0, 1]
    for b, a in zip(batch, alone, strict=True):
        _same_trial(b, a, tol=1.5 / 1000)
    # Folds 0 and 1 together (no pruning before fold 1), then one fold per wave without the pruned trial.
    assert widths == [[0, 1, 4], [2, 1], [3, 1]]


@pytest.mark.parametrize("age", [0.0, 3600.0], ids=["every-epoch", "before-finishing"])
def test_holdout_batch_stores_every_report_as_single_trials_do(tiny_cfg, sqlite_url: str, tmp_path, age: float,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Reports reach the store in one write per epoch (age 0), or only before a trial is finished (an hour):
    # either way the store ends with what single trials store, and the pruned trial is pruned at the same epoch.
    cfg = tiny_cfg(name="hop", train={"epochs": 4}, search={"pruner": "median", "lambda_high": 5.0, "batch": 2})
    lams, startup = [1e-5, 3.0], {e: 0.5 for e in range(1, 5)}
    monkeypatch.setattr(sweep.objectives.batched, "REPORT_WRITE_SECONDS", age)
    writes: list[int] = []
    real = sweep.objectives.batched.report_many
    monkeypatch.setattr(sweep.objectives.batched, "report_many", lambda s, r: writes.append(len(r)) or real(s, r))
    batch = _batch(cfg, sqlite_url, lams, startup=startup)
    alone = _single(cfg, f"sqlite:///{tmp_path / 'single.db'}", lams, startup=startup)
    assert [t.state for t in batch] == [t.state for t in alone] == [TrialState.COMPLETE, TrialState.PRUNED]
    for b, a in zip(batch, alone, strict=True):
        assert list(b.intermediate_values) == list(a.intermediate_values)
        assert list(b.intermediate_values.values()) == pytest.approx(list(a.intermediate_values.values()), abs=2e-3)
    pruned_at = len(alone[1].intermediate_values)
    assert sum(writes) == 4 + pruned_at  # every report written once
    assert len(writes) == (4 if age == 0 else 3)  # per epoch; or the first, before the prune and before the end
    assert writes[0] == 2  # the first epoch is written at once: the store shows the batch under way


def test_pruner_view_decides_as_should_prune(sqlite_url: str) -> None:
    s = optuna.create_study(storage=sqlite_url, direction="maximize",
                            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for v in (0.4, 0.6, 0.8):
        t = s.ask()
        t.report(v, 0)
        s.tell(t, v)
    view = PrunerView(s, max_age=0)  # every refresh reads: trials complete between the asks
    assert view.fast
    for v, expect in ((0.5, True), (0.7, False), (0.6, False)):
        t = s.ask()
        t.report(v, 0)
        assert bool(view.should_prune(t)) == bool(t.should_prune()) == expect
        s.tell(t, v)
        view.refresh()


def test_pruner_view_reads_the_store_once_while_no_trial_completes(sqlite_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch's epochs: the same live trials report step after step; the COMPLETE ones do not change.
    s = optuna.create_study(storage=sqlite_url, direction="maximize",
                            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for v in (0.4, 0.6, 0.8):
        t = s.ask()
        for step in range(5):
            t.report(v + step / 100, step)
        s.tell(t, v)
    reads = []
    real = s.get_trials
    monkeypatch.setattr(s, "get_trials", lambda *a, **k: reads.append(1) or real(*a, **k))
    view = PrunerView(s, max_age=sweep.objectives.batched.PRUNER_READ_SECONDS)  # a batch's age: one read for these epochs
    live = [s.ask() for _ in range(3)]
    for step in range(5):
        view.refresh()
        for t, v in zip(live, (0.5, 0.7, 0.61), strict=True):
            t.report(v + step / 100, step)
            assert bool(view.should_prune(t)) == bool(t.should_prune())
    assert len(reads) == 1 + 15  # the view's one read, and should_prune's own read per call


@pytest.mark.parametrize("where", ["ask", "suggest_lambda"])
def test_batch_goes_on_without_a_trial_failed_as_stale_right_after_its_ask(where: str, tiny_cfg, sqlite_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A store outage between a trial's ask and its first writes (its lambda, its attributes), longer than the
    # heartbeat grace: another worker fails the trial as stale and the store refuses the writes. Seen in CI's
    # server-restart fault test; the batch must drop that trial (another worker runs its lambda) and train the rest.
    cfg = tiny_cfg(name="stale-ask", train={"epochs": 2}, search={"batch": 2})
    s = _fresh(cfg, sqlite_url, [1e-4, 1e-3])
    real = getattr(sweep.workers.batch, where)

    def then_fail_trial_0(*args: Any) -> Any:
        out = real(*args)
        trial = out if where == "ask" else args[0]
        if trial.number == 0:  # what the other worker's fail_stale_trials does to it
            trial.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return out

    monkeypatch.setattr(sweep.workers.batch, where, then_fail_trial_0)
    with caplog.at_level("WARNING", logger="sweep"):
        out = run_batch(s, cfg, prepare(cfg), size=2)
    assert [t.state for t in out] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "population" not in out[0].user_attrs and out[1].user_attrs["population"] == 2
    assert len(out[1].intermediate_values) == 2 and out[1].value is not None
    assert "trial 0 was taken over after a pause; result discarded" in caplog.text
