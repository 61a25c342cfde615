"""Bad input and faults: the table in the README's "Errors" section, one test per row.

Each case asserts the exact stderr line and exit code, and that the store is exactly
as it was when the case fails before any trial.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
from click.testing import CliRunner

from sweep.cli import main

GOOD = """name = "ok"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = 1
lr = 0.1
device = "cpu"
[search]
sampler = "random"
n_trials = 2
pruner = "none"
"""
REF = "; see the README's study file reference"


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table: the store's whole content."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        tables = sqlalchemy.inspect(conn).get_table_names()
        out = {t: sorted(map(tuple, conn.execute(sqlalchemy.text(f'select * from "{t}"'))), key=repr) for t in tables}
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one finished study, copied for each test that must leave it unchanged."""
    folder = tmp_path_factory.mktemp("store")
    (folder / "ok.toml").write_text(GOOD)
    result = CliRunner().invoke(main, ["run", str(folder / "ok.toml"), "--storage", f"sqlite:///{folder / 'sweeps.db'}"])
    assert result.exit_code == 0, result.output
    return folder / "sweeps.db"


@pytest.fixture
def store(seeded_store: Path, tmp_path: Path) -> str:
    shutil.copy(seeded_store, tmp_path / "sweeps.db")
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.stdout == "" or result.exit_code == 0, result.stdout
    return result.exit_code, result.stderr


