"""The shipped examples a user copies (examples/, studies/examples-digits.toml, studies/fashion-mnist-cnn.toml), tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.training.data import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "search.n_trials=2", "--set", "search.batch=2", "--set", "search.pruner='none'"]


def run_and_best(study: str, name: str, store: str, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["run", str(ROOT / "studies" / study), "--storage", store, *TINY, *extra])
    assert result.exit_code == 0, result.output
    best = CliRunner().invoke(main, ["best", name, "--storage", store, "--format", "json"])
    assert best.exit_code == 0, best.output
    return json.loads(best.stdout)


def test_digits_example_with_its_own_model_and_data(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # as PYTHONPATH=. from the repository root
    record = run_and_best("examples-digits.toml", "examples-digits", sqlite_url, "--set", "train.epochs=3")
    assert record["test_acc"] > 0.5  # ten classes: chance is 0.1


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_cnn_study(sqlite_url: str, tmp_path: Path) -> None:
    record = run_and_best("fashion-mnist-cnn.toml", "fashion-mnist-cnn", sqlite_url, "--set", "train.epochs=1",
                          "--set", f"data.data_dir='{tmp_path}'", "--set", "train.device='cpu'")
    assert record["test_acc"] > 0.5  # ten classes: chance is 0.1
