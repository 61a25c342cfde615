"""search.batch = "auto": a population only where it measured faster per model than one at a time (a fake timer)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sweep.config import TrainConfig
from sweep.training import data, population, trainers
from sweep.training.models import Net
from tests.training.test_networks import Rows, factory

K = 4  # the candidate size on a CPU, small so the (real) trainers the timings run are quick
CFG = TrainConfig(epochs=1, device="cpu")
CPU = torch.device("cpu")


class Clock:
    """A fake timer: each timed run (a start and a stop reading) takes the next of ``durations`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.durations, self.now, self.running, self.reads = list(durations), 0.0, False, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.running:
            self.now += self.durations.pop(0)
        self.running = not self.running
        return self.now


def never() -> float:
    raise AssertionError("timed again: the decision should have been remembered (or needed no timing)")


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainers, "_TIMINGS", {})
    monkeypatch.setattr(population, "CPU_AUTO_SIZE", K)


@pytest.fixture(scope="module")
def fit_set() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.to_device(data.load("mnist-sample").train, CPU)
    return x[:256], y[:256]


def dropout_net() -> Net:
    return factory("auto-dropout", lambda: nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10)))


# Each list: one at a time, population of K (all K members), alternated for trainers.AUTO_ROUNDS rounds.
@pytest.mark.parametrize(("durations", "want"), [
    ([1.0, 2.0, 1.0, 2.0], K),          # 0.5 s per model as a population against 1 s alone
    ([1.0, 8.0, 1.0, 8.0], 1),          # 2 s per model: slower, one at a time
    ([1.0, 4.0, 1.0, 4.0], 1),          # equal is not faster
    ([3.0, 2.0, 1.0, 6.0], K),          # the best round of each counts: 1 s alone, 0.5 s per model
    ([1.0, 6.0, 3.0, 5.0], 1),          # best 1 s alone, 1.25 s per model
])
def test_auto_keeps_a_population_only_where_it_measured_faster(fit_set, durations: list[float], want: int) -> None:
    x, y = fit_set
    clock = Clock(durations)
    assert trainers.auto_size(CPU, dropout_net(), CFG, x=x, y=y, timer=clock) == want
    assert clock.reads == 2 * 2 * trainers.AUTO_ROUNDS and not clock.durations  # every reading was used


def test_the_decision_is_remembered_per_network_and_device(fit_set) -> None:
    x, y = fit_set
    net = dropout_net()
    assert trainers.auto_size(CPU, net, CFG, x=x, y=y, timer=Clock([1.0, 2.0] * trainers.AUTO_ROUNDS)) == K
    assert trainers.auto_size(CPU, net, CFG, x=x, y=y, timer=never) == K
    other = factory("auto-other", lambda: nn.Sequential(nn.Linear(784, 10)))
    assert trainers.auto_size(CPU, other, CFG, x=x, y=y, timer=Clock([1.0, 8.0] * trainers.AUTO_ROUNDS)) == 1


def test_a_network_vmap_cannot_batch_is_one_at_a_time_without_timing(fit_set) -> None:
    x, y = fit_set
    x = x.float().reshape(-1, 1, 28, 28)
    assert trainers.auto_size(CPU, factory("auto-gru", Rows), CFG, x=x, y=y, timer=never) == 1


def test_the_hand_written_mlp_population_is_sized_by_its_rule_without_timing(fit_set) -> None:
    x, y = fit_set
    mlp = Net("mlp", (32,), (784,), 10)
    assert trainers.auto_size(CPU, mlp, CFG, x=x.float(), y=y, timer=never) == K


def test_measure_times_the_real_trainers(fit_set) -> None:
    x, y = fit_set
    timing = trainers.measure(dropout_net(), CFG, x.float(), y, 2)
    assert timing.k == 2
    assert 0 < timing.one < math.inf and 0 < timing.population < math.inf
