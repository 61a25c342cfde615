"""Property: any study file either loads as a valid config or raises the project's own ConfigError."""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep import config
from sweep.errors import ConfigError

KEYS = {
    "data": ["dataset", "data_dir", "holdout", "split_seed", "bogus"],
    "model": ["hidden", "layers"],
    "train": ["lr", "batch_size", "epochs", "penalty", "l1_ratio", "decay_bias", "device", "seed", "momentum",
              "optimizer", "nesterov", "betas", "eps", "schedule", "step_size", "gamma", "warmup_epochs",
              "clip_grad_norm"],
    "search": ["sampler", "n_trials", "lambda_low", "lambda_high", "pruner", "seed", "validation", "folds", "repeats",
               "rule", "batch"],
}
values = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(string.printable, max_size=12), st.sampled_from(["tpe", "gp", "grid", "cv", "auto", "cpu", "cuda", "l2", "1se"]),
    st.lists(st.integers(0, 3), max_size=3),
)
GOOD = {
    "dataset": st.sampled_from(["mnist", "fashion-mnist", "mnist-sample"]), "holdout": st.floats(0.05, 0.5),
    "split_seed": st.integers(0, 9), "hidden": st.integers(1, 512), "lr": st.floats(1e-4, 1.0),
    "batch_size": st.integers(1, 512), "epochs": st.integers(1, 200), "penalty": st.sampled_from(["l2", "l1", "l2-loss"]),
    "l1_ratio": st.floats(0, 1), "decay_bias": st.booleans(), "device": st.sampled_from(["auto", "cpu", "cuda:1"]),
    "seed": st.integers(0, 99), "sampler": st.sampled_from(["tpe", "gp", "random", "qmc", "grid"]),
    "n_trials": st.integers(1, 100), "lambda_low": st.floats(1e-8, 1e-4), "lambda_high": st.floats(1e-3, 1.0),
    "pruner": st.sampled_from(["none", "median", "hyperband"]),
    "optimizer": st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "rprop"]), "nesterov": st.booleans(),
    "betas": st.lists(st.floats(0, 0.999), min_size=2, max_size=2), "eps": st.floats(1e-10, 1e-3),
    "schedule": st.sampled_from(["constant", "cosine", "step", "warmup-cosine"]), "step_size": st.integers(1, 5),
    "gamma": st.floats(0.1, 1.0), "warmup_epochs": st.floats(0.1, 3), "clip_grad_norm": st.floats(0.1, 10),
    "momentum": st.floats(0, 0.99),
}


def value_for(key: str) -> st.SearchStrategy:
    """Mostly a valid value for the key (so valid configs do occur), sometimes anything."""
    good = GOOD.get(key)
    return values if good is None else st.integers(0, 9).flatmap(lambda i: good if i < 8 else values)


def section(keys: list[str]) -> st.SearchStrategy:
    known = [k for k in keys if k in GOOD]
    return st.one_of(
        st.fixed_dictionaries({}, optional={k: value_for(k) for k in known}),
        st.dictionaries(st.sampled_from(keys), values, max_size=4),
    )


sections = st.fixed_dictionaries({}, optional={s: section(k) for s, k in KEYS.items()})
top = st.fixed_dictionaries(
    {"name": st.one_of(st.text(string.ascii_letters, min_size=1, max_size=8), st.text(max_size=3), st.integers())},
    optional={"description": values, "extra": values},
)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") \
            .replace("\t", "\\t").replace("\x0b", "\\u000b").replace("\x0c", "\\f") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=top, body=sections, garbage=st.text(max_size=20), corrupt=st.booleans())
def test_loader_returns_config_or_config_error(tmp_path: Path, head: dict, body: dict, garbage: str, corrupt: bool) -> None:
    lines = [f"{k} = {toml_value(v)}" for k, v in head.items()]
    for section, items in body.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in items.items()]
    text = "\n".join(lines) + ("\n" + garbage if corrupt else "")
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = config.load(path)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert isinstance(cfg, config.StudyConfig)
        assert 0 < cfg.search.lambda_low < cfg.search.lambda_high < float("inf") and cfg.search.n_trials >= 1
        assert 0 < cfg.train.lr < float("inf")
