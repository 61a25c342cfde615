"""Reports: records (no Plotly, no browser), figures, HTML escaping, the CLI, the dashboard figure.

Browser tests (headless Chromium through selenium) are in test_report_browser.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.cli import main
from sweep.config import PARAM
from sweep.report import html as report
from sweep.report.figures import plot_accuracy_vs_lambda, plot_learning_curves, plot_train_vs_val
from sweep.report.records import collect_history, collect_study
from sweep.selection import RULES

EVIL = "<script>alert(1)</script>"
DIST = {PARAM: FloatDistribution(1e-5, 1e-2, log=True)}


def _history(accs: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": a + 0.05, "val_loss": 1.0, "val_acc": a,
             "seconds": 0.1} for i, a in enumerate(accs)]


def add(study: optuna.Study, lam: float, acc: float | None, *, state: TrialState = TrialState.COMPLETE,
        se: float = 0.01, **attrs: Any) -> None:
    curve = [acc - 0.1, acc] if acc is not None else []
    user_attrs = {"history": _history(curve), **attrs}
    if state == TrialState.COMPLETE:
        user_attrs.update(val_acc=acc, val_se=se, train_acc=(acc or 0) + 0.05)
    study.add_trial(create_trial(
        state=state, value=acc if state == TrialState.COMPLETE else None, params={PARAM: lam}, distributions=DIST,
        user_attrs=user_attrs, intermediate_values={i + 1: v for i, v in enumerate(curve)},
    ))


def make_fake(url: str, name: str = "fake") -> optuna.Study:
    """A study with known figures: 4 complete (best at 1e-4, within one SE up to 1e-3), 1 pruned, 1 failed."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    add(study, 1e-5, 0.90)
    add(study, 1e-4, 0.93)
    add(study, 1e-3, 0.925)  # 0.93 - 0.01 <= 0.925: the 1se rule picks this larger lambda
    add(study, 1e-2, 0.80)
    add(study, 3e-3, 0.70, state=TrialState.PRUNED)
    add(study, 5e-3, None, state=TrialState.FAIL)
    study.set_user_attr("refit", {"min": {"rule": "min", "trial": 1, "lambda": 1e-4, "test_acc": 0.941},
                                  "1se": {"rule": "1se", "trial": 0, "lambda": 1e-5, "test_acc": 0.5}})  # stale
    return study


def test_collect_counts_choices_and_refit(sqlite_url: str) -> None:
    rec = collect_study(make_fake(sqlite_url))
    assert rec.counts == {"COMPLETE": 4, "PRUNED": 1, "FAIL": 1, "RUNNING": 0, "WAITING": 0}
    assert [t.lam for t in rec.complete] == [1e-5, 1e-4, 1e-3, 1e-2]
    assert [(t.number, t.val_acc) for t in rec.pruned] == [(4, 0.70)]  # the last value it reported
    assert (rec.choices["min"].lam, rec.choices["min"].trial, rec.choices["min"].test_acc) == (1e-4, 1, 0.941)
    # the stored 1se refit belongs to another trial: it is not this pick's test accuracy
    assert (rec.choices["1se"].lam, rec.choices["1se"].trial, rec.choices["1se"].test_acc) == (1e-3, 2, None)
    assert rec.wall_seconds is not None and rec.wall_seconds >= 0
    assert [p.best for p in collect_history(rec)] == [0.90, 0.93, 0.93, 0.93]


def test_error_bar_is_the_stored_se_not_a_recomputed_one(sqlite_url: str) -> None:
    """The report reads the SE the objective stored (what the 1se rule uses), even when fold scores are present:
    with repeats the fold SE is not std(fold_scores)/sqrt(n), and a recomputed one made the report disagree."""
    study = optuna.create_study(study_name="cv", storage=sqlite_url, direction="maximize")
    add(study, 1e-4, 0.93, se=0.0173, fold_scores=[0.90, 0.96, 0.93])
    add(study, 1e-3, 0.915, se=0.001, fold_scores=[0.91, 0.92, 0.915])
    rec = collect_study(study)
    assert [t.val_err for t in rec.trials] == [0.0173, 0.001]
    assert rec.trials[0].fold_scores == (0.90, 0.96, 0.93)
    assert rec.choices["1se"].lam == 1e-3  # 0.915 >= 0.93 - 0.0173


