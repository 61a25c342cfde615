"""The store is data, not code: a worker imports only the factories it was told to trust (``--trust``,
``SWEEP_TRUSTED_FACTORIES``); ``sweep run`` trusts its own study file's."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweep import config
from sweep.study import create_or_load as submit
from sweep.workers import run as run_mod
from sweep.workers.trust import check_trusted, trusted_prefixes
from tests.procs import ROOT, env, study_file, sweep, trials

LINE = ("study 'evil' names data.factory 'os:abort', which this worker does not trust (trusted: {}); "
        "if you trust that code, start the worker with --trust os or set SWEEP_TRUSTED_FACTORIES")


def _evil(tmp_path: Path, url: str) -> None:
    path = tmp_path / "evil.toml"
    path.write_text('name = "evil"\n[data]\nfactory = "os:abort"\n[search]\nn_trials = 1\n', encoding="utf-8")
    submit(config.load(path), url)  # anyone with write access to the store can do this


def _worker(*args: str, url: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(sweep("worker", *args), env={**env(url), **(extra or {})}, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_worker_never_calls_an_untrusted_factory(tmp_path: Path, sqlite_url: str) -> None:
    _evil(tmp_path, sqlite_url)
    submit(config.load(study_file(tmp_path, "good", n_trials=1)), sqlite_url)
    out = _worker("--poll", "0.2", url=sqlite_url)  # every study: the untrusted one is skipped, the good one runs
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line for line in out.stderr.splitlines() if "evil" in line] == [f"sweep: study 'evil' skipped: {LINE.format('none')}"]
    assert out.stdout.startswith("worker ran 1 trial; studies at target: good;")
    assert trials(sqlite_url, "evil") == []
    out = _worker("--study", "evil", "--trust", "mypkg", url=sqlite_url, extra={"SWEEP_TRUSTED_FACTORIES": "a.b,c:d"})
    assert (out.returncode, out.stderr) == (2, f"error: {LINE.format('mypkg, a.b, c, d')}\n")


def test_trust_prefixes() -> None:
    cfg = config.validate({"name": "x", "data": {"factory": "lab.data.mnist:load"}}, source="test")
    for ok in (["lab"], ["lab.data"], ["lab.data.mnist"], ["lab.data.mnist:load"], ["other", "lab."]):
        check_trusted(cfg, ok)
    for refused in ([], ["la"], ["lab.dat"], ["lab.data.mnist:loa"], ["labx"]):
        with pytest.raises(Exception, match="does not trust"):
            check_trusted(cfg, refused)
    assert check_trusted(config.validate({"name": "x"}, source="test"), []) is None  # built-in: no trust needed


def test_trust_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_TRUSTED_FACTORIES", "lab, tools:more")
    assert trusted_prefixes(("given",)) == ("given", "lab", "tools", "more")


def test_run_trusts_its_own_files_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class Popen:
        def __init__(self, cmd: list[str], **kwargs: Any) -> None:
            seen.append(cmd)

    monkeypatch.setattr(run_mod.subprocess, "Popen", Popen)
    run_mod.spawn_workers(f"sqlite:///{tmp_path / 's.db'}", "own", 1, log_dir=str(tmp_path),
                          trust=("own_factories:data", "own_factories:model"))
    assert seen[0][-4:] == ["--trust", "own_factories:data", "--trust", "own_factories:model"]


def test_a_study_with_no_factory_needs_no_trust(sqlite_url: str, tiny_cfg: Any) -> None:
    submit(tiny_cfg(train={"epochs": 1}, search={"n_trials": 1}), sqlite_url)
    from sweep.workers.loop import work

    assert work(sqlite_url, study_name="t", refit=False).finished == ["t"]
    assert len(optuna.load_study(study_name="t", storage=sqlite_url).trials) == 1
