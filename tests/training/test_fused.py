"""The fused C tail of the population step: the same arithmetic as the eager step, and a safe fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sweep.config import ModelConfig
from sweep.training import fused
from sweep.training.model import init_simplenet
from sweep.training.models import net_for
from sweep.training.stacks import Cohort, FitSet, step

pytestmark = pytest.mark.skipif(not fused.available(), reason=f"fused tail unavailable: {fused.why_not()}")


def _cohorts(monkeypatch, spec, sets, *, lr=0.1, decay_bias=True, hidden=32):
    """Two cohorts of the same members: the first takes the eager step, the second the fused one."""
    out = []
    for on in ("0", "1"):
        monkeypatch.setenv("SWEEP_FUSED", on)  # read when the cohort is built
        c = Cohort(sets, spec, build=lambda s: init_simplenet(hidden, s), lr=lr, decay_bias=decay_bias,
                   device=torch.device("cpu"))
        assert (c.fused is not None) == (on == "1")
        out.append(c)
    return out


def _run_both(a: Cohort, b: Cohort, steps: int, batch: int, last: int | None = None):
    """``steps`` steps of cohort ``a`` (eager) and ``b`` (fused) on the same batches; the losses and hits of each."""
    n = a.n
    gen = torch.Generator()
    out = []
    for c in (a, b):
        gen.manual_seed(1)
        # Buffers as the epoch loop slices them: (steps, K, batch, 1), a step's slot (K, b, 1) strided over K.
        losses = torch.full((steps, len(c), batch, 1), -1.0)
        hits = torch.zeros(steps, len(c), batch, 1, dtype=torch.bool)
        with torch.no_grad():
            for i in range(steps):
                b = last if (last is not None and i == steps - 1) else batch
                idx = torch.stack([torch.randperm(n, generator=gen)[:b] for _ in c.groups])
                step(c, *c.batch(idx), 0.1, losses[i, :, :b], hits[i, :, :b])
        out.append((losses, hits))
    return out


def _assert_same(a: Cohort, b: Cohort, runs) -> None:
    (la, ha), (lb, hb) = runs
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    assert torch.equal(ha, hb)
    for wa, wb in zip(a.ws + a.bs + [a.scale], b.ws + b.bs + [b.scale], strict=True):
        torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-6)


@pytest.fixture
def sets():
    torch.manual_seed(0)
    x = torch.rand(300, 784) * (torch.rand(300, 784) > 0.8)  # MNIST-like: mostly zero pixels
    y = torch.randint(0, 10, (300,))
    rows = [torch.arange(0, 200), torch.arange(100, 300)]
    return [FitSet(x, y), FitSet(x, y, rows=rows[0]), FitSet(x, y, rows=rows[1])]


@pytest.mark.parametrize("decay_bias", [True, False])
def test_one_group_equals_the_eager_step(monkeypatch, sets, decay_bias: bool) -> None:
    """A holdout population (every member shares the batch), and a last batch shorter than the rest."""
    spec = [(i, lam, 0, 0) for i, lam in enumerate([1e-5, 1e-4, 1e-3, 1e-2, 3e-2])]
    a, b = _cohorts(monkeypatch, spec, sets, decay_bias=decay_bias)
    _assert_same(a, b, _run_both(a, b, steps=12, batch=16, last=7))


def test_groups_of_several_members_equal_the_eager_step(monkeypatch, sets) -> None:
    """CV: two folds (fit sets 1 and 2) x two seeds, three lambdas each: 4 groups of 3 in one bmm."""
    triples = [(lam, seed, fs) for fs in (1, 2) for seed in (0, 1) for lam in (1e-4, 1e-3, 1e-2)]
    spec = [(i, lam, seed, fs) for i, (lam, seed, fs) in enumerate(triples)]
    a, b = _cohorts(monkeypatch, spec, sets)
    assert a.m == 3 and len(a.groups) == 4
    _assert_same(a, b, _run_both(a, b, steps=10, batch=16))


def test_unequal_groups_equal_the_eager_step(monkeypatch, sets) -> None:
    """Groups of 2 and 1 (after a failure): each member gathers its group's batch, m = 1."""
    a, b = _cohorts(monkeypatch, [(0, 1e-3, 0, 0), (1, 1e-2, 0, 0), (2, 1e-3, 5, 0)], sets)
    assert a.m == 1 and len(a.groups) == 2
    _assert_same(a, b, _run_both(a, b, steps=10, batch=16))


