"""Population training (sweep.training.population) and ask-and-tell batches (sweep.workers.batch), all on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from sweep import study
from sweep.config import PARAM, ModelConfig, TrainConfig
from sweep.errors import ConfigError
from sweep.objectives.prepared import fold_indices, prepare
from sweep.training import data
from sweep.training.fit import fit
from sweep.training.models import net_for
from sweep.training.population import FitSet, Member, PopulationEpoch, fit_population, train_population
from sweep.workers.batch import run_batch
from sweep.workers.run import run as run_study

ROOT = Path(__file__).resolve().parents[2]
CFG = TrainConfig(epochs=2, lr=0.1, device="cpu")


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, ...]:
    ds = data.load("mnist-sample")
    x, y = data.to_device(ds.train, torch.device("cpu"))
    fit_i, val_i = data.holdout_split(ds.train.y, 1000, 0)
    return x[fit_i], y[fit_i], x[val_i], y[val_i]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-5) -> bool:
    return all(torch.allclose(p, q, atol=atol, rtol=0) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("seeds", [[0, 1, 2], [5, 5, 5]], ids=["own-orders", "shared-order"])
@pytest.mark.parametrize("decay_bias", [True, False])
def test_member_equals_single_training(split, seeds: list[int], decay_bias: bool) -> None:
    cfg = CFG.model_copy(update={"decay_bias": decay_bias, "batch_size": 50})
    lams = [1e-5, 1e-3, 3e-2]
    members = fit_population(*split, lams=lams, seeds=seeds, cfg=cfg, return_models=True)
    n_val = int(split[3].shape[0])
    for lam, seed, member in zip(lams, seeds, members, strict=True):
        alone = fit(*split, lam=lam, cfg=cfg, seed=seed)
        assert member.state == "complete" and member.model is not None and alone.model is not None
        assert _same_weights(member.model, alone.model)
        for mine, ref in zip(member.history, alone.history, strict=True):
            assert mine.epoch == ref.epoch
            assert mine.train_loss == pytest.approx(ref.train_loss, abs=1e-5)
            assert mine.val_loss == pytest.approx(ref.val_loss, abs=1e-5)
            assert abs(mine.val_acc - ref.val_acc) <= 1 / n_val  # an argmax tie may flip one example
            assert abs(mine.train_acc - ref.train_acc) <= 2 / len(split[1])


@pytest.fixture(scope="module")
def folds() -> tuple[torch.Tensor, torch.Tensor, list[FitSet]]:
    """Three CV folds of 1,500 sample digits (fit sets of 1,000 rows of one shared tensor)."""
    ds = data.load("mnist-sample")
    x, y = data.to_device(ds.train, torch.device("cpu"))
    x, y = x[:1500], y[:1500]
    sets = [FitSet(x, y, x[v], y[v], rows=f) for f, v in fold_indices(y, folds=3, seed=0)]
    return x, y, sets


def _check_member(member, x_fit, y_fit, x_val, y_val, cfg: TrainConfig) -> None:
    alone = fit(x_fit, y_fit, x_val, y_val, lam=member.lam, cfg=cfg, seed=member.seed)
    assert member.state == "complete" and member.model is not None and alone.model is not None
    assert _same_weights(member.model, alone.model)
    for mine, ref in zip(member.history, alone.history, strict=True):
        assert mine.train_loss == pytest.approx(ref.train_loss, abs=1e-5)
        assert mine.val_loss == pytest.approx(ref.val_loss, abs=1e-5)
        assert abs(mine.val_acc - ref.val_acc) <= 1 / len(y_val)  # an argmax tie may flip one example


@pytest.mark.parametrize("repeats", [1, 2], ids=["cv", "cv-repeats"])
def test_cv_members_equal_single_training(folds, repeats: int) -> None:
    # (lambda, fold, seed) members of 2 lambdas x 3 folds x `repeats` seeds: 3*repeats groups of 2 members.
    x, y, sets = folds
    cfg = CFG.model_copy(update={"batch_size": 50})
    members = [Member(lam, 7 + j, fit_set=f) for lam in (1e-5, 3e-2) for f in range(3) for j in range(repeats)]
    results = train_population(sets, members, cfg=cfg, return_models=True)
    for m in results:
        fs = sets[m.fit_set]
        assert fs.rows is not None
        _check_member(m, x[fs.rows], y[fs.rows], fs.x_val, fs.y_val, cfg)


def test_repeat_members_equal_single_training(split) -> None:
    # Holdout with repeats: members (lambda, seed) on one fit set; seeds 0 and 1 are two groups of 3 lambdas.
    cfg = CFG.model_copy(update={"batch_size": 50})
    members = [Member(lam, seed) for seed in (0, 1) for lam in (1e-5, 1e-3, 3e-2)]
    for m in train_population([FitSet(*split)], members, cfg=cfg, return_models=True):
        _check_member(m, *split, cfg)


def test_unequal_groups_and_fit_set_sizes_still_equal_single_training(folds) -> None:
    # Fold 0 has 3 members, fold 1 one: the grouped matmul falls back to one member per row;
    # a fourth fit set of another size trains as a second cohort in the same epochs.
    x, y, sets = folds
    odd = FitSet(x, y, sets[0].x_val, sets[0].y_val, rows=torch.arange(700))
    cfg = CFG.model_copy(update={"batch_size": 64})
    members = [Member(1e-4, 0, 0), Member(1e-2, 0, 0), Member(1e-3, 3, 0), Member(1e-3, 0, 1), Member(1e-3, 0, 3)]
    seen: list[list[int]] = []
    results = train_population([*sets, odd], members, cfg=cfg, return_models=True,
                               on_epoch=lambda ep: seen.append(sorted(ep.stats)))
    assert seen == [[0, 1, 2, 3, 4]] * 2
    for m in results:
        fs = [*sets, odd][m.fit_set]
        assert fs.rows is not None
        _check_member(m, x[fs.rows], y[fs.rows], fs.x_val, fs.y_val, cfg)


def test_different_lambdas_give_different_weights(split) -> None:
    a, b = fit_population(*split, lams=[1e-5, 3e-2], seeds=[0, 0], cfg=CFG, return_models=True)
    assert a.model is not None and b.model is not None
    assert not _same_weights(a.model, b.model)


def test_pruned_member_leaves_and_others_are_unchanged(split) -> None:
    lams, seeds = [1e-4, 1e-3, 1e-2], [0, 1, 2]
    cfg = CFG.model_copy(update={"epochs": 3})
    full = fit_population(*split, lams=lams, seeds=seeds, cfg=cfg, return_models=True)
    seen: list[list[int]] = []

    def prune_middle(ep: PopulationEpoch) -> list[int]:
        seen.append(sorted(ep.stats))
        return [1] if ep.epoch == 1 else []

    cut = fit_population(*split, lams=lams, seeds=seeds, cfg=cfg, on_epoch=prune_middle, return_models=True)
    assert seen == [[0, 1, 2], [0, 2], [0, 2]]  # the pruned member is no longer trained
    assert cut[1].state == "pruned" and len(cut[1].history) == 1 and cut[1].model is None
    for i in (0, 2):
        assert cut[i].state == "complete"
        assert _same_weights(cut[i].model, full[i].model, atol=1e-6)  # type: ignore[arg-type]
        assert [h.val_acc for h in cut[i].history] == [h.val_acc for h in full[i].history]


def test_nan_fails_one_member_only(split) -> None:
    seen: list[dict[int, str]] = []
    members = fit_population(*split, lams=[1e-4, 1e4], seeds=[0, 0], cfg=CFG,
                             on_epoch=lambda ep: seen.append(ep.failed), return_models=True)
    assert members[1].state == "failed"
    assert members[1].fail_reason == (
        "training loss became nan in epoch 1 at lambda 1e+04; lower train.lr or the lambda range")
    assert seen[0] == {1: members[1].fail_reason} and seen[1] == {}
    alone = fit(*split, lam=1e-4, cfg=CFG, seed=0)
    assert members[0].state == "complete" and _same_weights(members[0].model, alone.model)  # type: ignore[arg-type]


@pytest.mark.parametrize("update", [{"penalty": "l1"}, {"momentum": 0.9}, {"optimizer": "adam"}, {"schedule": "cosine"},
                                    {"clip_grad_norm": 1.0}], ids=["l1", "momentum", "adam", "cosine", "clip"])
def test_other_penalties_and_momentum_are_refused(split, update: dict) -> None:
    with pytest.raises(ConfigError, match="supports train.penalty = 'l2' with plain SGD at a constant rate only"):
        fit_population(*split, lams=[1e-3], seeds=[0], cfg=CFG.model_copy(update=update))


MLP = net_for(ModelConfig(arch="mlp", hidden=[48, 24]), in_shape=(784,), classes=10)


@pytest.mark.parametrize("seeds", [[0, 0, 0], [1, 2, 1]], ids=["shared-order", "own-orders"])
@pytest.mark.parametrize("decay_bias", [True, False])
def test_mlp_member_equals_training_it_alone(split, seeds: list[int], decay_bias: bool) -> None:
    """The hand-written population of a two-hidden-layer mlp: each member is fit.fit's autograd + torch.optim run."""
    cfg = CFG.model_copy(update={"decay_bias": decay_bias, "batch_size": 50, "lr": 0.05})
    x, y, xv, yv = (t[:600] for t in split)
    lams = [1e-5, 3e-3, 1e-1]
    members = fit_population(x, y, xv, yv, lams=lams, seeds=seeds, cfg=cfg, net=MLP, return_models=True)
    for lam, seed, member in zip(lams, seeds, members, strict=True):
        alone = fit(x, y, xv, yv, lam=lam, cfg=cfg, seed=seed, net=MLP)
        assert member.state == "complete" and member.model is not None and alone.model is not None
        assert type(member.model) is type(alone.model)  # the user's network, not a stand-in
        assert _same_weights(member.model, alone.model, atol=1e-5)
        assert [h.train_loss for h in member.history] == pytest.approx([h.train_loss for h in alone.history], rel=1e-5)
        assert [h.val_loss for h in member.history] == pytest.approx([h.val_loss for h in alone.history], rel=1e-5)
    # lambda matters: the strongest decay shrank its member's weights below the weakest's
    norm = [sum(float(p.norm()) for p in m.model.parameters()) for m in members]  # type: ignore[union-attr]
    assert norm[2] < 0.99 * norm[0]