@pytest.mark.parametrize("search", [
    {"validation": "holdout"},
    {"validation": "cv", "folds": 3},
    {"validation": "cv", "folds": 3, "repeats": 2},
], ids=["holdout", "cv", "cv-repeats"])
def test_report_and_sweep_best_give_the_same_picks(tiny_cfg: Any, sqlite_url: str, search: dict[str, Any]) -> None:
    from sweep.selection import best_record
    from sweep.workers.run import run as run_study

    cfg = tiny_cfg(name="same", train={"epochs": 1}, search={"n_trials": 4, **search})  # 4 lambdas: enough to smooth
    study = run_study(cfg, sqlite_url, refit_after=False)
    rec = collect_study(study)
    stored = {t.number: t.user_attrs["val_se"] for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert {t.number: t.val_err for t in rec.complete} == stored
    assert set(rec.choices) == set(RULES)
    for rule in RULES:
        best = best_record("same", storage=sqlite_url, rule=rule)
        choice = rec.choices[rule]
        assert (choice.lam, choice.trial, choice.val_acc, choice.val_se) == (best.lam, best.trial, best.val_acc, best.val_se)
        assert rec.plausible == (best.plausible_low, best.plausible_high)
    assert rec.smooth is not None and rec.smooth.interval == (best.smooth_low, best.smooth_high)
    # What the figure draws is the same: the plausible band's edges and each rule's mark.
    fig = plot_accuracy_vs_lambda([rec])
    (band,) = _traces(fig, "plausible")
    assert (min(band.x), max(band.x)) == rec.plausible
    for rule in RULES:
        assert _traces(fig, f"choice-{rule}")[0].x == (rec.choices[rule].lam,)
    assert list(_traces(fig, "smooth")[0].y) == list(rec.smooth.mean)


def test_empty_study_draws_without_choices(sqlite_url: str) -> None:
    study = optuna.create_study(study_name="empty", storage=sqlite_url, direction="maximize")
    rec = collect_study(study)
    assert (rec.choices, rec.complete, rec.wall_seconds) == ({}, (), None)
    figs = report.build_figures([rec])
    assert set(figs) == {"accuracy-vs-lambda", "train-vs-val", "optimization-history", "learning-curves-0"}


def _traces(fig: Any, role: str) -> list[Any]:
    return [t for t in fig.data if t.meta and t.meta["role"] == role]


def test_figures_draw_one_point_per_complete_trial_and_mark_the_rules(sqlite_url: str) -> None:
    rec = collect_study(make_fake(sqlite_url))
    fig = plot_accuracy_vs_lambda([rec])
    (trials,) = _traces(fig, "trials")
    assert list(trials.x) == [1e-5, 1e-4, 1e-3, 1e-2] and list(trials.error_y.array) == [0.01] * 4
    assert [c[0] for c in trials.customdata] == [0, 1, 2, 3]
    assert list(_traces(fig, "pruned")[0].x) == [3e-3]
    assert (_traces(fig, "choice-min")[0].x[0], _traces(fig, "choice-1se")[0].x[0]) == (1e-4, 1e-3)
    assert _traces(fig, "test-min")[0].y == (0.941,) and _traces(fig, "test-1se") == []
    # Without per-example correctness the comparisons are unpaired: 1e-3 (0.925) is within 1.645 * sqrt(2) * 0.01
    # of the best, 1e-5 (0.90) and 1e-2 (0.80) are not.
    assert rec.plausible == (1e-4, 1e-3) and list(_traces(fig, "plausible")[0].x) == [1e-4, 1e-4, 1e-3, 1e-3, 1e-4]
    smooth, smooth_band = _traces(fig, "smooth")[0], _traces(fig, "smooth-band")[0]
    assert (smooth.x[0], smooth.x[-1]) == (1e-5, 1e-2) and len(smooth_band.x) == 2 * len(smooth.x)
    assert all(lo <= m <= hi for lo, m, hi in zip(rec.smooth.lower, rec.smooth.mean, rec.smooth.upper, strict=True))
    assert _traces(fig, "choice-smooth")[0].x == (rec.choices["smooth"].lam,)
    assert fig.layout.xaxis.type == "log"
    gap = plot_train_vs_val([rec])
    assert list(_traces(gap, "train")[0].y) == pytest.approx([0.95, 0.98, 0.975, 0.85])
    curves = plot_learning_curves(rec)
    assert len(_traces(curves, "curve")) == 4 and len(_traces(curves, "curve-pruned")) == 1
    assert _traces(curves, "curve-pruned")[0].line.dash == "dash"


def test_several_studies_overlay_on_one_chart(sqlite_url: str) -> None:
    recs = [collect_study(make_fake(sqlite_url, "tpe")), collect_study(make_fake(sqlite_url, "grid"))]
    fig = plot_accuracy_vs_lambda(recs)
    assert [t.meta["study"] for t in _traces(fig, "trials")] == ["tpe", "grid"]
    assert [r["study"] for r in report.summary_rows(recs)] == ["tpe", "grid"]
    row = report.summary_rows(recs)[0]
    assert (row["lambda min"], row["test min"], row["lambda 1se"], row["complete"], row["pruned"], row["fail"]) == \
        ("0.0001", "0.9410", "0.001", "4", "1", "1")


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _strings(v)]
    return []


