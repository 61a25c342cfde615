from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner

import sweep
from sweep.cli import main
from sweep.storages.store import open_storage

TINY = """
name = "{name}"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = 2
lr = 0.1
device = "cpu"
[search]
sampler = "tpe"
n_trials = 3
pruner = "none"
"""


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A study run once through the CLI, shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.toml").write_text(TINY.format(name="tiny"))
    url = f"sqlite:///{folder / 'sweeps.db'}"
    result = invoke("run", str(folder / "tiny.toml"), "--storage", url)
    assert result.exit_code == 0, result.output
    return url, folder


def test_run_prints_the_choice(finished: tuple[str, Path]) -> None:
    url, _ = finished
    out = invoke("best", "tiny", "--storage", url, "--format", "json")
    rec = json.loads(out.stdout)
    assert 1e-5 <= rec["lambda"] <= 1e-2
    assert rec["study"] == "tiny" and rec["rule"] == "min" and rec["storage"] == url
    assert 0.5 < rec["val_acc"] <= 1 and 0.5 < rec["test_acc"] <= 1
    assert float(invoke("best", "tiny", "--storage", url).stdout) == rec["lambda"]
    env = dict(line.split("=", 1) for line in invoke("best", "tiny", "--storage", url, "--format", "env").stdout.split())
    assert float(env["SWEEP_LAMBDA"]) == rec["lambda"] and env["SWEEP_RULE"] == "min"
    assert sweep.best_lambda("tiny", storage=url) == rec["lambda"]


def test_best_names_every_rule_and_the_plausible_range_in_json_and_env(finished: tuple[str, Path]) -> None:
    url, _ = finished
    rec = json.loads(invoke("best", "tiny", "--storage", url, "--format", "json").stdout)
    assert rec["plausible_low"] <= rec["lambda_min"] <= rec["plausible_high"]
    assert rec["lambda_1se_paired"] >= rec["lambda_min"] and rec["lambda_1se"] >= rec["lambda_min"]
    assert rec["smooth_low"] <= rec["lambda_smooth"] <= rec["smooth_high"]
    env = dict(line.split("=", 1) for line in invoke("best", "tiny", "--storage", url, "--format", "env").stdout.split())
    for key in ("lambda_min", "lambda_1se", "lambda_1se_paired", "lambda_smooth", "plausible_low", "plausible_high"):
        assert float(env[f"SWEEP_{key.upper()}"]) == rec[key]
    smooth = json.loads(invoke("best", "tiny", "--storage", url, "--rule", "smooth", "--format", "json").stdout)
    assert (smooth["rule"], smooth["lambda"], smooth["trial"]) == ("smooth", rec["lambda_smooth"], None)
    assert sweep.best_lambda("tiny", storage=url, rule="1se-paired") == rec["lambda_1se_paired"]


def test_refit_another_rule_stores_its_test_accuracy(finished: tuple[str, Path]) -> None:
    url, _ = finished
    assert json.loads(invoke("best", "tiny", "--storage", url, "--rule", "smooth", "--format", "json").stdout)["test_acc"] is None
    out = invoke("refit", "tiny", "--rule", "smooth", "--storage", url)
    assert out.exit_code == 0 and out.stdout.startswith("best lambda ") and "(smoothed curve, rule smooth)" in out.stdout
    rec = json.loads(invoke("best", "tiny", "--storage", url, "--rule", "smooth", "--format", "json").stdout)
    assert 0.5 < rec["test_acc"] <= 1 and f"test accuracy {rec['test_acc']:.4f}" in out.stdout
    refits = __import__("optuna").load_study(study_name="tiny", storage=url).user_attrs["refit"]
    assert set(refits) == {"min", "smooth"} and refits["smooth"]["lambda"] == rec["lambda"]
    bad = CliRunner().invoke(main, ["refit", "tiny", "--rule", "max", "--storage", url])
    assert bad.exit_code == 2 and "'max' is not one of 'min', '1se', '1se-paired', 'smooth'" in bad.stderr