def test_mlp_cv_members_equal_training_each_fold_alone(folds) -> None:
    # 2 lambdas x 3 folds: three groups of two members through the grouped (bmm) first layer.
    _, _, sets = folds
    cfg = CFG.model_copy(update={"lr": 0.05})
    members = [Member(lam, 7, fit_set=f) for lam in (1e-5, 3e-2) for f in range(3)]
    results = train_population(sets, members, cfg=cfg, net=MLP, return_models=True)
    for member, r in zip(members, results, strict=True):
        s = sets[member.fit_set]
        assert s.rows is not None
        alone = fit(s.x[s.rows], s.y[s.rows], s.x_val, s.y_val, lam=member.lam, cfg=cfg, seed=member.seed, net=MLP)
        assert r.model is not None and alone.model is not None
        assert _same_weights(r.model, alone.model, atol=1e-5)
        assert r.history[-1].val_loss == pytest.approx(alone.history[-1].val_loss, rel=1e-5)


def test_batch_study_reaches_n_trials_with_attrs(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="pop", train={"epochs": 1}, search={"sampler": "tpe", "n_trials": 6, "batch": 4})
    s = run_study(cfg, sqlite_url)
    trials = s.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6  # 4 then 2: never asks past n_trials
    assert [t.user_attrs["population"] for t in trials] == [4, 4, 4, 4, 2, 2]
    expected = {"history", "val_acc", "val_loss", "train_acc", "train_loss", "val_se", "n_val", "seconds",
                "device", "seed", "population", "val_correct", "predicted_classes"}
    for t in trials:
        assert set(t.user_attrs) == expected
        assert t.value == t.user_attrs["val_acc"] == t.intermediate_values[1]
        assert t.user_attrs["n_val"] == 1000 and t.user_attrs["device"] == "cpu"
    assert len({t.params[PARAM] for t in trials}) == 6
    assert s.user_attrs["refit"]["min"]["test_acc"] > 0.5


