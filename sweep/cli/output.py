"""How the ``sweep`` command shows things: library log lines, trial progress, the best lambda's line,
rows as JSON or CSV. Only the CLI imports this module; the library returns values and logs."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from typing import Any

import click

from sweep.report.tables import fmt


class EchoHandler(logging.Handler):
    """Library log records as plain lines on the current stderr (click's, so tests capture them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"sweep: {record.getMessage()}", err=True)
        if record.exc_info:  # --debug only: the library logs tracebacks at DEBUG
            click.echo(logging.Formatter().formatException(record.exc_info), err=True)


class TrialProgress:
    """A progress bar of complete trials on a terminal; one line per trial otherwise (logs, CI).

    Nothing is printed before the first trial ends, so set-up errors stay one line.
    """

    def __init__(self, name: str, target: int) -> None:
        self.name, self.target, self.done = name, target, 0
        self.bar: Any = None
        self.tty = sys.stderr.isatty()

    def update(self, p: Any) -> None:
        lam = "-" if p.lam is None else f"{p.lam:.3g}"
        line = f"trial {p.trial} {p.state.lower()} lambda={lam} val={fmt(p.value)}"
        if p.best_lam is not None:
            line += f" | best {p.best_value:.4f} at lambda={p.best_lam:.3g}"
        if not self.tty:
            click.echo(f"[{p.complete}/{self.target}] {line}", err=True)
            return
        if self.bar is None:
            self.bar = click.progressbar(length=self.target, label=self.name, file=sys.stderr, show_pos=True,
                                         item_show_func=lambda s: s)
            self.bar.__enter__()
        self.bar.update(p.complete - self.done, line)
        self.done = p.complete

    def __enter__(self) -> TrialProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def best_line(rec: Any, label: str = "accuracy") -> str:
    """What ``sweep run`` and ``sweep refit`` print: the pick, its figures in the study's metric (``label``: how
    ``sweep.selection.metrics`` names it), the plausible range."""
    where = f"trial {rec.trial}" if rec.trial is not None else "smoothed curve"
    test = rec.test_acc if rec.metric == "accuracy" else rec.test_score
    if rec.validation in ("evidence", "marglik"):
        score = f"log evidence {rec.val_acc:.1f} nats"  # no validation split: the trial's value is its evidence
    else:
        score = f"validation {label} {rec.val_acc:.4f} ± {rec.val_se:.4f}"
    return (f"best lambda {rec.lam:.4g} ({where}, rule {rec.rule}): {score}, test {label} {fmt(test)} "
            f"(refit on the whole training set); plausible lambdas {rec.plausible_low:.3g} to {rec.plausible_high:.3g}"
            + tau_part(rec))


def tau_part(rec: Any) -> str:
    """The pick's decay timescale, the quantity that transfers (docs/transfer.md); empty for older studies."""
    if rec.tau_epoch is None:
        return ""
    return f"; tau_epoch {rec.tau_epoch:.4g} epochs (n_train {rec.n_train})"


def echo_transfer(rec: Any, moved: Any, fmt_: str | None) -> None:
    """``sweep best --for``: the lambda for the other run under every transfer rule, as lines (``fmt_`` None), JSON or
    env; ``value`` is the default rule's lambda alone, for ``$(sweep best NAME --for ... --format value)``."""
    if fmt_ == "value":
        click.echo(repr(moved.lambdas[moved.default]))
        return
    if fmt_ == "json":
        click.echo(json.dumps({**rec.as_dict(), **moved.as_dict()}, indent=2))
        return
    if fmt_ == "env":
        click.echo(f"SWEEP_LAMBDA={moved.lambdas[moved.default]!r}")
        click.echo(f"SWEEP_TRANSFER={moved.default}")
        for name, lam in moved.lambdas.items():
            key = name.upper().replace("-", "_")
            low, high = moved.ranges[name]
            click.echo(f"SWEEP_LAMBDA_{key}={lam!r}\nSWEEP_PLAUSIBLE_LOW_{key}={'' if low is None else repr(low)}\n"
                       f"SWEEP_PLAUSIBLE_HIGH_{key}={'' if high is None else repr(high)}")
        return
    runs = ", ".join(f"{k}={getattr(moved.dst, k):g}" for k in ("n_train", "epochs", "batch_size", "lr"))
    click.echo(f"lambda {moved.lam:.4g} (rule {rec.rule}) of study {rec.study}, carried to {runs}:")
    for name, lam in moved.lambdas.items():
        low, high = moved.ranges[name]
        mark = "  (default)" if name == moved.default else ""
        click.echo(f"  {name:10} {lam:.4g}  plausible {fmt(low, '.3g')} to {fmt(high, '.3g')}{mark}")


def flat_line(rec: Any) -> str | None:
    """The flat answer's line, printed beside the pick when the trials cannot be told apart (``selection.flat``)."""
    return None if not rec.flat else f"flat: {rec.flat_reason}"


def echo_rows(rows: list[dict[str, Any]], fmt_: str) -> bool:
    """Print ``rows`` as JSON or CSV and return True; False for ``table`` (the caller draws it)."""
    if fmt_ == "json":
        click.echo(json.dumps(rows, indent=2))
        return True
    if fmt_ == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
        return True
    return False
