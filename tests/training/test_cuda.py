"""The CUDA paths against the CPU's: every trainer, the evidence, the refit, two workers on one GPU.

Marked ``cuda``: they run only with ``pytest --cuda`` on a GPU machine (scripts/device-check.sh) and
skip elsewhere, CI included. Without ``--cuda`` the suite hides the GPU (tests/conftest.py), which the
first test checks. Each case runs one small study twice, on the CPU and on the GPU, from the same seeds
(initialisation and data order are drawn on the CPU, so both see the same numbers): the trials' values
and the refit's test accuracy agree to float tolerance, summation orders differing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from sweep import config
from sweep.objectives.prepared import prepare
from sweep.training.fit import resolve_device
from sweep.workers import batch as batches
from sweep.workers.run import run
from tests.conftest import make_raw
from tests.procs import ROOT, env, sweep

ACC = 5e-3  # 5 of the 1,000 validation examples: a near-tie may fall the other way on another device


def test_the_suite_runs_on_the_cpu_unless_asked(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--cuda"):
        pytest.skip("--cuda given: the GPU is meant to be seen")
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    assert resolve_device("auto") == torch.device("cpu")


def _study(tmp_path: Path, device: str, **sections: Any) -> optuna.Study:
    raw = make_raw(**sections)
    raw["train"] = {**raw["train"], "device": device}
    raw["search"] = {**raw["search"], "n_trials": 4}
    cfg = config.validate(raw, source="test")
    return run(cfg, f"sqlite:///{tmp_path / f'{device}.db'}")


def _values(study: optuna.Study) -> list[float]:
    done = sorted((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    assert len(done) == 4, [t.state for t in study.get_trials()]
    return [float(t.value) for t in done]


def _test_accs(study: optuna.Study) -> list[float]:
    refit = study.user_attrs.get("refit", {})
    accs = [float(r["test_acc"]) for r in refit.values() if isinstance(r, dict) and "test_acc" in r]
    assert accs, refit
    return accs


CASES = {
    "single fit (SimpleNet, hand-written backward)": {"search": {"batch": 1}},
    "population (stacked MLP)": {"search": {"batch": 4}},
    "population (torch.func: momentum)": {"search": {"batch": 4}, "train": {"momentum": 0.9}},
    "single fit (autograd: momentum)": {"search": {"batch": 1}, "train": {"momentum": 0.9}},
    "population (torch.func: cnn)": {"search": {"batch": 2}, "model": {"arch": "cnn"}},
}


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_each_trainer_on_the_gpu_equals_the_cpu(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cuDNN's convolutions use TF32 by default on Ampere and later: 10 mantissa bits, not float32's tolerance.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    sections = CASES[case]
    cpu, gpu = (_study(tmp_path, d, name=f"t-{d}", **sections) for d in ("cpu", "cuda"))
    assert _values(gpu) == pytest.approx(_values(cpu), abs=ACC), case
    # The refit reuses the process's prepared data, already on the GPU, and is stored as the CPU's is.
    assert _test_accs(gpu) == pytest.approx(_test_accs(cpu), abs=ACC), case


@pytest.mark.cuda
@pytest.mark.slow
def test_the_evidence_on_the_gpu_equals_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("laplace", reason="the evidence needs laplace-torch (pip install lambda-sweep[evidence])")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    sections = {"search": {"batch": 1, "validation": "evidence"}}  # the evidence trains trial by trial
    cpu, gpu = (_study(tmp_path, d, name=f"e-{d}", **sections) for d in ("cpu", "cuda"))
    assert _values(gpu) == pytest.approx(_values(cpu), rel=1e-2)


@pytest.mark.cuda
def test_auto_batches_share_the_gpu_between_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.validate(make_raw(train={"device": "cuda"}, search={"batch": "auto", "n_trials": 10_000}), source="t")
    prep = prepare(cfg)
    monkeypatch.delenv("SWEEP_WORKERS_PER_DEVICE", raising=False)
    alone = batches.resolve_size(cfg, prep)
    monkeypatch.setenv("SWEEP_WORKERS_PER_DEVICE", "4")
    shared = batches.resolve_size(cfg, prep)
    assert alone > 1 and shared <= max(1, alone // 4 + 1), (alone, shared)


@pytest.mark.cuda
@pytest.mark.slow
def test_two_workers_on_one_gpu_with_auto_batches_finish_the_study(tmp_path: Path) -> None:
    path = tmp_path / "gpu.toml"
    path.write_text('name = "gpu"\n[data]\ndataset = "mnist-sample"\nholdout = 1000\n'
                    '[train]\nepochs = 2\nlr = 0.1\ndevice = "cuda"\n'
                    '[search]\nsampler = "random"\nn_trials = 12\npruner = "none"\nbatch = "auto"\n')
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    environ = {**env(url), "SWEEP_WORKERS_PER_DEVICE": "2"}
    done = subprocess.run(sweep("run", str(path), "--workers", "2"), env=environ, cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    states = [t.state for t in optuna.load_study(study_name="gpu", storage=url).get_trials()]
    assert states.count(TrialState.COMPLETE) == 12 and TrialState.RUNNING not in states, states