def test_batch_value_equals_single_trial(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="pop", search={"n_trials": 2, "batch": 2})
    s = run_study(cfg, sqlite_url, refit_after=False)
    prep = prepare(cfg)
    for t in s.get_trials():
        alone = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=t.params[PARAM], cfg=cfg.train, seed=0)
        assert t.value is not None and abs(t.value - alone.final.val_acc) <= 1 / 1000


def test_batch_prunes_a_member(tiny_cfg, sqlite_url: str) -> None:
    cfg = tiny_cfg(name="prune", train={"epochs": 3},
                   search={"pruner": "median", "lambda_high": 5.0, "n_trials": 7, "batch": 2})
    s = study.create_or_load(cfg, sqlite_url)
    dist: dict[str, BaseDistribution] = {PARAM: FloatDistribution(cfg.search.lambda_low, cfg.search.lambda_high, log=True)}
    for _ in range(5):  # the median pruner's startup trials, all at 0.5
        s.add_trial(optuna.trial.create_trial(params={PARAM: 1e-3}, distributions=dist, value=0.5,
                                              intermediate_values={1: 0.5, 2: 0.5, 3: 0.5}))
    s.enqueue_trial({PARAM: 1e-5})  # learns: about 0.8 after epoch 1
    s.enqueue_trial({PARAM: 3.0})  # decays every weight away: 0.1
    finished = run_batch(s, cfg, prepare(cfg), size=2)
    assert [t.state for t in finished] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert len(finished[0].user_attrs["history"]) == 3
    assert len(finished[1].user_attrs["history"]) == 1 and list(finished[1].intermediate_values) == [1]


