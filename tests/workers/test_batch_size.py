"""search.batch = "auto": N workers on one GPU share its memory instead of each claiming the same half."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sweep import config
from sweep.errors import ConfigError
from sweep.workers import batch as batches
from tests.conftest import make_raw


@pytest.mark.parametrize(("device", "workers", "want"), [("cuda", None, 64), ("cuda", "4", 16), ("cuda", "200", 1),
                                                          ("cpu", "4", 64)])
def test_auto_size_is_divided_by_the_workers_on_the_gpu(monkeypatch: pytest.MonkeyPatch, device: str,
                                                       workers: str | None, want: int) -> None:
    cfg = config.validate(make_raw(search={"batch": "auto"}), source="t")
    prep = SimpleNamespace(device=torch.device(device), net=None, x_train=torch.zeros(100, 784), y_train=torch.zeros(100))
    monkeypatch.setattr(batches.trainers, "unsupported", lambda net, cfg: None)
    monkeypatch.setattr(batches.trainers, "auto_size", lambda device, net, cfg, *, x, y: 64)  # half the free memory
    if workers is None:
        monkeypatch.delenv("SWEEP_WORKERS_PER_DEVICE", raising=False)
    else:
        monkeypatch.setenv("SWEEP_WORKERS_PER_DEVICE", workers)
    assert batches.resolve_size(cfg, prep) == want  # type: ignore[arg-type]


def test_a_wrong_worker_count_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_WORKERS_PER_DEVICE", "two")
    with pytest.raises(ConfigError, match=r"^SWEEP_WORKERS_PER_DEVICE must be a whole number of workers, 1 or more, "
                                          r"got 'two'; set it to the number"):
        batches.workers_per_device()


def test_the_callers_worker_count_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # sweep run --workers N knows how many local workers share the device (tests/workers/test_run.py).
    cfg = config.validate(make_raw(search={"batch": "auto"}), source="t")
    prep = SimpleNamespace(device=torch.device("cuda"), net=None, x_train=torch.zeros(100, 784),
                           y_train=torch.zeros(100))
    monkeypatch.setattr(batches.trainers, "unsupported", lambda net, cfg: None)
    monkeypatch.setattr(batches.trainers, "auto_size", lambda device, net, cfg, *, x, y: 64)
    monkeypatch.setenv("SWEEP_WORKERS_PER_DEVICE", "2")
    assert batches.resolve_size(cfg, prep, per_device=4) == 16  # type: ignore[arg-type]
    assert batches.resolve_size(cfg, prep) == 32  # type: ignore[arg-type]