def test_a_diverging_setup_decays_the_weights_directly(monkeypatch, sets) -> None:
    """1 - lr * lambda under 1e-3: the weights are decayed directly (no scale), in both steps alike."""
    a, b = _cohorts(monkeypatch, [(0, 9.995, 0, 0), (1, 1e-3, 0, 0)], sets)
    assert not a.scaled
    _assert_same(a, b, _run_both(a, b, steps=5, batch=16))


def test_it_applies_to_two_layers_on_the_cpu_in_float32_only(monkeypatch) -> None:
    monkeypatch.setenv("SWEEP_FUSED", "1")
    ws, bs = [torch.zeros(2, 8, 4), torch.zeros(2, 3, 8)], [torch.zeros(2, 1, 8), torch.zeros(2, 1, 3)]
    ones = torch.ones(2, 1, 1)
    def prepare(ws, bs, scale=ones):
        return fused.prepare(ws, bs, scale=scale, shrink_w=ones, shrink_b=ones, scaled=True)
    assert prepare(ws, bs) is not None
    assert prepare([*ws, torch.zeros(2, 3, 3)], [*bs, torch.zeros(2, 1, 3)]) is None  # a deeper mlp: eager
    assert prepare([w.double() for w in ws], [b.double() for b in bs]) is None
    assert prepare(ws, bs, scale=torch.ones(2, 1, 2)[:, :, :1]) is None  # a view: its address would be wrong
    monkeypatch.setenv("SWEEP_FUSED", "0")
    assert prepare(ws, bs) is None
    assert fused.why_not() == "switched off with SWEEP_FUSED=0"


def test_a_pruned_member_leaves_and_the_fused_step_follows(monkeypatch, sets) -> None:
    """keep_rows replaces the stacked tensors; the fused view is prepared again and still equals the eager step."""
    a, b = _cohorts(monkeypatch, [(i, lam, 0, 0) for i, lam in enumerate([1e-4, 1e-3, 1e-2])], sets)
    _run_both(a, b, steps=3, batch=16)
    for c in (a, b):
        c.keep_rows([0, 2])
    assert b.fused is not None and b.fused.k == 2
    _assert_same(a, b, _run_both(a, b, steps=5, batch=16))


def test_a_deeper_mlp_trains_eagerly_and_still_learns(monkeypatch, sets) -> None:
    """An mlp of two hidden layers is not fused; its step is the eager one whatever SWEEP_FUSED says."""
    monkeypatch.setenv("SWEEP_FUSED", "1")
    net = net_for(ModelConfig(arch="mlp", hidden=[16, 8]), in_shape=(784,), classes=10)
    c = Cohort(sets, [(0, 1e-3, 0, 0)], build=net.build, lr=0.1, decay_bias=True, device=torch.device("cpu"))
    assert len(c.ws) == 3 and c.fused is None
    before = c.ws[2].clone()
    losses, hits = torch.zeros(1, 16, 1), torch.zeros(1, 16, 1, dtype=torch.bool)
    with torch.no_grad():
        step(c, *c.batch(torch.arange(16).view(1, 16)), 0.1, losses, hits)
    assert not torch.equal(before, c.ws[2]) and bool((losses > 0).all())


def test_without_a_compiler_the_step_is_eager(tmp_path) -> None:
    """No C compiler (CC points at nothing, PATH empty): the library is not built, the reason is given, and a
    population still trains (through the eager step), in a fresh process with an empty cache."""
    code = (
        "import torch\n"
        "from sweep.training import fused\n"
        "from sweep.training.population import fit_population\n"
        "from sweep.config import TrainConfig\n"
        "assert not fused.available(), 'expected no compiler'\n"
        "print(fused.why_not())\n"
        "x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))\n"
        "r = fit_population(x, y, x, y, lams=[1e-3, 1e-2], seeds=[0, 0], cfg=TrainConfig(epochs=1, batch_size=16))\n"
        "print(r[0].state, r[1].state)\n"
    )
    env = {"CC": str(tmp_path / "no-such-cc"), "PATH": str(tmp_path), "SWEEP_CACHE_DIR": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "could not" in done.stdout or "did not run" in done.stdout or "no C compiler" in done.stdout
    assert done.stdout.strip().endswith("complete complete")
    assert not list((tmp_path / "cache").glob("*.so"))


def test_compiles_once_into_the_cache_folder(tmp_path) -> None:
    """A fresh cache folder gets one library, named by its key, and no temporary files are left beside it."""
    code = "from sweep.training import fused; assert fused.available(), fused.why_not()"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "SWEEP_CACHE_DIR": str(tmp_path)}, timeout=120)
        assert done.returncode == 0, done.stderr
    assert [p.name.startswith("fused_tail-") and p.suffix == ".so" for p in tmp_path.iterdir()] == [True]



