"""Studies on a data factory's Datasets read batch by batch (data.stream): augmentation, CV, the refit, evidence."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from examples.augmented import mnist_augmented_tiny
from sweep import config
from sweep.cli import main
from sweep.objectives import batched
from sweep.objectives.prepared import prepare
from sweep.training import stream
from sweep.training.fit import fit
from sweep.workers.run import run as run_study
from tests.test_examples import figures

ROOT = Path(__file__).resolve().parents[1]
AUGMENTED_TINY = ["search.n_trials=2", "search.pruner='none'", "train.epochs=2", "data.holdout=200",
                  "data.factory='examples.augmented:mnist_augmented_tiny'"]


def augmented(url: str, *extra: str) -> optuna.Study:
    return run_study(config.load(ROOT / "studies" / "examples-augmented.toml", [*AUGMENTED_TINY, *extra]), url,
                     refit_after=False)


def test_an_augmenting_dataset_is_streamed_and_its_study_stores_the_same_figures_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    cfg = config.load(ROOT / "studies" / "examples-augmented.toml", AUGMENTED_TINY)
    prep = prepare(cfg)
    assert stream.is_streamed(prep.x_fit) and stream.is_streamed(prep.x_test)  # RandomAffine draws: read per batch
    # validation reads the factory's train_eval Dataset: the same digits, without the augmentation
    plain = mnist_augmented_tiny()[1]
    first = [plain[i][0].reshape(-1) for i in range(len(plain))]
    val = prep.x_val[torch.arange(3)]
    assert any(torch.equal(val[0], f) for f in first) and not torch.equal(prep.x_val[torch.arange(3)], prep.x_fit[:3])
    cv = cfg.model_copy(update={"search": cfg.search.model_copy(update={"validation": "cv", "folds": 2})})
    fold_val = batched.layout(cv, prep).sets[0].x_val
    assert fold_val is not None and all(any(torch.equal(row, f) for f in first) for row in fold_val[torch.arange(2)])
    first = augmented(f"sqlite:///{tmp_path / 'a.db'}", "search.batch=2")
    again = augmented(f"sqlite:///{tmp_path / 'b.db'}", "search.batch=2")
    assert [t.state for t in first.get_trials()] == [TrialState.COMPLETE] * 2
    assert figures(first) == figures(again)
    one_at_a_time = augmented(f"sqlite:///{tmp_path / 'c.db'}", "search.batch=1")
    assert figures(one_at_a_time) == figures(augmented(f"sqlite:///{tmp_path / 'd.db'}", "search.batch=1"))
    # a member of the population read the batches its trial reads alone: the same augmentations, the same score
    for t in first.get_trials():
        alone = fit(prep.x_fit, prep.y_fit, prep.x_val, prep.y_val, lam=t.params["lambda"], cfg=cfg.train, seed=0,
                    net=prep.net)
        assert t.value is not None and abs(t.value - alone.final.val_acc) <= 2 / len(prep.y_val)


def test_a_cv_study_with_its_refit_stores_the_same_figures_streamed_as_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dataset without augmentation read batch by batch gives the very examples loading gives: every figure of a
    CV study (folds as indices into the Dataset, a population of 2) and its refit's test score are equal."""
    monkeypatch.syspath_prepend(str(ROOT))
    records = {}
    for policy in ("never", "always"):
        url = f"sqlite:///{tmp_path / policy}.db"
        sets = ["data.factory='examples.networks:mnist_datasets_tiny'", "data.holdout=200", "search.validation='cv'",
                "search.folds=2", "search.n_trials=2", "search.batch=2", "search.pruner='none'", "train.epochs=3",
                "train.batch_size=16", f"data.stream='{policy}'"]
        args = ["run", str(ROOT / "studies" / "examples-augmented.toml"), "--storage", url]
        args += [a for s in sets for a in ("--set", s)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        best = CliRunner().invoke(main, ["best", "examples-augmented", "--storage", url, "--format", "json"])
        records[policy] = (figures(optuna.load_study(study_name="examples-augmented", storage=url)),
                           {k: v for k, v in json.loads(best.stdout).items() if "second" not in k and k != "storage"})
    assert records["never"][1]["test_acc"] > 0.3
    assert records["always"] == records["never"]


def test_the_evidence_reads_a_streamed_dataset_as_a_loaded_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("laplace")
    monkeypatch.syspath_prepend(str(ROOT))
    values = {}
    for policy in ("never", "always"):
        cfg = config.load(ROOT / "studies" / "examples-augmented.toml", [
            "data.factory='examples.networks:mnist_datasets_tiny'", "data.holdout=200", "model.arch='mlp'",
            "model.hidden=[32]", "search.validation='evidence'", "search.n_trials=1", "search.batch=1",
            "search.pruner='none'", "train.epochs=1", f"data.stream='{policy}'"])
        study = run_study(cfg, f"sqlite:///{tmp_path / policy}.db", refit_after=False)
        (trial,) = study.get_trials()
        assert trial.state == TrialState.COMPLETE
        values[policy] = trial.value
    assert values["always"] == pytest.approx(values["never"], rel=1e-6)