def study(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return str(path)


def with_(section: str, line: str) -> str:
    """GOOD with one line added to a section (later keys win in our tests, so replace when present)."""
    key = line.split("=")[0].strip()
    lines = GOOD.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    body = [ln for ln in lines[start + 1:end] if ln.split("=")[0].strip() != key] + [line]
    return "\n".join(lines[: start + 1] + body + lines[end:]) + "\n"


STUDY_FILE_CASES = {
    "malformed TOML": ('name = "x"\n[train\n', "{f}: malformed TOML: Expected ']' at the end of a table declaration "
                       "(at line 2, column 7); fix the file's syntax", 2),
    "unknown section": (GOOD + "[trainer]\nepochs = 1\n", "{f}: unknown section 'trainer'" + REF, 2),
    "unknown key": (with_("train", "epoch = 3"), "{f}: unknown key 'train.epoch'" + REF, 2),
    "wrong type": (with_("train", 'epochs = "five"'), "{f}: train.epochs: Input should be a valid integer, unable to "
                   "parse string as an integer (given: 'five')" + REF, 2),
    "lambda_low <= 0": (with_("search", "lambda_low = -1e-5"),
                        "{f}: search.lambda_low: Input should be greater than 0 (given: -1e-05)" + REF, 2),
    "lambda_low >= lambda_high": (with_("search", "lambda_low = 0.5"),
                                  "{f}: search: lambda_low must be below lambda_high, got 0.5 >= 0.01" + REF, 2),
    "grid of zero points": (with_("search", 'sampler = "grid"').replace("n_trials = 2", "n_trials = 0"),
                            "{f}: search.n_trials: Input should be greater than or equal to 1 (given: 0)" + REF, 2),
    "n_trials <= 0": (with_("search", "n_trials = -3"),
                      "{f}: search.n_trials: Input should be greater than or equal to 1 (given: -3)" + REF, 2),
    "unknown dataset": (with_("data", 'dataset = "cifar10"'), "{f}: data.dataset: Input should be 'mnist', "
                        "'fashion-mnist' or 'mnist-sample' (given: 'cifar10')" + REF, 2),
    "unknown sampler": (with_("search", 'sampler = "cmaes"'), "{f}: search.sampler: Input should be 'tpe', 'gp', "
                        "'random', 'qmc', 'grid' or 'marglik' (given: 'cmaes')" + REF, 2),
    "unknown pruner": (with_("search", 'pruner = "asha"'), "{f}: search.pruner: Input should be 'none', 'median' "
                       "or 'hyperband' (given: 'asha')" + REF, 2),
    "unknown penalty": (with_("train", 'penalty = "l3"'), "{f}: train.penalty: Input should be 'l2', 'l2-loss', "
                        "'l2-decoupled', 'l1' or 'elastic-net' (given: 'l3')" + REF, 2),
    "unknown device": (with_("train", 'device = "tpu"'),
                       "{f}: train: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" + REF, 2),
    "negative CUDA index": (with_("train", 'device = "cuda:-1"'),
                            "{f}: train: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
                            "got 'cuda:-1'" + REF, 2),
    "CUDA index not a number": (with_("train", 'device = "cuda:abc"'),
                                "{f}: train: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
                                "got 'cuda:abc'" + REF, 2),
    "negative seed": (with_("search", "seed = -1"),
                      "{f}: search.seed: Input should be greater than or equal to 0 (given: -1)" + REF, 2),
    "seed of 2**32": (with_("train", "seed = 4294967296"),
                      "{f}: train.seed: Input should be less than or equal to 4294967295 (given: 4294967296)" + REF, 2),
    "negative split seed": (with_("data", "split_seed = -3"),
                            "{f}: data.split_seed: Input should be greater than or equal to 0 (given: -3)" + REF, 2),
    "grid of 10**10 points": (with_("search", 'sampler = "grid"').replace("n_trials = 2", "n_trials = 10000000000"),
                              "{f}: search: a grid has at most 1000000 points (n_trials), got 10000000000; use sampler "
                              "'tpe' or 'random' for longer searches" + REF, 2),
    "empty name": (GOOD.replace('name = "ok"', 'name = ""'),
                   "{f}: name: String should have at least 1 character (given: '')" + REF, 2),
    "name of spaces": (GOOD.replace('name = "ok"', 'name = "   "'),
                       "{f}: name: must not be empty or only spaces (given: '   ')" + REF, 2),
    "name with a newline": (GOOD.replace('name = "ok"', 'name = "a\\nb"'),
                            "{f}: name: must not contain control characters (newlines, tabs, ...) (given: 'a\\nb')"
                            + REF, 2),
    "name too long": (GOOD.replace('name = "ok"', f'name = "{"n" * 201}"'),
                      "{f}: name: String should have at most 200 characters (given: '" + "n" * 201 + "')" + REF, 2),
}


@pytest.mark.parametrize("case", list(STUDY_FILE_CASES))
def test_study_file_errors(case: str, tmp_path: Path, store: str) -> None:
    text, expected, code = STUDY_FILE_CASES[case]
    f = study(tmp_path, text)
    before = dump(store)
    assert run_cli("run", f, "--storage", store) == (code, "error: " + expected.format(f=f) + "\n")
    assert dump(store) == before


def test_cuda_on_a_machine_without_one(tmp_path: Path, store: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = dump(store)
    assert run_cli("run", study(tmp_path, with_("train", 'device = "cuda"')), "--storage", store) == (
        2, "error: train.device = 'cuda' but this machine has 0 CUDA device(s); set train.device = 'auto' or 'cpu'\n")
    assert dump(store) == before


def test_model_too_large_for_memory_is_refused_before_allocating(tmp_path: Path, store: str) -> None:
    import torch

    from sweep.objectives.prepared import device_memory

    have = device_memory(torch.device("cpu")) / 2**30
    before = dump(store)
    code, err = run_cli("run", study(tmp_path, GOOD + "[model]\nhidden = 100000000\n"), "--storage", store)
    assert (code, err) == (2, f"error: model.hidden = 100000000 with a population of 1 (search.batch) needs about "
                              f"983.8 GiB on cpu, more than its {have:.1f} GiB of memory; lower model.hidden or "
                              "search.batch\n")
    assert dump(store) == before


def test_population_too_large_for_memory_is_refused(tmp_path: Path, store: str) -> None:
    text = with_("search", "batch = 2000").replace("n_trials = 2", "n_trials = 2000") + "[model]\nhidden = 100000\n"
    before = dump(store)
    code, err = run_cli("run", study(tmp_path, text), "--storage", store)
    assert code == 2 and err.startswith("error: model.hidden = 100000 with a population of 2000 (search.batch) needs "
                                        "about "), err
    assert err.endswith("; lower model.hidden or search.batch\n")
    assert dump(store) == before


def test_study_file_with_a_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    url = f"sqlite:///{tmp_path / 'b.db'}"
    result = CliRunner().invoke(main, ["submit", str(path), "--storage", url])
    assert (result.exit_code, result.stdout) == (0, "ok\n"), result.output


@pytest.mark.parametrize(("name", "expected"), [
    ("", "name: String should have at least 1 character (given: '')"),
    ("a\nb", "name: must not contain control characters (newlines, tabs, ...) (given: 'a\\nb')"),
    ("\t", "name: must not be empty or only spaces (given: '\\t')"),
])
def test_bad_name_option_is_refused(name: str, expected: str, tmp_path: Path, store: str) -> None:
    f = study(tmp_path, GOOD)
    before = dump(store)
    assert run_cli("run", f, "--name", name, "--storage", store) == (2, f"error: {f}: {expected}{REF}\n")
    assert dump(store) == before


def idx(array: np.ndarray) -> bytes:
    import struct

    return struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def mnist_files(raw: Path) -> None:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (raw / "train-images-idx3-ubyte").write_bytes(idx(rng.integers(0, 256, (100, 28, 28))))
    (raw / "train-labels-idx1-ubyte").write_bytes(idx(np.arange(100) % 10))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx(rng.integers(0, 256, (20, 28, 28))))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx(np.arange(20) % 10))


