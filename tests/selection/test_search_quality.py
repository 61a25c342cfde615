"""benchmarks/search_quality.py at tiny settings: every method runs end to end, in a real process, and its rows add up."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"holdout": "holdout, min", "cv": "CV, min", "evidence": "evidence, max", "marglik": "marglik, one run"}


@pytest.mark.slow
def test_tiny_run_has_a_row_per_method_with_gaps_and_wall_times(tmp_path: Path) -> None:
    pytest.importorskip("laplace")  # the evidence rows need the optional extra
    out = tmp_path / "quality.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "--settings", "seed",
                           "--replicates", "1", "--trials", "3", "--ref-lambdas", "4", "--ref-seeds", "1",
                           "--json", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seed = json.loads(out.read_text())["seed"]
    assert seed["epochs"] == 5 and seed["n_trials"] == 3
    assert sorted(seed["methods"]) == sorted(LABELS)
    for method, (o,) in seed["methods"].items():
        assert 1e-5 <= o["lam"] <= 1e-2, method  # marglik's lambda is clamped into the range too
        # The gap is below the reference optimum by construction, and a 5-epoch network is not 100 points off.
        assert 0 <= o["gap"] < 100 * seed["optimum_acc"], method
        assert math.isfinite(o["seconds"]) and o["seconds"] > 0, method
    rows = {m: re.search(rf"^\| {re.escape(label)} \| (.+) \|$", proc.stdout, re.M) for m, label in LABELS.items()}
    assert all(rows.values()), proc.stdout
    cells = {m: [c.strip() for c in row.group(1).split("|")] for m, row in rows.items() if row}
    assert cells["cv"][-1] == "1.00x"  # the wall-time column is against the CV study
    for m, c in cells.items():
        assert float(c[0]) == pytest.approx(seed["methods"][m][0]["gap"], abs=0.006)
        assert c[2] in ("0/1", "1/1") and float(c[-1].rstrip("x")) > 0
    assert re.search(r"load average \d+\.\d\d \d+\.\d\d \d+\.\d\d", proc.stdout)
