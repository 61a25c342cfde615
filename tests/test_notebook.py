"""notebooks/lambda_analysis.ipynb runs to the end against a study made here (nbclient, a real ipykernel)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sweep import config
from sweep.selection import best_record
from sweep.workers.run import run as run_study
from tests.conftest import make_raw

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "lambda_analysis.ipynb"


def test_lambda_analysis_notebook_runs(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.validate(make_raw(name="nb", search={"sampler": "grid", "n_trials": 3, "pruner": "none"},
                          train={"epochs": 1}), source="test")
    run_study(cfg, sqlite_url)
    # The kernel is a child process: it reads these from the environment it inherits.
    monkeypatch.setenv("SWEEP_STORAGE", sqlite_url)
    monkeypatch.setenv("SWEEP_STUDY", "nb")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    plots = [o for o in outputs if o.output_type == "display_data" and "application/vnd.plotly.v1+json" in o.data]
    assert len(plots) == 4
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    best = best_record("nb", storage=sqlite_url, rule="min")
    assert f"lambda_min = {best.lam:.4g}" in text
    # Same lambda, same seed, same data as the stored refit: the notebook's model reproduces its test accuracy.
    assert best.test_acc is not None
    assert f"test accuracy {best.test_acc:.4f}" in text