def test_penalty_other_than_l2_trains_as_a_torch_func_population(tiny_cfg, sqlite_url: str) -> None:
    # SimpleNet's hand-written population is l2 only; other penalties go to sweep.training.functional.
    cfg = tiny_cfg(name="l1", train={"epochs": 1, "penalty": "l1"}, search={"n_trials": 2, "batch": 2})
    s = run_study(cfg, sqlite_url, refit_after=False)
    assert [t.state for t in s.get_trials()] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["population"] for t in s.get_trials()] == [2, 2]


CHILD = """
import sys, time
import sweep.training.trainers
from sweep import config
from sweep.workers.run import run as run_study

real = sweep.training.trainers.train_population

def stuck(*args, on_epoch, **kwargs):
    def hook(ep):
        out = on_epoch(ep)
        open(sys.argv[2], "w").close()  # tell the test that the batch is mid-training
        time.sleep(600)
        return out
    return real(*args, on_epoch=hook, **kwargs)

sweep.training.trainers.train_population = stuck  # what sweep.objectives.batched calls
run_study(config.from_json(open(sys.argv[1]).read()), sys.argv[3])
"""


def test_killed_batch_fails_and_is_retried(tiny_cfg, sqlite_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "3")
    cfg = tiny_cfg(name="killed", search={"n_trials": 3, "batch": 3})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    marker = tmp_path / "mid-batch"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), str(marker),
                              sqlite_url], env=env)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, "the batch run ended before it was killed"
            assert time.monotonic() < deadline, "the batch run never reached its first epoch"
            time.sleep(0.2)
        time.sleep(4)  # longer than the grace period: only fresh heartbeats keep the trials alive
        s = study.create_or_load(cfg, sqlite_url)
        optuna.storages.fail_stale_trials(s)
        assert [t.state for t in s.get_trials()] == [TrialState.RUNNING] * 3
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lams = sorted(t.params[PARAM] for t in s.get_trials())
    time.sleep(4.5)  # past the grace period since the last heartbeat
    resumed = run_study(cfg, sqlite_url, refit_after=False)
    trials = resumed.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL] * 3
    assert [t.state for t in trials[3:]] == [TrialState.COMPLETE] * 3
    assert sorted(t.params[PARAM] for t in trials[3:]) == lams  # the same lambdas, retried
    assert sorted(t.system_attrs["failed_trial"] for t in trials[3:]) == [0, 1, 2]


