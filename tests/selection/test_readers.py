"""Every rule of the registry through every reader, on a store written by version 0.2.

``tests/data/legacy-0.2.db`` was made by the previous release; ``tests/data/<study>.best.json`` is what
its ``sweep best <study> --format json`` printed. Each test works on a copy of the store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from click.testing import CliRunner

import sweep
from sweep.cli import main
from sweep.report.figures import plot_accuracy_vs_lambda
from sweep.report.html import DASHBOARD_FIGURE_ID, load_records
from sweep.selection import REGISTRY, RULES, best_record, evidence_choice

DATA = Path(__file__).resolve().parents[1] / "data"
STUDIES = ("legacy-holdout", "legacy-cv", "legacy-smooth")
# What 0.2 gave for each --rule (its own release, not this code).
HOLDOUT = {"min": 0.00044303752452182633, "1se": 0.005484006358232136, "1se-paired": 0.005484006358232136,
           "smooth": 9.884959046625586e-05}
EXPECTED = {
    "legacy-holdout": HOLDOUT,
    "legacy-cv": {"min": 0.00027385487761399956, "1se": 0.005484006358232136, "1se-paired": 0.00027385487761399956,
                  "smooth": 0.00013987131026472387},
    "legacy-smooth": HOLDOUT,
}
CASES = [(study, rule) for study in STUDIES for rule in RULES]


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the 0.2 store, read by the tests below (never the fixture itself)."""
    path = tmp_path_factory.mktemp("legacy") / "legacy.db"
    shutil.copyfile(DATA / "legacy-0.2.db", path)
    return f"sqlite:///{path}"


def test_the_registry_is_the_rules() -> None:
    assert RULES == ("min", "1se", "1se-paired", "smooth") == tuple(REGISTRY)
    assert all(REGISTRY[name].name == name for name in RULES)


@pytest.mark.parametrize("study", STUDIES)
def test_best_json_is_what_0_2_printed(legacy: str, study: str) -> None:
    expected = json.loads((DATA / f"{study}.best.json").read_text())
    got = json.loads(cli("best", study, "--storage", legacy, "--format", "json").stdout)
    assert list(got)[:len(expected)] == list(expected)  # same keys, same order; then the keys added since 0.2
    assert list(got)[len(expected):] == ["metric", "direction", "flat", "flat_reason"]
    assert (got["metric"], got["direction"]) == ("accuracy", "maximize")
    assert {k: v for k, v in got.items() if k in expected and k != "storage"} == \
        {k: v for k, v in expected.items() if k != "storage"}
    assert got["storage"] == legacy


@pytest.mark.parametrize(("study", "rule"), CASES)
def test_every_reader_names_the_lambda_0_2_named(legacy: str, study: str, rule: str) -> None:
    lam = EXPECTED[study][rule]
    key = REGISTRY[rule].key
    assert float(cli("best", study, "--storage", legacy, "--rule", rule).stdout) == lam
    rec = json.loads(cli("best", study, "--storage", legacy, "--rule", rule, "--format", "json").stdout)
    assert (rec["rule"], rec["lambda"], rec[f"lambda_{key}"]) == (rule, lam, lam)
    env = dict(line.split("=", 1) for line in
               cli("best", study, "--storage", legacy, "--rule", rule, "--format", "env").stdout.split())
    assert (float(env["SWEEP_LAMBDA"]), env["SWEEP_RULE"], float(env[f"SWEEP_LAMBDA_{key.upper()}"])) == (lam, rule, lam)
    assert sweep.best_lambda(study, storage=legacy, rule=rule) == lam
    (record,) = load_records([study], legacy)
    assert record.choices[rule].lam == lam
    (marker,) = [t for t in plot_accuracy_vs_lambda([record]).data if t.meta["role"] == f"choice-{rule}"]
    assert tuple(marker.x) == (lam,)


def _dashboard_data(url: str, study: str) -> list[dict[str, Any]]:
    """The figure optuna-dashboard itself serves for ``study``."""
    study_id = optuna.load_study(study_name=study, storage=url)._study_id
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study_id}"
    body = json.loads(b"".join(__import__("optuna_dashboard").wsgi(url)(environ, lambda *a, **k: None)))
    (graph,) = [g for g in body["plotly_graph_objects"] if g["id"] == DASHBOARD_FIGURE_ID]
    return json.loads(graph["graph_object"])["data"]