def data_case(tmp_path: Path, store: str, dataset: str, expected: str) -> None:
    text = with_("data", f'dataset = "{dataset}"').replace("holdout = 1000", "holdout = 20")
    env = {"SWEEP_DATA_DIR": str(tmp_path / "data"), "SWEEP_FASHION_MNIST_DIR": str(tmp_path / "no-debian")}
    before = dump(store)
    assert run_cli("run", study(tmp_path, text), "--storage", store, env=env) == (1, "error: " + expected + "\n")
    assert dump(store) == before


def test_data_folder_missing(tmp_path: Path, store: str) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    data_case(tmp_path, store, "fashion-mnist",
              f"fashion-mnist: no IDX files in {raw} nor in {tmp_path}/no-debian; run 'apt-get install dataset-fashion-mnist' "
              f"or put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte in {raw}")


def test_data_folder_unreadable(tmp_path: Path, store: str) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    mnist_files(raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").mkdir()  # a folder where a file should be: unreadable as a file
    data_case(tmp_path, store, "mnist",
              f"cannot read {raw}/t10k-labels-idx1-ubyte: Is a directory; check the file and its permissions")


def test_truncated_idx(tmp_path: Path, store: str) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    mnist_files(raw)
    blob = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(blob[:5000])
    data_case(tmp_path, store, "mnist",
              f"{raw}/train-images-idx3-ubyte is not a valid IDX file (wrong magic number or truncated) "
              "(shape '[100, 28, 28]' is invalid for input of size 4984); delete it and put the original file there again")


def test_wrong_magic_idx(tmp_path: Path, store: str) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    mnist_files(raw)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"GIF89a" + bytes(200))
    data_case(tmp_path, store, "mnist",
              f"{raw}/train-labels-idx1-ubyte is not a valid IDX file (wrong magic number or truncated); "
              "delete it and put the original file there again")


def test_image_label_count_mismatch(tmp_path: Path, store: str) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    mnist_files(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx(np.arange(19) % 10))
    data_case(tmp_path, store, "mnist",
              f"{raw}: t10k has 20 images but 19 labels; the files come from different datasets or one is truncated: "
              "put matching originals there")


def test_malformed_storage_url(tmp_path: Path) -> None:
    assert run_cli("run", study(tmp_path, GOOD), "--storage", "sqlite//nope") == (
        1, "error: malformed storage URL 'sqlite//nope'; expected e.g. sqlite:///sweeps.db or "
           "postgresql+psycopg://user:password@host:5432/db\n")