def test_user_strings_are_escaped_in_figures_and_html(sqlite_url: str) -> None:
    recs = [collect_study(make_fake(sqlite_url, EVIL))]
    figs = report.build_figures(recs)
    texts = [s for f in figs.values() for s in _strings(f.to_plotly_json())]
    assert not [s for s in texts if "<script" in s]
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in s for s in texts)  # Plotly decodes it back to the text
    page = report.render_html(recs, figs)
    assert "<script>alert(1)" not in page and "alert(1)</script>" not in page
    assert "<h1>lambda-sweep report: &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_report_writes_html_and_the_dashboard_figure(sqlite_url: str, tmp_path: Path) -> None:
    study = make_fake(sqlite_url)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "r.html"
    res = _cli("report", "fake", "--storage", sqlite_url, "-o", str(out))
    assert (res.exit_code, res.output) == (0, f"wrote {out} (1 study, 6 trials)\n")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="accuracy-vs-lambda"' in page
    assert "cdn.plot.ly" not in page.split("</head>")[1]  # the figures load nothing from the internet
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]  # no temp file left behind
    # What optuna-dashboard itself serves for the study: our figure, with one point per complete trial.
    app = __import__("optuna_dashboard").wsgi(sqlite_url)
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study._study_id}"
    body = json.loads(b"".join(app(environ, lambda status, headers, exc_info=None: None)))
    (graph,) = body["plotly_graph_objects"]
    assert graph["id"] == report.DASHBOARD_FIGURE_ID
    data = json.loads(graph["graph_object"])["data"]
    assert [len(t["x"]) for t in data if t.get("meta", {}).get("role") == "trials"] == [4]


