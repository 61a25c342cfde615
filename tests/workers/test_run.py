from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweep import study as study_mod
from sweep.config import PARAM
from sweep.errors import StudyConflictError
from sweep.selection import best_record
from sweep.workers.run import run as run_study


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_run_stores_every_figure_and_the_refit(tiny_cfg, storage_url: str) -> None:
    cfg = tiny_cfg(name="figures")
    study = run_study(cfg, storage_url)
    trials = complete(study)
    assert len(trials) == 3
    for t in trials:
        assert 1e-5 <= t.params[PARAM] <= 1e-2
        assert sorted(t.intermediate_values) == [1, 2]  # validation accuracy of each epoch
        assert t.value == t.user_attrs["val_acc"] == t.user_attrs["history"][-1]["val_acc"]
        assert {"train_acc", "train_loss", "val_loss", "val_se", "seconds", "device", "seed"} <= t.user_attrs.keys()
        assert t.user_attrs["device"] == "cpu" and t.user_attrs["n_val"] == 1000
    assert study.user_attrs["config"] == cfg.to_json()
    refit = study.user_attrs["refit"]["min"]
    best = max(trials, key=lambda t: (t.value, -t.number))  # ties go to the earliest trial, as in Optuna
    assert refit["trial"] == best.number and refit["lambda"] == best.params[PARAM]
    assert 0.5 < refit["test_acc"] <= 1 and refit["seed"] == cfg.train.seed
    rec = best_record("figures", storage=storage_url)
    assert (rec.lam, rec.test_acc, rec.trial) == (best.params[PARAM], refit["test_acc"], best.number)


def test_interrupted_run_resumes_to_exactly_the_target(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="resume", search={"n_trials": 4, "sampler": "tpe"})
    seen: list[int] = []

    def stop_after_two(p: study_mod.Progress) -> None:
        seen.append(p.trial)
        if p.complete == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, sqlite_url, on_trial=stop_after_two)
    assert seen == [0, 1]
    again = run_study(cfg, sqlite_url)
    assert [t.number for t in complete(again)] == [0, 1, 2, 3]
    assert len({t.params[PARAM] for t in complete(again)}) == 4  # the resumed sampler did not replay its start
    assert "refit" in again.user_attrs
    # a finished study run again does nothing more
    assert len(run_study(cfg, sqlite_url).trials) == 4


def test_differing_config_is_refused_naming_keys(tiny_cfg, sqlite_url: str) -> None:
    run_study(tiny_cfg(name="same", search={"n_trials": 1}), sqlite_url)
    with pytest.raises(StudyConflictError) as info:
        study_mod.create_or_load(tiny_cfg(name="same", search={"n_trials": 1}, train={"epochs": 3, "lr": 0.2}), sqlite_url)
    assert str(info.value) == (
        "study 'same' exists with a different config (train.epochs, train.lr); "
        "run the same study file to resume it, or give a new name with --name"
    )


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random", "qmc", "grid"])
def test_each_sampler_runs(tiny_cfg, sqlite_url: str, sampler: str) -> None:
    cfg = tiny_cfg(name=sampler, train={"epochs": 1}, search={"sampler": sampler, "n_trials": 3})
    study = run_study(cfg, sqlite_url, refit_after=False)
    lams = sorted(t.params[PARAM] for t in complete(study))
    assert len(lams) == 3
    if sampler == "grid":
        assert lams == pytest.approx([1e-5, 10 ** -3.5, 1e-2])


def test_diverging_trial_fails_with_reason_and_sweep_goes_on(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="nan", search={"n_trials": 2, "lambda_high": 1e3})
    study = study_mod.create_or_load(cfg, sqlite_url)
    study.enqueue_trial({PARAM: 1e3})  # lr 0.1 * lambda 1000 > 2: the weights blow up
    study = run_study(cfg, sqlite_url, refit_after=False)
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith("training loss became")
    assert len(complete(study)) == 2


def test_median_pruner_prunes_a_bad_lambda_per_epoch(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="prune", train={"epochs": 4}, search={"pruner": "median", "n_trials": 6, "lambda_high": 5})
    study = study_mod.create_or_load(cfg, sqlite_url)
    for lam in (1e-5, 2e-5, 3e-5, 4e-5, 5e-5, 5.0):  # lambda 5: weights decay towards 0, accuracy collapses
        study.enqueue_trial({PARAM: lam})
    study = run_study(cfg, sqlite_url, refit_after=False)
    bad = study.trials[5]
    assert bad.params[PARAM] == 5.0 and bad.state == TrialState.PRUNED
    assert sorted(bad.intermediate_values) == [1, 2]  # stopped after the warm-up (epochs // 2), before epoch 4


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_replicate_studies_with_neighbouring_seeds_draw_different_lambdas(tiny_cfg, sampler: str) -> None:
    # The run loop reseeds the sampler before each batch with the trials so far. With seed + offset, the
    # study seeded 1 drew at offset k what the study seeded 0 drew at offset k + 1.
    from sweep.study import make_sampler, sampler_seed

    def draw(seed: int, offset: int) -> float:
        s = optuna.create_study(sampler=make_sampler(tiny_cfg(search={"sampler": sampler, "seed": seed}), offset=offset))
        return s.ask().suggest_float("lambda", 1e-5, 1e-2, log=True)

    assert sampler_seed(7, 0) == 7  # a study's first batch keeps its seed
    assert draw(0, 3) == draw(0, 3)  # reproducible
    assert draw(1, 2) != draw(0, 3)
    assert draw(0, 1) != draw(1, 0)
    assert len({sampler_seed(s, k) for s in range(20) for k in range(20)}) == 400


class _Child:
    """A ``sweep worker`` process as ``spawn_workers`` starts it, recorded instead of run."""

    started: list[dict[str, str]] = []

    def __init__(self, cmd: list[str], *, env: dict[str, str], **kwargs: object) -> None:
        _Child.started.append(env)

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.mark.parametrize(("env", "want"), [(None, "3"), ("8", "8")])
def test_run_with_workers_tells_each_how_many_share_the_device(tiny_cfg, sqlite_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 env: str | None, want: str) -> None:
    # search.batch = "auto" on a GPU: N local workers each take 1/N of the memory one would (SWEEP_WORKERS_PER_DEVICE),
    # unless the user said how many share it.
    from sweep.workers import run as run_mod

    if env is None:
        monkeypatch.delenv("SWEEP_WORKERS_PER_DEVICE", raising=False)
    else:
        monkeypatch.setenv("SWEEP_WORKERS_PER_DEVICE", env)
    _Child.started = []
    in_process: list[int | None] = []
    monkeypatch.setattr(run_mod.subprocess, "Popen", _Child)
    monkeypatch.setattr(run_mod, "work", lambda *args, per_device=None, **kwargs: in_process.append(per_device))
    run_study(tiny_cfg(name="share"), sqlite_url, workers=3, refit_after=False)
    assert [child["SWEEP_WORKERS_PER_DEVICE"] for child in _Child.started] == [want, want]
    assert in_process == [int(want)]