def test_unreachable_host(tmp_path: Path) -> None:
    # A refused connection may be a server restarting: waited for within SWEEP_STORE_OUTAGE (issue #28), then one line.
    code, err = run_cli("run", study(tmp_path, GOOD), "--storage", "postgresql://sweep:s3cret@127.0.0.1:9/sweep",
                        env={"SWEEP_STORE_OUTAGE": "1"})
    refused = 'connection failed: connection to server at "127.0.0.1", port 9 failed: Connection refused'
    assert code == 1
    assert err == (f"sweep: store unavailable: {refused}; retrying for up to 1 s (SWEEP_STORE_OUTAGE)\n"
                   f"error: the study store has been unavailable for 1 s (SWEEP_STORE_OUTAGE = 1): {refused}; the run "
                   "stops; check the database server and disk, then run the same command again to resume (its "
                   "running trials are retried then)\n")
    assert "s3cret" not in err
    # A host name that does not resolve is a typo, not an outage: at once.
    code, err = run_cli("run", study(tmp_path, GOOD), "--storage", "postgresql://sweep:s3cret@db.invalid:5432/sweep")
    assert (code, err.count("\n")) == (1, 1) and err.startswith("error: cannot open storage postgresql://sweep:***@db.invalid")


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("shopping list\n")
    assert run_cli("ls", "--storage", f"sqlite:///{tmp_path / 'notes.db'}") == (
        1, f"error: cannot open storage sqlite:///{tmp_path}/notes.db: file is not a database; "
           "check the URL, the server and the file\n")
    assert (tmp_path / "notes.db").read_text() == "shopping list\n"


def test_read_only_database(tmp_path: Path, store: str) -> None:
    path = store.removeprefix("sqlite:///")
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
            pytest.skip("root ignores file modes and chattr +i is not supported here")
    else:
        os.chmod(path, 0o444)
    before = dump(store)
    try:
        assert run_cli("run", study(tmp_path, GOOD.replace('"ok"', '"new"')), "--storage", store) == (
            1, "error: the study store failed: attempt to write a readonly database; "
               "check that the database is reachable and writable\n")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path], check=True)
    assert dump(store) == before


def test_run_on_an_existing_name_with_a_different_config(tmp_path: Path, store: str) -> None:
    before = dump(store)
    assert run_cli("run", study(tmp_path, with_("train", "epochs = 4")), "--storage", store) == (
        1, "error: study 'ok' exists with a different config (train.epochs); run the same study file to resume it, "
           "or give a new name with --name\n")
    assert dump(store) == before


@pytest.mark.parametrize("command", ["best", "show"])
def test_unknown_study(command: str, store: str) -> None:
    assert run_cli(command, "okk", "--storage", store) == (
        1, f"error: no study named 'okk' in {store} (studies there: ok); check the name with 'sweep ls' or pass --storage\n")


def failing_study(tmp_path: Path) -> str:
    # lr 0.1 * lambda >= 100: each step multiplies the weights by about -9, the loss becomes NaN in epoch 1
    text = with_("search", "lambda_low = 100.0").replace("lambda_low = 100.0", "lambda_low = 100.0\nlambda_high = 200.0")
    return study(tmp_path, text.replace('name = "ok"', 'name = "boom"').replace("n_trials = 2", "n_trials = 5"))


def test_study_whose_every_trial_failed(tmp_path: Path, store: str) -> None:
    code, err = run_cli("run", failing_study(tmp_path), "--storage", store)
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith("error: study 'boom': the last 5 trials failed (training loss became nan in epoch 1 at lambda ")
    assert last.endswith("; lower train.lr or the lambda range); fix the study file (train.lr, the lambda range) and run again")
    assert run_cli("best", "boom", "--storage", store) == (
        1, "error: study 'boom' has no complete trial yet; run it with 'sweep run' (see 'sweep show boom')\n")
    assert run_cli("refit", "boom", "--rule", "smooth", "--storage", store) == (
        1, "error: study 'boom' has no complete trial to refit; run it with 'sweep run'\n")
    show = CliRunner().invoke(main, ["show", "boom", "--storage", store]).stdout.splitlines()
    assert len(show) == 6 and all(" fail " in row and "training loss became nan" in row for row in show[1:])