def test_tensors_of_the_wrong_shape_are_refused_before_any_address_is_taken(monkeypatch) -> None:
    monkeypatch.setenv("SWEEP_FUSED", "1")
    ws, bs = [torch.zeros(2, 8, 4), torch.zeros(2, 3, 8)], [torch.zeros(2, 1, 8), torch.zeros(2, 1, 3)]
    ones = torch.ones(2, 1, 1)
    with pytest.raises(ValueError, match=r"fused tail: first layer bias has shape \(2, 1, 7\), expected 16 values "):
        fused.prepare(ws, [torch.zeros(2, 1, 7), bs[1]], scale=ones, shrink_w=ones, shrink_b=ones, scaled=True)
    with pytest.raises(ValueError, match=r"fused tail: scale has shape \(3, 1, 1\), expected 2 values"):
        fused.prepare(ws, bs, scale=torch.ones(3, 1, 1), shrink_w=ones, shrink_b=ones, scaled=True)
    with pytest.raises(ValueError, match=r"first layer weight has shape \(2, 9\), expected \(2, 8\)"):
        fused.prepare([torch.zeros(2, 9, 4), ws[1]], bs, scale=ones, shrink_w=ones, shrink_b=ones, scaled=True)


def _one_step(c: Cohort, yb: torch.Tensor, **slots: torch.Tensor) -> None:
    xb, _ = c.batch(torch.arange(16).view(1, 16))
    losses = slots.get("losses", torch.zeros(len(c), 16, 1))
    hits = slots.get("hits", torch.zeros(len(c), 16, 1, dtype=torch.bool))
    with torch.no_grad():
        step(c, xb, yb, 0.1, losses, hits)


def test_a_label_out_of_range_raises_and_writes_nothing(monkeypatch, sets) -> None:
    """A label indexes the logits in C: 10 (or -1) with 10 classes is an error, found before any weight moves."""
    _, c = _cohorts(monkeypatch, [(0, 1e-3, 0, 0), (1, 1e-2, 0, 0)], sets)
    before = [t.clone() for t in c.ws + c.bs + [c.scale]]
    for bad in (10, -1, 1 << 40):
        yb = torch.randint(0, 10, (1, 16))
        yb[0, 5] = bad
        with pytest.raises(ValueError, match=rf"fused tail: label {bad} is out of range, expected 0\.\.9"):
            _one_step(c, yb)
    for old, now in zip(before, c.ws + c.bs + [c.scale], strict=True):
        assert torch.equal(old, now)


def test_labels_and_slots_of_the_wrong_kind_are_refused(monkeypatch, sets) -> None:
    _, c = _cohorts(monkeypatch, [(0, 1e-3, 0, 0), (1, 1e-2, 0, 0)], sets)
    yb = torch.randint(0, 10, (1, 16))
    with pytest.raises(ValueError, match="fused tail: expected int64 labels and float32 activations on the CPU, "
                                         "got torch.int32"):
        _one_step(c, yb.int())
    with pytest.raises(ValueError, match=r"fused tail: losses must be torch.float32 \(K, B, 1\) slots .* got "
                                         r"torch.float32 of shape \(1, 16, 1\)"):
        _one_step(c, yb, losses=torch.zeros(1, 16, 1))  # one slot for two members: C would write past it
    with pytest.raises(ValueError, match="fused tail: hits must be torch.bool"):
        _one_step(c, yb, hits=torch.zeros(2, 16, 1))
