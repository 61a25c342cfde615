"""Shared fixtures: small study configs on the shipped mnist-sample, and one fixture per storage backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sweep import config

os.environ.setdefault("SWEEP_STORAGE", "sqlite:///should-not-be-used-by-tests.db")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cuda", action="store_true", default=False,
                     help="let the suite see the GPU (device 'auto' may then pick it) and run the tests marked cuda")


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs on the CPU unless asked: on a GPU machine, device = "auto" would otherwise move every
    # test (and every worker process they start, which inherits this) onto the GPU. Set before anything
    # initialises CUDA (torch reads it then), so "auto" means the CPU here.
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; runs only with --cuda (scripts/device-check.sh)")
    if not config.getoption("--cuda"):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--cuda"):
        import torch

        if torch.cuda.is_available():
            return
        reason = "--cuda given, but this machine has no CUDA GPU"
    else:
        reason = "a GPU test: run with --cuda on a GPU machine (scripts/device-check.sh)"
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def make_raw(**sections: dict[str, Any]) -> dict[str, Any]:
    """A raw study mapping for a fast study: mnist-sample, 2 epochs, 3 trials, no pruning."""
    raw: dict[str, Any] = {
        "name": "t",
        "data": {"dataset": "mnist-sample", "holdout": 1000},
        "train": {"epochs": 2, "lr": 0.1, "device": "cpu"},
        "search": {"sampler": "random", "n_trials": 3, "pruner": "none"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return raw


@pytest.fixture
def tiny_cfg() -> Callable[..., config.StudyConfig]:
    """Factory: ``tiny_cfg(name="x", train={"epochs": 1})`` gives a validated fast config."""

    def build(**sections: Any) -> config.StudyConfig:
        return config.validate(make_raw(**sections), source="test")

    return build


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


def postgres_url() -> str | None:
    return os.environ.get("SWEEP_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One run per storage backend (optuna's StorageSupplier idea); PostgreSQL needs SWEEP_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sweeps.db'}"
        return
    yield from fresh_postgres_database(tmp_path, prefix="sweep_test")


def fresh_postgres_database(tmp_path: Path, *, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database for one test (its URL), dropped afterwards; skips without a server."""
    url = postgres_url()
    if url is None:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    db = f"{prefix}_{abs(hash(str(tmp_path))) % 10**8}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    yield str(sqlalchemy.engine.make_url(url).set(database=db).render_as_string(hide_password=False))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    engine.dispose()


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: write TOML text to a study file and return its path."""

    def write(text: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
