"""The drawing side of reports: Plotly figures built from ``report.records``.

Every string that comes from a user (study names) is HTML-escaped before it
goes into a figure: Plotly renders a subset of HTML in titles, legends and
hover labels and decodes entities, so an escaped name shows as the literal
text. Names reach hover labels through ``customdata``, never through the
template itself, so a ``%{...}`` in a name is not substituted either.

Each trace carries ``meta = {"role": ..., "study": ...}`` so tests (and
readers of the HTML) can find, say, the points of the trials.
"""

from __future__ import annotations

import math
from html import escape

import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale

from sweep.report.records import StudyRecord, TrialRecord, collect_history

STUDY_COLOURS = qualitative.Plotly
LAMBDA_SCALE = "Viridis"
TEST_COLOUR = "#d62728"
RULE_MARKERS = {"min": ("star", "λ_min"), "1se": ("diamond", "λ_1se"), "1se-paired": ("triangle-up", "λ_1se-paired"),
                "smooth": ("hexagram", "λ_smooth")}
RULE_TEXT = {"1se-paired": "bottom center"}  # apart from λ_min's label when both rules pick one trial
RULE_DASH = {"min": "dash", "1se": "dot", "1se-paired": "dashdot", "smooth": "longdash"}
LAMBDA_AXIS = {"type": "log", "title": {"text": "lambda (weight_decay), log scale"}, "exponentformat": "power"}
LAYOUT = {"template": "plotly_white", "height": 460, "legend": {"orientation": "h", "y": -0.22},
          "margin": {"t": 60, "r": 20, "l": 70, "b": 40}}


def _colour(i: int) -> str:
    return STUDY_COLOURS[i % len(STUDY_COLOURS)]


def _label(record: StudyRecord, what: str, many: bool) -> str:
    return f"{escape(record.name)}: {what}" if many else what


def _title(records: list[StudyRecord], what: str) -> str:
    names = ", ".join(escape(r.name) for r in records)
    return f"{what} — {names}"


def _rgba(colour: str, alpha: float) -> str:
    """A Plotly hex colour as rgba with ``alpha``."""
    h = colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _add_uncertainty(fig: go.Figure, rec: StudyRecord, colour: str, many: bool, word: str = "accuracy") -> None:
    """The plausible range as a shaded band, the smoothed curve with its band (both from ``sweep.selection``)."""
    name = escape(rec.name)
    ys = [t.val_acc for t in rec.complete if t.val_acc is not None]
    if rec.smooth is not None:
        ys += [min(rec.smooth.lower), max(rec.smooth.upper)]
    if rec.plausible is not None and ys:
        lo, hi = rec.plausible
        bottom, top = min(ys), max(ys)
        fig.add_trace(go.Scatter(
            x=[lo, lo, hi, hi, lo], y=[bottom, top, top, bottom, bottom], mode="lines", fill="toself",
            fillcolor=_rgba(colour, 0.08), line={"width": 0}, hoverinfo="skip",
            name=_label(rec, f"plausible range {lo:.3g} to {hi:.3g} (not significantly worse, paired)", many),
            meta={"role": "plausible", "study": name},
        ))
    if rec.smooth is not None:
        c = rec.smooth
        fig.add_trace(go.Scatter(
            x=list(c.lams) + list(reversed(c.lams)), y=list(c.upper) + list(reversed(c.lower)), mode="lines",
            fill="toself", fillcolor=_rgba(colour, 0.15), line={"width": 0}, hoverinfo="skip",
            name=_label(rec, f"smoothed {word}, 90% band", many), meta={"role": "smooth-band", "study": name},
        ))
        fig.add_trace(go.Scatter(
            x=list(c.lams), y=list(c.mean), mode="lines", line={"color": colour, "width": 2},
            name=_label(rec, f"smoothed {word} (Gaussian process)", many), customdata=[[name]] * len(c.lams),
            hovertemplate=f"%{{customdata[0]}}<br>lambda %{{x:.3g}}<br>smoothed {word} %{{y:.4f}}<extra></extra>",
            meta={"role": "smooth", "study": name},
        ))


def plot_accuracy_vs_lambda(records: list[StudyRecord]) -> go.Figure:
    """Validation accuracy (or the studies' metric, ``search.metric``) against lambda: a point per trial with its
    error bar, the plausible range, the smoothed curve with its band, each rule's pick, the test figure."""
    fig = go.Figure()
    many = len(records) > 1
    word = records[0].metric if len({r.metric for r in records}) == 1 else "score"
    for i, rec in enumerate(records):
        colour, name = _colour(i), escape(rec.name)
        _add_uncertainty(fig, rec, colour, many, word)
        done = sorted(rec.complete, key=lambda t: t.lam or 0.0)
        fig.add_trace(go.Scatter(
            x=[t.lam for t in done], y=[t.val_acc for t in done], mode="markers",
            name=_label(rec, f"validation {word} (trial)", many), marker={"color": colour, "size": 9},
            error_y={"type": "data", "array": [t.val_err or 0.0 for t in done], "visible": True, "thickness": 1},
            customdata=[[t.number, t.state, t.val_err or 0.0, name] for t in done],
            hovertemplate="%{customdata[3]}<br>trial %{customdata[0]} (%{customdata[1]})<br>lambda %{x:.3g}"
                          f"<br>validation {word} %{{y:.4f}} ± %{{customdata[2]:.4f}}<extra></extra>",
            meta={"role": "trials", "study": name},
        ))
        pruned = rec.pruned
        if pruned:
            fig.add_trace(go.Scatter(
                x=[t.lam for t in pruned], y=[t.val_acc for t in pruned], mode="markers",
                name=_label(rec, "pruned (last reported epoch)", many),
                marker={"color": "rgba(140,140,140,0.8)", "symbol": "circle-open", "size": 8},
                customdata=[[t.number, t.state, name] for t in pruned],
                hovertemplate="%{customdata[2]}<br>trial %{customdata[0]} (%{customdata[1]})<br>lambda %{x:.3g}"
                              f"<br>last validation {word} %{{y:.4f}}<extra></extra>",
                meta={"role": "pruned", "study": name},
            ))
        for rule, choice in rec.choices.items():
            symbol, label = RULE_MARKERS.get(rule, ("square", rule))
            fig.add_trace(go.Scatter(
                x=[choice.lam], y=[choice.val_acc], mode="markers+text", text=[label],
                textposition=RULE_TEXT.get(rule, "top center"),
                name=_label(rec, f"{label} = {choice.lam:.3g}", many),
                marker={"symbol": symbol, "size": 16, "color": colour, "line": {"width": 1.5, "color": "black"}},
                customdata=[["smoothed curve" if choice.trial is None else f"trial {choice.trial}", name]],
                hovertemplate=f"%{{customdata[1]}}<br>{label} (rule {escape(rule)}): %{{customdata[0]}}"
                              f"<br>lambda %{{x:.3g}}<br>validation {word} %{{y:.4f}}<extra></extra>",
                meta={"role": f"choice-{rule}", "study": name},
            ))
            if not many:  # one study: a vertical guide per rule; with several they would crowd the chart
                fig.add_vline(x=choice.lam, line={"dash": RULE_DASH.get(rule, "dash"), "color": "grey", "width": 1})
            if choice.test_acc is not None:
                fig.add_trace(go.Scatter(
                    x=[choice.lam], y=[choice.test_acc], mode="markers",
                    name=_label(rec, f"test {word}, refit at {label} ({choice.test_acc:.4f})", many),
                    # one study: red, so the test figure does not read as a validation point; several: the study colour
                    marker={"symbol": "x", "size": 13, "color": colour if many else TEST_COLOUR,
                            "line": {"width": 1, "color": "black"}},
                    customdata=[[name]],
                    hovertemplate=f"%{{customdata[0]}}<br>refit on the whole training set at {label}"
                                  f"<br>lambda %{{x:.3g}}<br>test {word} %{{y:.4f}}<extra></extra>",
                    meta={"role": f"test-{rule}", "study": name},
                ))
    fig.update_layout(title=_title(records, f"Validation {word} against lambda"), xaxis=LAMBDA_AXIS,
                      yaxis={"title": {"text": word}}, **LAYOUT)
    return fig


def plot_train_vs_val(records: list[StudyRecord]) -> go.Figure:
    """Training and validation accuracy against lambda: the gap shows over- and underfitting."""
    fig = go.Figure()
    many = len(records) > 1
    for i, rec in enumerate(records):
        colour, name = _colour(i), escape(rec.name)
        done = sorted((t for t in rec.complete if t.train_acc is not None), key=lambda t: t.lam or 0.0)
        xs = [t.lam for t in done]
        common = {"customdata": [[t.number, name] for t in done], "mode": "lines+markers"}
        fig.add_trace(go.Scatter(
            x=xs, y=[t.train_acc for t in done], name=_label(rec, "training accuracy", many),
            line={"color": colour, "dash": "dash"}, marker={"symbol": "triangle-up"},
            hovertemplate="%{customdata[1]}<br>trial %{customdata[0]}<br>lambda %{x:.3g}"
                          "<br>training accuracy %{y:.4f}<extra></extra>",
            meta={"role": "train", "study": name}, **common,
        ))
        fig.add_trace(go.Scatter(
            x=xs, y=[t.val_acc for t in done], name=_label(rec, "validation accuracy", many),
            line={"color": colour}, fill=None if many else "tonexty", fillcolor="rgba(150,150,150,0.15)",
            hovertemplate="%{customdata[1]}<br>trial %{customdata[0]}<br>lambda %{x:.3g}"
                          "<br>validation accuracy %{y:.4f}<extra></extra>",
            meta={"role": "val", "study": name}, **common,
        ))
    fig.update_layout(title=_title(records, "Training and validation accuracy against lambda (shaded: the gap)"),
                      xaxis=LAMBDA_AXIS, yaxis={"title": {"text": "accuracy"}}, **LAYOUT)
    return fig


def plot_evidence_vs_lambda(records: list[StudyRecord]) -> go.Figure:
    """Laplace log evidence per example against lambda (``sweep evidence``), on its own axis, with each study's
    validation accuracy on a second axis so the two opinions are read side by side."""
    fig = go.Figure()
    many = len(records) > 1
    for i, rec in enumerate(records):
        if not rec.evidence:
            continue
        colour, name = _colour(i), escape(rec.name)
        fig.add_trace(go.Scatter(
            x=[p.lam for p in rec.evidence], y=[p.per_example for p in rec.evidence], mode="lines+markers",
            name=_label(rec, "log evidence per example", many), line={"color": colour},
            customdata=[[p.trial, name, p.log_evidence] for p in rec.evidence],
            hovertemplate="%{customdata[1]}<br>trial %{customdata[0]}<br>lambda %{x:.3g}"
                          "<br>log evidence %{customdata[2]:.1f}<extra></extra>",
            meta={"role": "evidence", "study": name},
        ))
        done = sorted(rec.complete, key=lambda t: t.lam or 0.0)
        fig.add_trace(go.Scatter(
            x=[t.lam for t in done], y=[t.val_acc for t in done], mode="lines+markers", yaxis="y2",
            name=_label(rec, "validation accuracy", many), line={"color": colour, "dash": "dot"},
            hovertemplate="lambda %{x:.3g}<br>validation accuracy %{y:.4f}<extra></extra>",
            meta={"role": "val", "study": name},
        ))
        if rec.evidence_pick is not None:
            pick = rec.evidence_pick
            fig.add_vline(x=pick.lam, line={"color": colour, "dash": "dash"},
                          annotation_text=f"evidence {pick.lam:.3g}", annotation_position="top left")
    fig.update_layout(title=_title(records, "Laplace evidence and validation accuracy against lambda"),
                      xaxis=LAMBDA_AXIS, yaxis={"title": {"text": "log evidence per training example"}},
                      yaxis2={"title": {"text": "validation accuracy"}, "overlaying": "y", "side": "right"}, **LAYOUT)
    return fig


def plot_optimization_history(records: list[StudyRecord]) -> go.Figure:
    """Each complete trial's value and the best value so far, against trial number (as optuna draws it)."""
    fig = go.Figure()
    many = len(records) > 1
    for i, rec in enumerate(records):
        colour, name = _colour(i), escape(rec.name)
        points = collect_history(rec)
        nums = [p.number for p in points]
        fig.add_trace(go.Scatter(
            x=nums, y=[p.value for p in points], mode="markers", name=_label(rec, "trial value", many),
            marker={"color": colour, "opacity": 0.6}, customdata=[[name]] * len(points),
            hovertemplate="%{customdata[0]}<br>trial %{x}<br>validation accuracy %{y:.4f}<extra></extra>",
            meta={"role": "history-value", "study": name},
        ))
        fig.add_trace(go.Scatter(
            x=nums, y=[p.best for p in points], mode="lines", line={"color": colour, "shape": "hv"},
            name=_label(rec, "best so far", many), customdata=[[name]] * len(points),
            hovertemplate="%{customdata[0]}<br>after trial %{x}<br>best %{y:.4f}<extra></extra>",
            meta={"role": "history-best", "study": name},
        ))
    fig.update_layout(title=_title(records, "Optimization history"), xaxis={"title": {"text": "trial number"}},
                      yaxis={"title": {"text": "validation accuracy"}}, **LAYOUT)
    return fig


def _lambda_colours(trials: list[TrialRecord]) -> tuple[list[str], float, float]:
    logs = [math.log10(t.lam) for t in trials if t.lam]
    lo, hi = (min(logs), max(logs)) if logs else (-5.0, -2.0)
    span = hi - lo or 1.0
    colours = sample_colorscale(LAMBDA_SCALE, [((math.log10(t.lam) if t.lam else lo) - lo) / span for t in trials])
    return colours, lo, hi


def plot_learning_curves(record: StudyRecord) -> go.Figure:
    """Validation accuracy per epoch, one line per trial coloured by log10 lambda; pruned trials dashed."""
    fig = go.Figure()
    name = escape(record.name)
    trials = [t for t in record.trials if t.curve and t.lam is not None]
    colours, lo, hi = _lambda_colours(trials)
    for t, colour in zip(trials, colours, strict=True):
        pts = [p for p in t.curve if p.val_acc is not None]
        pruned = t.state == "PRUNED"
        fig.add_trace(go.Scatter(
            x=[p.epoch for p in pts], y=[p.val_acc for p in pts], mode="lines",
            line={"color": colour, "dash": "dash" if pruned else "solid", "width": 1.2 if pruned else 2},
            opacity=0.55 if pruned else 0.9, showlegend=False,
            name=f"trial {t.number}", customdata=[[t.number, t.lam, t.state, name]] * len(pts),
            hovertemplate="%{customdata[3]}<br>trial %{customdata[0]} (%{customdata[2]})<br>lambda %{customdata[1]:.3g}"
                          "<br>epoch %{x}<br>validation accuracy %{y:.4f}<extra></extra>",
            meta={"role": "curve-pruned" if pruned else "curve", "study": name},
        ))
    # An invisible trace carries the colour bar that explains the line colours.
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker={"colorscale": LAMBDA_SCALE, "cmin": lo, "cmax": hi, "color": [lo], "showscale": True,
                "colorbar": {"title": {"text": "log10 lambda"}}},
        meta={"role": "colorbar", "study": name},
    ))
    if any(t.state == "PRUNED" for t in trials):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="pruned trial", line={"color": "grey", "dash": "dash"},
                                 meta={"role": "legend", "study": name}))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="complete trial", line={"color": "grey"},
                                 meta={"role": "legend", "study": name}))
    fig.update_layout(title=f"Learning curves — {name}", xaxis={"title": {"text": "epoch"}},
                      yaxis={"title": {"text": "validation accuracy"}}, **LAYOUT)
    return fig