def test_cli_report_unknown_study_and_bad_output(sqlite_url: str, tmp_path: Path) -> None:
    make_fake(sqlite_url)
    res = CliRunner().invoke(main, ["report", "nope", "--storage", sqlite_url, "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 1
    assert res.stderr == f"error: no study named 'nope' in {sqlite_url} (studies there: fake); " \
                         "check the name with 'sweep ls' or pass --storage\n"
    bad = tmp_path / "missing" / "r.html"
    res = CliRunner().invoke(main, ["report", "fake", "--storage", sqlite_url, "-o", str(bad)])
    assert (res.exit_code, res.stderr) == (
        1, f"error: cannot write {str(bad)!r}: folder {str(bad.parent)!r} does not exist; create it or pick another -o\n")


def test_png_says_what_is_missing(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake(sqlite_url)
    args = ["report", "fake", "--storage", sqlite_url, "-o", str(tmp_path / "r.html"), "--png", str(tmp_path / "r.png")]
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    res = CliRunner().invoke(main, args)
    assert (res.exit_code, res.stderr) == (
        1, "error: --png needs a Chromium or Chrome browser for kaleido (BROWSER_PATH='/nonexistent/chromium' is not "
           "an executable); install one ('apt-get install chromium') or set BROWSER_PATH to its executable\n")
    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed
    res = CliRunner().invoke(main, args)
    assert (res.exit_code, res.stderr) == (
        1, "error: --png needs the Python package kaleido (>=1.0), which is not installed; "
           "install it with 'pip install kaleido'\n")
    assert not (tmp_path / "r.png").exists()


def test_setup_comes_from_the_stored_config_and_a_bad_one_is_ignored(sqlite_url: str, tiny_cfg: Any) -> None:
    study = make_fake(sqlite_url)
    study.set_user_attr("config", tiny_cfg(search={"sampler": "grid", "n_trials": 4}).to_json())
    assert collect_study(study).setup["sampler"] == "grid"
    study.set_user_attr("config", '{"name": "x", "unknown": 1}')  # written by some other version
    rec = collect_study(study)
    assert (rec.setup, len(rec.complete)) == ({}, 4)


def test_evidence_is_drawn_on_its_own_axis_and_a_disagreement_is_named(sqlite_url: str) -> None:
    study = make_fake(sqlite_url, name="ev")
    # as 'sweep evidence' stores it: the evidence prefers 1e-5 (trial 0), the study's rule (min) picks trial 1
    study.set_user_attr("evidence", {"0": {"lambda": 1e-5, "log_evidence": -900.0, "n_train": 1000},
                                     "1": {"lambda": 1e-4, "log_evidence": -1000.0, "n_train": 1000}})
    rec = collect_study(study)
    assert [(p.trial, p.per_example) for p in rec.evidence] == [(0, -0.9), (1, -1.0)]
    assert rec.evidence_pick is not None and (rec.evidence_pick.trial, rec.evidence_pick.agree) == (0, False)
    figs = report.build_figures([rec])
    (ev,) = _traces(figs["evidence-vs-lambda"], "evidence")
    assert list(ev.y) == [-0.9, -1.0] and figs["evidence-vs-lambda"].layout.yaxis2.overlaying == "y"
    (row,) = report.summary_rows([rec])
    assert row["evidence"] == "1e-05 (disagrees with min: 0.0001)"
    assert "evidence-vs-lambda" not in report.build_figures([collect_study(make_fake(sqlite_url, name="plain"))])


def test_the_summary_gives_the_pick_s_tau_epoch_when_the_refit_stored_its_size(sqlite_url: str) -> None:
    from sweep import config

    study = make_fake(sqlite_url, name="tau")
    (row,) = report.summary_rows([collect_study(study)])
    assert row["tau_epoch"] == "–"  # no config and no size: a study from before, drawn as before
    study.set_user_attr("config", config.validate({"name": "tau", "train": {"lr": 0.1, "batch_size": 64}},
                                                  source="t").to_json())
    study.set_user_attr("refit", {"min": {"rule": "min", "trial": 1, "lambda": 1e-4, "test_acc": 0.941, "n_train": 4000}})
    rec = collect_study(study)
    assert rec.tau_epoch == pytest.approx(64 / (0.1 * 1e-4 * 4000))  # 1600 epochs for min's pick, 1e-4
    (row,) = report.summary_rows([rec])
    assert row["tau_epoch"] == "1600"


def test_the_summary_names_the_data_factory_a_study_read(sqlite_url: str) -> None:
    from sweep import config

    for data, shown in (({}, "mnist-sample"), ({"factory": "examples.augmented:mnist_augmented"},
                                               "examples.augmented:mnist_augmented")):
        study = make_fake(sqlite_url, f"fake-{shown}")
        study.set_user_attr("config", config.validate({"name": study.study_name, "data": data}, source="t").to_json())
        assert collect_study(study).setup["dataset"] == shown
