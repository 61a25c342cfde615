"""sweep.storages.store and url: state per storage object, the host's warning filters left alone, SWEEP_STORAGE_FILE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.errors import StorageError
from sweep.storages.store import open_storage
from sweep.storages.url import resolve_url
from tests.procs import ROOT, env


def test_importing_the_store_leaves_the_programs_warning_filters_alone() -> None:
    # numpy, scipy and torch add narrow filters of their own (by message) as their modules load; ours would be
    # by category: Optuna's ExperimentalWarning, which main set for the whole program at import.
    code = ("import warnings, optuna\nbefore = list(warnings.filters)\n"
            "import sweep.storages.store, sweep.study, sweep.workers.loop\n"
            "new = [f for f in warnings.filters if f not in before]\n"
            "assert not [f for f in new if f[0] == 'ignore' and f[1] is None and f[3] is None], new\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr


def test_opening_a_store_warns_nothing_and_changes_no_filter(tmp_path: Path) -> None:
    # Every warning an error: Optuna's ExperimentalWarning for heartbeats would raise if it escaped.
    code = ("import warnings, optuna\nwarnings.simplefilter('error')\n"
            "from sweep.storages.store import open_storage\n"
            f"s = open_storage('sqlite:///{tmp_path / 's.db'}')\n"
            "s.get_all_studies()\n"
            "assert not [f for f in warnings.filters if f[2] is optuna.exceptions.ExperimentalWarning]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr


def test_each_storage_has_its_own_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "7")
    a = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "9")
    b = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    # Before: one class attribute, replaced at every open, so the first store took the second's budget and state.
    assert a.outage is not b.outage and (a.outage.budget, b.outage.budget) == (7, 9)  # type: ignore[attr-defined]


def test_the_url_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    url = tmp_path / "url"
    url.write_text(f"  sqlite:///{tmp_path / 'f.db'}\n\n")
    monkeypatch.setenv("SWEEP_STORAGE_FILE", str(url))
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'f.db'}"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"
    monkeypatch.setenv("SWEEP_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"  # the variable holding the URL itself wins


def test_a_missing_or_empty_url_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("SWEEP_STORAGE_FILE", str(tmp_path / "nope"))
    with pytest.raises(StorageError, match=r"^SWEEP_STORAGE_FILE names '.*nope', which cannot be read \(No such file "
                                           r"or directory\); expected a file holding the storage URL; fix the path"):
        resolve_url(None)
    (tmp_path / "empty").write_text(" \n")
    monkeypatch.setenv("SWEEP_STORAGE_FILE", str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: SWEEP_STORAGE_FILE names {str(tmp_path / 'empty')!r}, which is empty; expected "
                             "the storage URL in it (e.g. postgresql://user:password@host:5432/db); write it there or "
                             "set SWEEP_STORAGE\n")
