"""benchmarks/transfer.py --quick: reference curves, studies and every rule's gap, in a real process, adding up."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep.selection.transfer import REGISTRY, Run, transfer

ROOT = Path(__file__).resolve().parents[2]


def test_quick_transfer_benchmark_prints_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "transfer.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--quick", "--json", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    t = json.loads(out.read_text())
    assert (t["n_full"], t["n_small"]) == (3000, 300)
    assert list(t["curves"]) == ["small", "full size", "batch size x4", "lr x0.5"]
    grid = np.asarray(t["grid"])
    assert grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e-2) and len(grid) == 4
    for c in t["curves"].values():
        assert len(c["acc"]) == 4 and all(0.1 < a <= 1 for a in c["acc"]) and c["seconds"] > 0 and c["flops"] > 0
    rows = {(r["target"], r["approach"]): r for r in t["rows"]}
    targets = {"full size": Run(3000, 2, 64, 0.1), "batch size x4": Run(300, 2, 256, 0.1), "lr x0.5": Run(300, 2, 64, 0.05)}
    assert len(rows) == 1 + 3 * len(REGISTRY)
    reuse = rows["full size", "small study + reuse"]["lambdas"]
    assert len(reuse) == 2 and all(1e-5 <= lam <= 1e-2 for lam in reuse)  # the small studies' own picks
    for (target, approach), r in rows.items():
        best = max(t["curves"][target]["acc"])
        if approach == "full-size study":
            lams = r["lambdas"]
        else:  # each rule's lambda is the small study's pick carried from the small run to the target run
            lams = [transfer(lam, Run(300, 2, 64, 0.1), targets[target])[approach.split(" + ")[1]] for lam in reuse]
            assert r["lambdas"] == pytest.approx(lams)
        for lam, gap in zip(lams, r["gaps"], strict=True):  # the gap reads the reference curve, in points
            got = np.interp(math.log10(lam), np.log10(grid), t["curves"][target]["acc"])
            assert gap == pytest.approx(100 * (best - got)) and gap >= -1e-9
    assert t["default"] in REGISTRY
    assert t["matmul_gflops"] == max(t["matmul_gflops_measured"]) > 0 and len(t["load_start"]) == 3
    for line in ("reference curves", "full-size study", "small study + tau-epoch", "load average", "default rule"):
        assert line in proc.stdout