def test_run_output_line(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text(TINY.format(name="one").replace("n_trials = 3", "n_trials = 1"))
    result = invoke("run", str(tmp_path / "one.toml"), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert result.exit_code == 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("best lambda ") and "(trial 0, rule min): validation accuracy 0." in last
    assert "test accuracy 0." in last


def test_ls_and_show(finished: tuple[str, Path]) -> None:
    url, _ = finished
    ls = invoke("ls", "--storage", url).stdout.splitlines()
    assert ls[0].split()[:5] == ["study", "complete", "running", "pruned", "failed"]
    assert ls[1].split()[:4] == ["tiny", "3", "0", "0"]
    show = invoke("show", "tiny", "--storage", url).stdout.splitlines()
    assert len(show) == 4 and [row.split()[1] for row in show[1:]] == ["complete"] * 3


def test_ls_and_show_as_json_and_csv_carry_the_same_rows(finished: tuple[str, Path]) -> None:
    import csv
    import io

    url, _ = finished
    studies = json.loads(invoke("ls", "--storage", url, "--format", "json").stdout)
    assert [(r["study"], r["complete"], r["running"], r["pruned"], r["failed"]) for r in studies] == [("tiny", 3, 0, 0, 0)]
    best = json.loads(invoke("best", "tiny", "--storage", url, "--format", "json").stdout)
    assert (studies[0]["best_lambda"], studies[0]["best_val"]) == (best["lambda"], best["val_acc"])
    trials = json.loads(invoke("show", "tiny", "--storage", url, "--format", "json").stdout)
    assert [t["number"] for t in trials] == [0, 1, 2] and {t["state"] for t in trials} == {"complete"}
    rows = list(csv.DictReader(io.StringIO(invoke("show", "tiny", "--storage", url, "--format", "csv").stdout)))
    assert [float(r["lambda"]) for r in rows] == [t["lambda"] for t in trials]
    assert list(rows[0]) == list(trials[0])


def test_optuna_cli_agrees_on_the_best_trial(finished: tuple[str, Path]) -> None:
    url, _ = finished
    ours = json.loads(invoke("best", "tiny", "--storage", url, "--format", "json").stdout)
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(optuna_cli), "best-trial", "--study-name", "tiny", "--storage", url, "-f", "json"],
                         capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    assert theirs["params"]["lambda"] == pytest.approx(ours["lambda"])
    assert theirs["number"] == ours["trial"] and theirs["value"] == {"val_acc": pytest.approx(ours["val_acc"])}


def counts(url: str) -> tuple[int, int]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        studies = conn.execute(sqlalchemy.text("select count(*) from studies")).scalar_one()
        trials = conn.execute(sqlalchemy.text("select count(*) from trials")).scalar_one()
    engine.dispose()
    return studies, trials


def test_missing_data_files_leave_the_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text('name = "f"\n[data]\ndataset = "fashion-mnist"\n')
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_storage(url).engine.dispose()  # the empty schema (read-only commands never create it)
    env = {"SWEEP_FASHION_MNIST_DIR": str(tmp_path / "none"), "SWEEP_DATA_DIR": str(tmp_path / "data")}
    result = invoke("run", str(path), "--storage", url, env=env)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: fashion-mnist: no IDX files in {tmp_path}/data/FashionMNIST/raw nor in {tmp_path}/none; "
        f"run 'apt-get install dataset-fashion-mnist' or put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte in {tmp_path}/data/FashionMNIST/raw\n"
    )
    assert counts(url) == (0, 0)


def test_unreachable_storage_masks_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A refused connection may be a server restarting: waited for within SWEEP_STORE_OUTAGE, then one error line;
    # the password is in neither line.
    monkeypatch.setenv("SWEEP_STORE_OUTAGE", "1")
    path = tmp_path / "t.toml"
    path.write_text(TINY.format(name="t"))
    result = invoke("run", str(path), "--storage", "postgresql://sweep:hunter2@127.0.0.1:9/sweep")
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines)) == (1, 2), lines
    assert lines[0].startswith("sweep: store unavailable: connection failed: ") and "Connection refused" in lines[0]
    assert lines[1].startswith("error: the study store has been unavailable for 1 s (SWEEP_STORE_OUTAGE = 1): ")
    assert "hunter2" not in result.output and "hunter2" not in result.stderr
    # A bad host name is a typo, not an outage: one line at once, the password masked.
    result = invoke("run", str(path), "--storage", "postgresql://sweep:hunter2@db.invalid:5432/sweep")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot open storage postgresql://sweep:***@db.invalid:5432/sweep: ")
    assert result.stderr.endswith("; check the URL, the server and the file\n") and result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr


def test_unknown_study(finished: tuple[str, Path]) -> None:
    url, _ = finished
    for cmd in ("best", "show"):
        result = invoke(cmd, "nope", "--storage", url)
        assert (result.exit_code, result.stderr) == (
            1, f"error: no study named 'nope' in {url} (studies there: tiny); check the name with 'sweep ls' or pass --storage\n")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--debug", "best", "x", "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 1 and type(result.exception).__name__ == "StoreNotFoundError"


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sweep")
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_storage(url).engine.dispose()
    out = subprocess.run([str(exe), "best", "x"], capture_output=True, text=True, env={**os.environ, "SWEEP_STORAGE": url})
    assert out.returncode == 1 and out.stderr.startswith(f"error: no study named 'x' in {url}")


def test_ls_shows_running_trials(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="busy", storage=open_storage(url), direction="maximize")
    study.ask()
    study.ask()
    rows = json.loads(invoke("ls", "--storage", url, "--format", "json").stdout)
    assert [(r["study"], r["complete"], r["running"]) for r in rows] == [("busy", 0, 2)]
    table = invoke("ls", "--storage", url).stdout.splitlines()
    assert table[1].split()[:3] == ["busy", "0", "2"]
