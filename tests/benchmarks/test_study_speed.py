"""benchmarks/study_speed.py --quick: the three ways run end to end, in a real process, and the table adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_speed.py"), "--quick", "--json", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads(out.read_text())
    rows = {(r["study"], r["way"][:3]): r for r in table["rows"]}
    assert sorted(rows) == sorted((s, w) for s in ("quickstart", "cv-4x3") for w in ("(a)", "(b)", "(c)"))
    assert table["matmul_gflops"] > 0
    # The floor's rate is the best of the measurements before and after each of the six rows.
    assert len(table["matmul_gflops_measured"]) == 7 and table["matmul_gflops"] == max(table["matmul_gflops_measured"])
    assert all(r["near_gflops"] <= table["matmul_gflops"] for r in table["rows"])
    for r in table["rows"]:
        assert r["wall_s"] > 0 and r["floor_s"] > 0 and r["model_epochs"] > 0
        assert r["floor_s"] == pytest.approx(r["flops"] / (table["matmul_gflops"] * 1e9))
    # No pruner in the CV study: every way trains 4 lambdas x 3 folds x 1 epoch, and all find a lambda.
    assert [rows["cv-4x3", w]["model_epochs"] for w in ("(a)", "(b)", "(c)")] == [12, 12, 12]
    assert all(rows["cv-4x3", w]["best_lambda"] is not None for w in ("(a)", "(b)", "(c)"))
    for line in ("study", "(a) optuna+seed", "(b) sweep, 1 at a time", "(c) sweep, batch 4", "matmul rate"):
        assert line in proc.stdout


def test_first_layer_matmuls_prints_a_round_per_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "first_layer_matmuls.py"), "--k", "2", "--rounds", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(len(r) == 9 and all(float(v) > 0 for v in r) for r in rows)


@pytest.mark.parametrize("steps", [2, 4])
def test_blocked_first_layer_takes_the_same_steps_as_one_at_a_time(steps: int) -> None:
    """The blocked pair that first_layer_matmuls.py times computes what the population's steps compute."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import first_layer_matmuls as flm
    finally:
        sys.path.pop(0)
    gen = torch.Generator().manual_seed(0)
    x, g = torch.rand(64 * steps, 784, generator=gen), torch.randn(64 * steps, 256, generator=gen)
    w = torch.randn(784, 256, generator=gen)
    w_seq, w_blk = w.clone(), w.clone()
    seq, blk = flm.sequential(x, w_seq, g, 0.01), flm.blocked(x, w_blk, g, 0.01)
    # Later batches see the earlier updates: the products differ from the unchanged weights' ...
    assert not torch.allclose(seq[-1], x[-64:] @ w, atol=1e-2)
    # ... and the blocked form reproduces them, and the final weights, to float rounding.
    for a, b in zip(seq, blk, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(w_blk, w_seq, rtol=1e-5, atol=1e-4)


def test_repeat_runs_rounds_and_summarises_them(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_speed.py"), "--quick", "--ways", "b,c",
                           "--studies", "cv", "--repeat", "2", "--json", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads(out.read_text())
    assert [(r["way"][:3], r["repeat"]) for r in table["rows"]] == [("(b)", 1), ("(c)", 1), ("(b)", 2), ("(c)", 2)]
    assert len(table["matmul_gflops_measured"]) == 5  # before the first row and after each
    for m in table["summary"]:
        mine = [r["wall_s"] / r["floor_s"] for r in table["rows"] if r["way"] == m["way"]]
        assert m["rounds"] == 2 and m["min_x_floor"] == min(mine) and m["max_x_floor"] == max(mine)
        assert m["median_x_floor"] == pytest.approx(sum(mine) / 2)
    assert "over 2 rounds" in proc.stdout
    # Each row's b/this is against its own round's (b): exactly 1.0x on the (b) rows.
    b_rows = [line for line in proc.stdout.splitlines() if line.startswith("cv-4x3") and "(b)" in line]
    assert len(b_rows) == 2 and all(line.split()[-2] == "1.0x" for line in b_rows)


def test_repeat_below_one_is_refused() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_speed.py"), "--repeat", "0"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--repeat must be at least 1, got 0" in proc.stderr


def test_study_parts_adds_up_to_the_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_parts.py"), "--quick"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "quickstart (c) sweep, batch 2" in lines[0] and "16 model-epochs" in lines[0]
    parts = {line[:22].strip(): line[22:].split() for line in lines[2:-1]}
    assert list(parts) == ["training steps", "evaluation", "gathering batches", "rest of the epochs",
                           "outside the epochs", "total"]
    # --quick: 4 trials, 2 at a time, 4 epochs on 3,000 digits in batches of 64 = 47 steps a member's epoch.
    assert int(parts["training steps"][2]) % 47 == 0 and int(parts["training steps"][2]) > 0
    assert parts["training steps"][2] == parts["gathering batches"][2]
    assert sum(float(p[0]) for name, p in parts.items() if name != "total") == pytest.approx(
        float(parts["total"][0]), abs=0.3)  # each part is printed to 0.1 s
    assert lines[-1].startswith("floor ") and "the run is" in lines[-1]


@pytest.mark.parametrize(("script", "args", "line"), [
    ("study_speed.py", ["--ways", "d"], "--ways takes a comma-separated list of a, b and c, got 'd'"),
    ("study_speed.py", ["--studies", "quickstart,foo"], "--studies takes quickstart and/or cv, got 'foo'"),
    ("first_layer_matmuls.py", ["--k", "0"], "--k and --rounds must be at least 1, got --k 0 --rounds 5"),
])
def test_benchmark_flags_out_of_range_are_one_line(script: str, args: list[str], line: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and line in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr
