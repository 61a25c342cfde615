"""Reports: one self-contained HTML file for one or more studies, a PNG of the main chart, the dashboard figure.

Data comes from ``report.records`` (plain records), figures from ``report.figures``;
this module lays them out as HTML (plotly.js inlined, so the file opens with no
internet), writes files atomically, and hands the main chart to optuna-dashboard.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Sequence
from html import escape
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from sweep import __version__
from sweep.errors import NoCompleteTrialsError, ReportError, first_line
from sweep.report.figures import (
    plot_accuracy_vs_lambda,
    plot_evidence_vs_lambda,
    plot_learning_curves,
    plot_optimization_history,
    plot_train_vs_val,
)
from sweep.report.records import StudyRecord, collect_study
from sweep.report.tables import fmt
from sweep.selection import RULES, load_study

DASHBOARD_FIGURE_ID = "sweep-accuracy-vs-lambda"  # fixed, so saving again replaces the figure instead of adding one
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; } th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; }
th { text-align: left; background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: 0.9rem; max-width: 60rem; }
"""


def load_records(names: Sequence[str], storage: str | None) -> list[StudyRecord]:
    """One ``StudyRecord`` per distinct name, read from the store (reading only)."""
    return [collect_study(load_study(name, storage)) for name in names]


def build_figures(records: list[StudyRecord]) -> dict[str, go.Figure]:
    """The report's charts by HTML id, in page order."""
    figs = {
        "accuracy-vs-lambda": plot_accuracy_vs_lambda(records),
        "train-vs-val": plot_train_vs_val(records),
        "optimization-history": plot_optimization_history(records),
    }
    if any(rec.evidence for rec in records):
        figs["evidence-vs-lambda"] = plot_evidence_vs_lambda(records)
    for i, rec in enumerate(records):
        figs[f"learning-curves-{i}"] = plot_learning_curves(rec)
    return figs


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def summary_rows(records: list[StudyRecord]) -> list[dict[str, str]]:
    """The summary table as strings (not yet escaped): one row per study."""
    rows = []
    with_evidence = any(rec.evidence_pick is not None for rec in records)
    for rec in records:
        row = {"study": rec.name, "sampler": str(rec.setup.get("sampler", "–")),
               "dataset": str(rec.setup.get("dataset", "–"))}
        row["plausible range"] = "–" if rec.plausible is None else f"{rec.plausible[0]:.3g} – {rec.plausible[1]:.3g}"
        row["tau_epoch"] = fmt(rec.tau_epoch, ".4g", none="–")  # the study rule's pick, in the unit that transfers
        for rule in RULES:
            c = rec.choices.get(rule)
            row[f"lambda {rule}"] = fmt(c.lam if c else None, ".3g", none="–")
            row[f"val {rule}"] = "–" if c is None else f"{c.val_acc:.4f} ± {c.val_se:.4f}"
            row[f"test {rule}"] = fmt(c.test_acc if c else None, ".4f", none="–")
        for state in ("COMPLETE", "PRUNED", "FAIL"):
            row[state.lower()] = str(rec.counts.get(state, 0))
        if with_evidence:
            pick = rec.evidence_pick
            row["evidence"] = "–" if pick is None else f"{pick.lam:.3g}" + (
                "" if pick.agree else f" (disagrees with {pick.rule}: {pick.rule_lam:.3g})")
        row["wall time"] = _duration(rec.wall_seconds)
        rows.append(row)
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f'<td{"" if k in ("study", "sampler", "dataset") else " class=n"}>{escape(v)}</td>'
                         for k, v in r.items()) + "</tr>"
        for r in rows
    )
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


NOTES = {
    "accuracy-vs-lambda": "One point per complete trial with its standard error (across CV folds when the study has "
                          "them, else the binomial SE of the validation split); pruned trials as open grey circles at "
                          "their last reported value. λ_min: best validation accuracy; λ_1se: the largest lambda within "
                          "one standard error of it; λ_1se-paired: the largest lambda within one paired standard error "
                          "of the difference to the best; λ_smooth: the peak of the smoothed curve (a Gaussian process, "
                          "with its 90% band). Shaded: the plausible range, lambdas not significantly worse than the "
                          "best by a one-sided paired test at level 5%. ✕: test accuracy of the model refit on the "
                          "whole training set.",
    "train-vs-val": "Where training accuracy stays far above validation accuracy the network overfits and more "
                    "regularization may help; where both fall together lambda is too large (underfitting).",
    "optimization-history": "How fast the sampler found its best lambda: each trial's validation accuracy and the "
                            "best value so far.",
}


def render_html(records: list[StudyRecord], figures: dict[str, go.Figure]) -> str:
    """The whole page as one string: plotly.js inlined, every user string escaped."""
    names = ", ".join(r.name for r in records)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(f'lambda-sweep report: {names}')}</title>",
        f"<style>{CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>lambda-sweep report: {escape(names)}</h1>",
        f'<p class="note">Made {escape(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))} '
        f"by lambda-sweep {escape(__version__)}. Accuracy is on the validation split (or CV folds) of the training "
        "set; the test set is used once, for the refit at the chosen lambda.</p>",
        "<h2>Summary</h2>", _table(summary_rows(records)),
    ]
    for div_id, fig in figures.items():
        if div_id in NOTES:
            parts.append(f'<p class="note">{escape(NOTES[div_id])}</p>')
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                                 config={"displaylogo": False, "responsive": True}))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it over: readers never see half a file."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ReportError(f"cannot write {str(target)!r}: folder {str(directory)!r} does not exist; create it or pick another -o")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        raise ReportError(f"cannot write {str(target)!r}: {err.strerror}; pick a writable path with -o") from None
    return target


def write_report(names: Sequence[str], storage: str | None, path: str | os.PathLike[str]) -> list[StudyRecord]:
    """Write the HTML report of studies ``names`` to ``path`` (atomically); return the records it drew."""
    records = load_records(names, storage)
    empty = [r.name for r in records if not r.complete]
    if empty:
        raise NoCompleteTrialsError(
            f"study {empty[0]!r} has no complete trial to chart; see 'sweep show {empty[0]}' for its trials "
            "and run it with 'sweep run'"
        )
    write_atomic(path, render_html(records, build_figures(records)))
    return records


def save_dashboard_figure(study: optuna.Study) -> str:
    """Store the accuracy-vs-lambda chart in the study, where optuna-dashboard shows it beside its own plots."""
    from optuna_dashboard import save_plotly_graph_object

    fig = plot_accuracy_vs_lambda([collect_study(study)])
    return save_plotly_graph_object(study, fig, graph_object_id=DASHBOARD_FIGURE_ID)


def find_chromium() -> str | None:
    """The browser kaleido will use: ``BROWSER_PATH`` when set, else a Chromium or Chrome on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_png(fig: go.Figure, path: str | os.PathLike[str], *, width: int = 1100, height: int = 520) -> Path:
    """Render ``fig`` to a PNG with kaleido and a local Chromium; say what is missing when one of them is."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ReportError("--png needs the Python package kaleido (>=1.0), which is not installed; "
                          "install it with 'pip install kaleido'") from None
    browser = find_chromium()
    if browser is None:
        where = f"BROWSER_PATH={os.environ['BROWSER_PATH']!r} is not an executable" if os.environ.get("BROWSER_PATH") \
            else "no chromium on PATH"
        raise ReportError(f"--png needs a Chromium or Chrome browser for kaleido ({where}); install one "
                          "('apt-get install chromium') or set BROWSER_PATH to its executable")
    os.environ["BROWSER_PATH"] = browser  # kaleido (choreographer) reads it
    target = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "chart.png"
        try:
            fig.write_image(str(out), format="png", width=width, height=height, scale=1.5)
        except Exception as err:  # kaleido raises many kinds; the user needs one line
            raise ReportError(f"kaleido could not render the PNG with {browser}: {first_line(err)}") from None
        return write_atomic(target, out.read_bytes())