def test_grid_study_in_batches_uses_up_the_grid(tiny_cfg, sqlite_url: str) -> None:
    # GridSampler stops the study from inside tell when its grid is used up; a batch must not trip on it.
    from sweep.config import PARAM

    cfg = tiny_cfg(name="grid-batch", train={"epochs": 1}, search={"sampler": "grid", "n_trials": 4, "batch": 4})
    study = run_study(cfg, sqlite_url)
    done = sorted(t.params[PARAM] for t in study.trials if t.state.name == "COMPLETE")
    assert done == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2]) and len(study.trials) == 4
    assert "refit" in study.user_attrs


def test_a_wide_cpu_population_trains_in_lanes_that_equal_one_population(folds, monkeypatch) -> None:
    """Lanes (population.cpu_lanes): two threads, one core each, each training part of every group. Members equal
    fit.fit and the one-thread population's members, pruning and failures still find their members, and the
    caller's thread count is left as it was."""
    from sweep.training import population

    _, _, sets = folds
    cfg = CFG.model_copy(update={"lr": 0.1})
    members = [Member(lam, 7, fit_set=f) for lam in (1e-5, 1e-3, 3e-3, 1e-2) for f in range(3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 0)
        assert population.cpu_lanes(members, torch.device("cpu")) == 1
        one = train_population(sets, members, cfg=cfg, return_models=True)
        monkeypatch.setattr(population, "CPU_LANE_MEMBERS", 4)
        assert population.cpu_lanes(members, torch.device("cpu")) == 2
        assert population.cpu_lanes(members, torch.device("meta")) == 1  # a GPU: one population
        own_seeds = [Member(1e-3, seed) for seed in range(12)]  # no batch shared: one population (faster)
        assert population.cpu_lanes(own_seeds, torch.device("cpu")) == 1
        # Each lane holds every group (fold, seed), two lambdas of each: one wide matmul per group still.
        parts = population._split([(i, m.lam, m.seed, m.fit_set) for i, m in enumerate(members)], 2)
        assert [sorted({(s[3], s[2]) for s in p}) for p in parts] == [[(0, 7), (1, 7), (2, 7)]] * 2
        assert [len(p) for p in parts] == [6, 6]
        own = population._split([(i, 1e-3, i, 0) for i in range(5)], 2)  # own seeds: groups of one, dealt whole
        assert [[s[0] for s in p] for p in own] == [[0, 2, 4], [1, 3]]
        seen: list[set[int]] = []

        def prune_first(ep: PopulationEpoch) -> list[int]:
            seen.append(set(ep.stats))
            return [0] if ep.epoch == 1 else []

        laned = train_population(sets, members, cfg=cfg, return_models=True)
        pruned = train_population(sets, members, cfg=cfg, on_epoch=prune_first)
        assert torch.get_num_threads() == 2  # the lanes' single-thread setting stayed in their own threads
    finally:
        torch.set_num_threads(threads)
    for member, a, b in zip(members, one, laned, strict=True):
        assert a.model is not None and b.model is not None
        assert _same_weights(a.model, b.model)
        assert [h.val_loss for h in a.history] == pytest.approx([h.val_loss for h in b.history], abs=1e-5)
        s = sets[member.fit_set]
        assert s.rows is not None
        if member.fit_set == 0:  # one fold against fit.fit is enough: the rest equal `one`, checked above
            _check_member(b, s.x[s.rows], s.y[s.rows], s.x_val, s.y_val, cfg)
    assert seen == [set(range(12)), set(range(1, 12))]
    assert [r.state for r in pruned] == ["pruned"] + ["complete"] * 11 and len(pruned[0].history) == 1