def test_failed_trials_are_one_line_each_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    f = failing_study(tmp_path)
    exe = str(Path(sys.executable).with_name("sweep"))
    out = subprocess.run([exe, "run", f, "--storage", f"sqlite:///{tmp_path / 'a.db'}"], capture_output=True,
                         text=True, timeout=300)
    lines = out.stderr.splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr and "[W " not in out.stderr, out.stderr
    assert [ln[:14] for ln in lines] == [f"[0/5] trial {i} " for i in range(5)] + ["error: study '"], lines
    debug = subprocess.run([exe, "--debug", "run", f, "--storage", f"sqlite:///{tmp_path / 'b.db'}"],
                           capture_output=True, text=True, timeout=300)
    assert "sweep: trial 0 failed: training loss became nan" in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "TrainingDivergedError" in debug.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_the_trial_and_the_next_run_resumes(sig: signal.Signals, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    f = study(tmp_path, with_("train", "epochs = 40").replace("n_trials = 2", "n_trials = 3"))
    exe = str(Path(sys.executable).with_name("sweep"))
    proc = subprocess.Popen([exe, "run", f, "--storage", url], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "[1/3]" not in proc.stderr.readline():
        pass
    time.sleep(0.5)  # trial 1 (40 epochs) is under way
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig  # 130 for Ctrl-C, 143 for SIGTERM
    assert rest.splitlines()[-1] == (f"error: stopped by {sig.name}; the current trial was ended, run the same command "
                                     "again to resume")
    states = [row[3] for row in sorted(dump(url)["trials"])]
    # The interrupted trial is ended, not left RUNNING, and its lambda is queued for the resume (sweep.workers.loop).
    assert states == ["COMPLETE", "FAIL", "WAITING"]
    resumed = subprocess.run([exe, "run", f, "--storage", url], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    out = subprocess.run([exe, "show", "ok", "--storage", url], capture_output=True, text=True).stdout.splitlines()[1:]
    assert [row.split()[1] for row in out].count("complete") == 3


@pytest.mark.parametrize("name", ["okk", "boom"])
def test_report_on_unknown_or_empty_study(name: str, tmp_path: Path, store: str) -> None:
    if name == "boom":
        run_cli("run", failing_study(tmp_path), "--storage", store)
        expected = ("error: study 'boom' has no complete trial to chart; see 'sweep show boom' for its trials "
                    "and run it with 'sweep run'\n")
    else:
        expected = (f"error: no study named 'okk' in {store} (studies there: ok); "
                    "check the name with 'sweep ls' or pass --storage\n")
    assert run_cli("report", name, "--storage", store, "-o", str(tmp_path / "r.html")) == (1, expected)
    assert not (tmp_path / "r.html").exists()


def test_two_runs_of_one_study_at_once_share_the_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    f = study(tmp_path, with_("train", "epochs = 3").replace("n_trials = 2", "n_trials = 6"))
    exe = str(Path(sys.executable).with_name("sweep"))
    procs = [subprocess.Popen([exe, "run", f, "--storage", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = dump(url)["trials"]
    assert sorted(str(r[3]) for r in rows).count("COMPLETE") == 6 and len(rows) == 6  # none lost, none extra
    # the best line last, or before the flat answer's line when the trials cannot be told apart
    assert all(any(line.startswith("best lambda ") for line in out.strip().splitlines()[-2:]) for out, _ in outs)


def test_password_never_appears_in_output_report_or_store(tmp_path: Path) -> None:
    pg = os.environ.get("SWEEP_TEST_POSTGRES_URL")
    if pg is None:
        pytest.skip("SWEEP_TEST_POSTGRES_URL is not set (scripts/test.sh starts a PostgreSQL server)")
    url = sqlalchemy.engine.make_url(pg)
    password = url.password
    assert password
    f = study(tmp_path, GOOD.replace('"ok"', f'"secret-{os.getpid()}"'))
    name = f"secret-{os.getpid()}"
    runs = [CliRunner().invoke(main, args) for args in (
        ["run", f, "--storage", pg],
        ["best", name, "--storage", pg, "--format", "json"],
        ["show", name, "--storage", pg],
        ["ls", "--storage", pg],
        ["report", name, "--storage", pg, "-o", str(tmp_path / "r.html")],
        ["--debug", "best", "nope", "--storage", pg],
    )]
    assert [r.exit_code for r in runs[:5]] == [0] * 5
    assert all(password not in r.output for r in runs)
    assert '"storage": "' + url.render_as_string(hide_password=True) + '"' in runs[1].stdout
    assert password not in (tmp_path / "r.html").read_text()
    assert all(password not in repr(rows) for rows in dump(pg).values())


def test_dashboard_binds_localhost_by_default(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from sweep.storages.store import open_storage

    open_storage(f"sqlite:///{tmp_path / 's.db'}").engine.dispose()  # the dashboard never creates a store
    exe = str(Path(sys.executable).with_name("sweep"))
    proc = subprocess.Popen([exe, "dashboard", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        listening: set[str] = set()
        deadline = time.time() + 60
        while time.time() < deadline and not listening:
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                for line in Path(table).read_text().splitlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
                        listening.add(local.split(":")[0])
            time.sleep(0.2)
        assert listening == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0 or ::
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ctrl_c_during_a_batch_ends_it_and_the_next_run_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    text = with_("train", "epochs = 300").replace("n_trials = 2", "n_trials = 3")
    text = text.replace('pruner = "none"', 'pruner = "none"\nbatch = 3')
    text = text.replace("holdout = 1000", "holdout = 3000")  # 1,000 fit digits: short epochs
    f = study(tmp_path, text)
    exe = str(Path(sys.executable).with_name("sweep"))
    proc = subprocess.Popen([exe, "run", f, "--storage", url], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(str(r[3]) == "RUNNING" for r in dump(url).get("trials", [])):
        time.sleep(0.2)
    time.sleep(0.5)  # the population is training
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert rest.splitlines()[-1] == "error: stopped by SIGINT; the current trial was ended, run the same command again to resume"
    states = [str(row[3]) for row in sorted(dump(url)["trials"])]
    assert states == ["FAIL"] * 3 + ["WAITING"] * 3  # every member ended, every lambda queued again
    resumed = subprocess.run([exe, "run", f, "--storage", url], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    states = [str(row[3]) for row in sorted(dump(url)["trials"])]
    assert states.count("COMPLETE") == 3 and "RUNNING" not in states and "WAITING" not in states


READ_ONLY = [("ls",), ("show", "ok"), ("best", "ok"), ("report", "ok", "-o", "r.html")]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: a[0])
def test_read_only_command_on_a_missing_file_creates_nothing(args: tuple[str, ...], tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    url = f"sqlite:///{path}"
    assert run_cli(*args, "--storage", url) == (
        1, f"error: no study store at {url}: '{path}' does not exist; check --storage (or SWEEP_STORAGE) and the "
           "folder ('sweep run' and 'sweep submit' create it)\n")
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: a[0])
@pytest.mark.parametrize("tables", [("alembic_version", "users"), ("studies",)], ids=["alembic", "own-studies"])
def test_read_only_command_on_another_applications_database_adds_nothing(
        args: tuple[str, ...], tables: tuple[str, ...], tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        for t in tables:
            conn.execute(f"create table {t} (id integer primary key, note text)")
            conn.execute(f"insert into {t} (note) values ('mine')")
    url = f"sqlite:///{path}"
    before = dump(url)
    missing = ", ".join(sorted({"alembic_version", "studies", "trials", "version_info"} - set(tables)))
    assert run_cli(*args, "--storage", url) == (
        1, f"error: {url} holds no Optuna study store (tables there: {', '.join(sorted(tables))}; missing: "
           f"{missing}); check --storage, this command adds nothing to it\n")
    assert dump(url) == before


def test_read_only_command_on_an_empty_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///{path}"
    assert run_cli("ls", "--storage", url) == (
        1, f"error: {url} holds no study store yet (no tables); submit a study there first ('sweep submit' or "
           "'sweep run'), this command adds nothing to it\n")
    assert dump(url) == {}


def test_bad_outage_budget(tmp_path: Path) -> None:
    f = study(tmp_path, GOOD)
    assert run_cli("run", f, "--storage", f"sqlite:///{tmp_path / 's.db'}", env={"SWEEP_STORE_OUTAGE": "soon"}) == (
        1, "error: SWEEP_STORE_OUTAGE must be a number of seconds, 0 or more, got 'soon'; unset it or fix it\n")
FACTORY_MODULE = """
import numpy as np
from torch import nn

NOT_CALLABLE = 3


def model():
    return nn.Linear(784, 10)


def no_module():
    return "a network"


def five_outputs():
    return nn.Linear(784, 5)


def x():
    return np.random.default_rng(0).random((40, 784)).astype(np.float32)


def short_labels():
    return x(), np.arange(39) % 10, x(), np.arange(40) % 10


def label_out_of_range():
    return x(), np.arange(40) % 10, x(), np.arange(40) % 11


def one_class():
    return x(), np.zeros(40, dtype=np.int64), x(), np.zeros(40, dtype=np.int64)
"""
FACTORY_CASES = {  # data.factory (or None: mnist-sample), model.factory, the line after "error: "
    "module does not import": (None, "{m}_nope:model", "model.factory = '{m}_nope:model': module '{m}_nope' does not import "
                               "(ModuleNotFoundError: No module named '{m}_nope'); install its package or add its folder to "
                               "PYTHONPATH, on every machine that runs 'sweep run' or 'sweep worker'"),
    "missing attribute": (None, "{m}:modle", "model.factory = '{m}:modle': module '{m}' has no attribute 'modle'; "
                          "check the name after the ':'"),
    "not callable": (None, "{m}:NOT_CALLABLE", "model.factory = '{m}:NOT_CALLABLE' is a int, not callable; name a function "
                     "(or class) that takes no arguments"),
    "returns no nn.Module": (None, "{m}:no_module", "model.factory = '{m}:no_module' returned a str, expected a "
                             "torch.nn.Module; return a fresh network from the function"),
    "output not (N, classes)": (None, "{m}:five_outputs", "model.factory = '{m}:five_outputs' returns shape (2, 5) for a batch "
                                "of 2 examples, expected float logits of shape (2, 10) (one per class); make its last layer "
                                "output 10 values"),
    "data of mismatched lengths": ("{m}:short_labels", "{m}:model", "data.factory = '{m}:short_labels': x_train has shape "
                                   "(40, 784) and y_train (39,); expected x_train (N, ...) and y_train (N,), one label per "
                                   "example"),
    "labels out of range": ("{m}:label_out_of_range", "{m}:model", "data.factory = '{m}:label_out_of_range': label 10 is out "
                            "of range: labels must be 0..9 (the training labels' range); map the classes to 0..C-1"),
    "fewer than two classes": ("{m}:one_class", "{m}:model", "data.factory = '{m}:one_class': y_train holds 1 class(es); "
                               "a classifier needs at least two"),
}


@pytest.mark.parametrize("case", list(FACTORY_CASES))
def test_bad_factories_and_data(case: str, tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    m = f"factories_{list(FACTORY_CASES).index(case)}"  # one module per case: imports and data are cached per process
    (tmp_path / f"{m}.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    data_factory, model_factory, expected = (v.format(m=m) if v else v for v in FACTORY_CASES[case])
    text = GOOD.replace('dataset = "mnist-sample"\nholdout = 1000', f'factory = "{data_factory}"\nholdout = 10'
                        if data_factory else 'dataset = "mnist-sample"\nholdout = 1000')
    text = text.replace("[train]", f'[model]\nfactory = "{model_factory}"\n[train]')
    before = dump(store)
    assert run_cli("run", study(tmp_path, text), "--storage", store) == (2, f"error: {expected}\n")
    assert dump(store) == before


LEGACY = Path(__file__).resolve().parent / "data" / "legacy-0.2.db"


def test_best_for_with_a_bad_key_or_value_or_without_a_stored_size(tmp_path: Path, store: str) -> None:
    before = dump(store)
    assert run_cli("best", "ok", "--storage", store, "--for", "width=3") == (
        2, "error: --for takes KEY=VALUE pairs with keys n_train, epochs, batch_size, lr, got 'width=3'; "
           "e.g. --for n_train=60000,epochs=20\n")
    assert run_cli("best", "ok", "--storage", store, "--for", "epochs=2.5") == (
        2, "error: epochs must be a whole number, got 2.5; e.g. epochs=2\n")
    assert dump(store) == before
    shutil.copy(LEGACY, tmp_path / "legacy.db")  # refit by 0.2, before refits stored their training-set size
    assert run_cli("best", "legacy-holdout", "--storage", f"sqlite:///{tmp_path / 'legacy.db'}", "--for", "n_train=100") == (
        1, "error: study 'legacy-holdout' has no stored training-set size (no refit since sizes were stored); "
           "refit it with 'sweep refit legacy-holdout --rule 1se-paired', then ask again\n")


def test_data_subset_too_small(tmp_path: Path, store: str) -> None:
    before = dump(store)
    assert run_cli("run", study(tmp_path, with_("data", "subset = 0.001")), "--storage", store) == (
        1, "error: data.subset = 0.001 keeps 4 of 4000 training examples; keep at least 20 (a larger fraction or "
           "count), or remove data.subset\n")
    assert dump(store) == before