@pytest.mark.parametrize("study", STUDIES)
def test_report_and_dashboard_figure_agree_with_sweep_best(legacy: str, study: str, tmp_path: Path) -> None:
    cli("report", study, "--storage", legacy, "-o", str(tmp_path / "r.html"))
    data = _dashboard_data(legacy, study)
    for rule in RULES:
        (marker,) = [t for t in data if t.get("meta", {}).get("role") == f"choice-{rule}"]
        assert marker["x"] == [EXPECTED[study][rule]] == [best_record(study, storage=legacy, rule=rule).lam]


@pytest.mark.slow
def test_refit_rule_trains_the_lambda_every_reader_names(tmp_path: Path) -> None:
    shutil.copyfile(DATA / "legacy-0.2.db", tmp_path / "legacy.db")
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    for rule in RULES:
        out = cli("refit", "legacy-holdout", "--storage", url, "--rule", rule).stdout
        rec = json.loads(cli("best", "legacy-holdout", "--storage", url, "--rule", rule, "--format", "json").stdout)
        stored = optuna.load_study(study_name="legacy-holdout", storage=url).user_attrs["refit"][rule]
        assert stored["lambda"] == rec["lambda"] == HOLDOUT[rule]
        assert rec["test_acc"] == stored["test_acc"] and f"test accuracy {stored['test_acc']:.4f}" in out
        assert f"best lambda {HOLDOUT[rule]:.4g} (" in out and f"rule {rule})" in out
    (record,) = load_records(["legacy-holdout"], url)
    assert {r: c.test_acc for r, c in record.choices.items()} == {
        r: optuna.load_study(study_name="legacy-holdout", storage=url).user_attrs["refit"][r]["test_acc"] for r in RULES}


SMOOTH_STUDY = """
name = "sm"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
epochs = 1
lr = 0.1
device = "cpu"
[search]
sampler = "random"
n_trials = 3
pruner = "none"
rule = "smooth"
"""


@pytest.mark.slow
def test_evidence_then_report_on_a_smooth_study(tmp_path: Path) -> None:
    """0.2's ``sweep evidence`` stored the evidence then failed on a smooth study, and so did ``sweep report``."""
    pytest.importorskip("laplace")
    (tmp_path / "sm.toml").write_text(SMOOTH_STUDY)
    url = f"sqlite:///{tmp_path / 's.db'}"
    cli("run", str(tmp_path / "sm.toml"), "--storage", url)
    rec = best_record("sm", storage=url)
    assert rec.rule == "smooth" and rec.trial is None  # the curve's pick, not a trial: the case that failed
    out = cli("evidence", "sm", "--storage", url).stdout
    pick = evidence_choice("sm", storage=url)
    assert (pick.rule, pick.rule_lam, pick.rule_trial) == ("smooth", rec.lam, None)
    assert f"rule smooth picks lambda {rec.lam:.4g} (smoothed curve)" in out
    assert pick.agree == (rec.smooth_low <= pick.lam <= rec.smooth_high)
    report = cli("report", "sm", "--storage", url, "-o", str(tmp_path / "r.html"))
    assert report.stdout.startswith(f"wrote {tmp_path / 'r.html'} (1 study, 3 trials)")
    (record,) = load_records(["sm"], url)
    assert record.evidence_pick == pick and len(record.evidence) == 3


def test_a_study_lambda_sweep_did_not_make_is_one_error_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="bare", storage=url).optimize(lambda t: t.suggest_float("lambda", 1e-5, 1e-2), 1)
    result = CliRunner().invoke(main, ["refit", "bare", "--rule", "min", "--storage", url])
    assert (result.exit_code, result.stderr) == (1, "error: study 'bare' was not made by lambda-sweep; "
                                                    "it has no config to refit with\n")
    # Reading is still allowed: sweep best falls back to rule min over the trials it finds.
    assert best_record("bare", storage=url).rule == "min"
