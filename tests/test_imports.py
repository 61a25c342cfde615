"""The architecture holds: import-linter's contracts in pyproject.toml are kept, and they can fail.

Contracts: training never imports optuna; reports never import torch (nor the training
side); no import cycles; the layers of docs/architecture.md. The static check is
backed by a runtime one: importing the report side does not load torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(package_root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the ``sweep`` package found under ``package_root`` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=package_root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_are_kept() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_the_layers_are_at_most_eight_and_the_top_level_is_small() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    assert len(layers) <= 8, layers
    top = sorted(p.name for p in (ROOT / "sweep").glob("*.py"))
    assert len(top) <= 6, top


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("training/model.py", "import optuna", "training never imports optuna"),
    ("training/data.py", "from sweep import study", "training never imports optuna"),
    ("report/figures.py", "import torch", "reports never import torch"),
    ("config/study_file.py", "from sweep import cli", "no import cycles"),
    ("selection/rules.py", "from sweep.workers import loop", "layers"),
    ("storages/store.py", "from sweep import study", "layers"),
    ("objectives/scheme.py", "from sweep.workers import run", "layers"),
])
def test_a_violation_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "sweep", tmp_path / "sweep", ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    target = tmp_path / "sweep" / module
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def test_importing_the_report_side_does_not_load_torch() -> None:
    code = ("import sys, sweep.report, sweep.report.tables, sweep.selection.rules; "
            "bad = sorted(m for m in ('torch', 'torchvision') if m in sys.modules); print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_training_side_does_not_load_optuna() -> None:
    code = ("import sys, sweep.training.fit, sweep.training.population, sweep.training.data; "
            "bad = [m for m in ('optuna',) if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
