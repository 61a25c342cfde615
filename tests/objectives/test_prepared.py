"""prepare (sweep.objectives.prepared): data of any layout of one image reach the built-in networks flat."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweep.objectives.prepared import prepare
from sweep.training import data
from sweep.workers.run import run as run_study

MODULE = '''
from sweep.training import data

def _part(p, n, shape):
    return p.x[:n].float().div(255).reshape(n, *shape), p.y[:n]

def images():  # (N, 1, 28, 28), as torchvision's ToTensor gives
    ds = data.load("mnist-sample")
    return (*_part(ds.train, 600, (1, 28, 28)), *_part(ds.test, 200, (1, 28, 28)))

def flat():
    ds = data.load("mnist-sample")
    return (*_part(ds.train, 600, (784,)), *_part(ds.test, 200, (784,)))
'''


@pytest.mark.parametrize("arch", ["simplenet", "mlp"])
def test_images_shaped_1x28x28_train_the_builtins_as_flat_data_does(tiny_cfg, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, arch: str) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"prep_images_{arch}.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    values = []
    for factory in ("images", "flat"):
        cfg = tiny_cfg(name=f"{arch}-{factory}", data={"factory": f"prep_images_{arch}:{factory}", "holdout": 200},
                       model={"arch": arch, "hidden": 32}, train={"epochs": 1}, search={"n_trials": 2, "batch": 2})
        prep = prepare(cfg)
        assert prep.x_fit.shape == (400, 784) and prep.x_test.shape == (200, 784) and prep.net.in_shape == (784,)
        study = run_study(cfg, f"sqlite:///{tmp_path / f'{arch}-{factory}.db'}", refit_after=False)
        values.append([t.value for t in study.get_trials()])
    assert None not in values[0] and values[0] == values[1]


@pytest.mark.parametrize(("keys", "message"), [
    (["train.class_weights=[1.0, 2.0, 3.0]"], "train.class_weights has 3 weights, the data has 2 classes"),
    (["search.metric='auroc'", "data.factory='examples.digits:load'", "model.hidden=[8]"],
     "search.metric = 'auroc' scores two classes, the data has 10"),
])
def test_weights_and_auroc_must_fit_the_classes(monkeypatch: pytest.MonkeyPatch, keys: list[str], message: str) -> None:
    from sweep import config
    from sweep.errors import ConfigError

    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root))
    cfg = config.load(root / "studies" / "examples-seven-vs-rest.toml", keys)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg)


SUBSET_WAYS = {
    "holdout": {"search": {"n_trials": 2}},
    "population": {"search": {"n_trials": 3, "batch": 3}},
    "cv": {"search": {"n_trials": 2, "validation": "cv", "folds": 3}},
    "workers": {"search": {"n_trials": 3}},
}


@pytest.mark.parametrize("way", list(SUBSET_WAYS))
def test_data_subset_is_the_study_s_training_set_for_every_way_of_running(tiny_cfg, tmp_path: Path, way: str) -> None:
    # 40% of the sample's 4,000 training digits: trials, folds and the refit see 1,600; the test set stays whole.
    cfg = tiny_cfg(name=f"subset-{way}", data={"subset": 0.4, "holdout": 400}, train={"epochs": 1}, **SUBSET_WAYS[way])
    prep = prepare(cfg)
    assert prep.x_train.shape[0] == 1600 and prep.x_fit.shape[0] == 1200 and prep.x_val.shape[0] == 400
    assert prep.x_test.shape[0] == 1000
    whole = data.load("mnist-sample").train.y.bincount(minlength=10)
    assert (prep.y_train.cpu().bincount(minlength=10) - 0.4 * whole).abs().max() <= 1  # stratified
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", workers=2 if way == "workers" else 1)
    trials = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == cfg.search.n_trials
    assert {t.user_attrs["n_val"] for t in trials} == {1600 if way == "cv" else 400}
    (refit,) = study.user_attrs["refit"].values()
    assert refit["n_train"] == 1600
