"""The ``sweep`` command: parse, call the library, print, exit.

Every ``SweepError`` becomes one line on stderr (``error: ...``) and its exit
code (1, or 2 for config and usage); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from typing import Any

import click
import optuna
from sqlalchemy.exc import SQLAlchemyError

from sweep import config as config_mod
from sweep.cli.output import EchoHandler, TrialProgress, best_line, echo_rows, echo_transfer, flat_line
from sweep.errors import EmptyStoreError, SweepError
from sweep.report.tables import fmt
from sweep.selection import RULES, metric_named, rules_help
from sweep.storages.store import storage_failure


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SweepError as err:
            if ctx.meta.get("sweep.debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as err:
            if ctx.meta.get("sweep.debug"):
                raise
            click.echo(f"error: {storage_failure(err)}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted; the current trial was ended, run the same command again to resume",
                       err=True)
            ctx.exit(130)


STORAGE = click.option("--storage", envvar="SWEEP_STORAGE", default=None, metavar="URL",
                       help="SQLAlchemy URL of the study store [env SWEEP_STORAGE; default sqlite:///sweeps.db].")


OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                         help="Override a study-file value (repeatable), e.g. --set train.epochs=3.")
NEW_NAME = click.option("--name", default=None, help="Store the study under this name instead of the file's.")


def _load_study_file(study_file: str, overrides: tuple[str, ...], name: str | None) -> config_mod.StudyConfig:
    extra = list(overrides) + ([f"name={json.dumps(name, ensure_ascii=False)}"] if name is not None else [])
    return config_mod.load(study_file, extra)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="lambda-sweep")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Find the best L2 regularization strength (lambda, weight_decay) with Optuna studies of MNIST training jobs."""
    ctx.meta["sweep.debug"] = debug
    optuna.logging.set_verbosity(logging.DEBUG if debug else logging.WARNING)
    # The library's own notices (store gone and back, a trial taken over after a pause): one line each on stderr.
    lib = logging.getLogger("sweep")
    if not any(isinstance(h, EchoHandler) for h in lib.handlers):
        lib.addHandler(EchoHandler())
        lib.propagate = False
    lib.setLevel(logging.DEBUG if debug else logging.INFO)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@STORAGE
@OVERRIDES
@NEW_NAME
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (this one + N-1 'sweep worker' processes) on the same store.")
def run(study_file: str, storage: str | None, overrides: tuple[str, ...], name: str | None, workers: int) -> None:
    """Run (or resume) the sweep described by STUDY_FILE, then refit the chosen lambda and test it once."""
    from sweep.selection import best_record
    from sweep.workers import loop as worker
    from sweep.workers.run import run as run_study

    cfg = _load_study_file(study_file, overrides, name)
    with TrialProgress(cfg.name, cfg.search.n_trials) as progress, worker.stop_on_signals(worker.StopFlag()) as stop:
        run_study(cfg, storage, on_trial=progress.update, workers=workers, stop=stop)
    if stop:  # the trial was ended cleanly: say how to resume, exit 128 + the signal (130 Ctrl-C, 143 SIGTERM)
        click.echo(f"error: stopped by {signal.Signals(stop.signum or signal.SIGINT).name}; the current trial was "
                   "ended, run the same command again to resume", err=True)
        sys.exit(128 + (stop.signum or signal.SIGINT))
    rec = best_record(cfg.name, storage=storage, rule=cfg.search.rule)
    if rec.stopped:
        click.echo(f"stopped before n_trials = {cfg.search.n_trials}: {rec.stopped}")
    _echo_pick(rec)


def _echo_pick(rec: Any) -> None:
    """The best line, and the flat answer's line beside it when there is one."""
    click.echo(best_line(rec, metric_named(rec.metric).label))
    if flat_line(rec):
        click.echo(flat_line(rec))


TABLE_FORMAT = click.option("--format", "fmt_", type=click.Choice(["table", "json", "csv"]), default="table",
                            show_default=True, help="table for people; json or csv (the same rows) for programs.")


@main.command("ls")
@STORAGE
@TABLE_FORMAT
def list_studies(storage: str | None, fmt_: str) -> None:
    """List the studies in the store."""
    from sweep.report.tables import study_rows

    rows = study_rows(storage)
    if echo_rows(rows, fmt_):
        return
    if not rows:
        click.echo("no studies")
        return
    click.echo(f"{'study':30} {'complete':>8} {'running':>7} {'pruned':>6} {'failed':>6} {'best val':>8} {'lambda':>9}")
    for r in rows:
        click.echo(f"{r['study']:30} {r['complete']:>8} {r['running']:>7} {r['pruned']:>6} {r['failed']:>6} "
                   f"{fmt(r['best_val']):>8} {fmt(r['best_lambda'], '.3g'):>9}")


@main.command()
@click.argument("name")
@STORAGE
@TABLE_FORMAT
def show(name: str, storage: str | None, fmt_: str) -> None:
    """Show the trials of study NAME."""
    from sweep.report.tables import trial_rows

    rows = trial_rows(name, storage)  # errors before any output
    if echo_rows(rows, fmt_):
        return
    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"  # val_score: another metric's column
    key, head = ("val_acc", "val acc") if metric == "accuracy" else ("val_score", f"val {metric}")
    click.echo(f"{'trial':>5} {'state':9} {'lambda':>9} {'tau_epoch':>9} {head:>8} {'train acc':>9} {'epochs':>6} "
               f"{'seconds':>8}  note")
    for r in rows:
        click.echo(f"{r['number']:>5} {r['state']:9} {fmt(r['lambda'], '.3g'):>9} {fmt(r['tau_epoch'], '.4g'):>9} "
                   f"{fmt(r[key]):>8} {fmt(r['train_acc']):>9} {r['epochs']:>6} {fmt(r['seconds'], '.1f'):>8}  {r['note']}")


RULE_HELP = rules_help()  # from the registry: a new rule documents itself here


@main.command()
@click.argument("name")
@STORAGE
@click.option("--format", "fmt", type=click.Choice(["value", "json", "env"]), default=None,
              help="value: the bare number [default; with --for, a line per rule unless named].")
@click.option("--rule", type=click.Choice(list(RULES)), default=None,
              help=f"{RULE_HELP} [default: the study's own search.rule].")
@click.option("--for", "for_run", default=None, metavar="KEY=VALUE,...",
              help="Carry the lambda to another run (keys n_train, epochs, batch_size, lr; the rest are the study's "
                   "own) under every transfer rule (docs/transfer.md).")
def best(name: str, storage: str | None, fmt: str | None, rule: str | None, for_run: str | None) -> None:
    """Print the chosen lambda of study NAME."""
    from sweep.selection import best_for, best_record, parse_for

    if for_run is not None:
        changes = parse_for(for_run)  # a bad key or value: one line, before the store is opened
        echo_transfer(best_record(name, storage=storage, rule=rule),
                      best_for(name, changes, storage=storage, rule=rule), fmt)
        return
    rec = best_record(name, storage=storage, rule=rule)
    if fmt in (None, "value"):
        click.echo(repr(rec.lam))
        if flat_line(rec):  # beside the number, on stderr: $(sweep best NAME) still reads the number alone
            click.echo(flat_line(rec), err=True)
    elif fmt == "json":
        click.echo(json.dumps(rec.as_dict(), indent=2))
    else:
        click.echo(f"SWEEP_LAMBDA={rec.lam!r}")
        click.echo(f"SWEEP_RULE={rec.rule}")
        if rec.metric == "accuracy":
            click.echo(f"SWEEP_VAL_ACC={rec.val_acc!r}")
            click.echo(f"SWEEP_TEST_ACC={'' if rec.test_acc is None else repr(rec.test_acc)}")
        else:  # another metric names its figures as the JSON does
            click.echo(f"SWEEP_METRIC={rec.metric}")
            click.echo(f"SWEEP_VAL_SCORE={rec.val_acc!r}")
            click.echo(f"SWEEP_TEST_SCORE={'' if rec.test_score is None else repr(rec.test_score)}")
        click.echo(f"SWEEP_FLAT={'1' if rec.flat else ''}")
        record = rec.as_dict()  # every rule's lambda the record publishes, in registry order, then the range
        for key in [k for k in record if k.startswith("lambda_")] + ["plausible_low", "plausible_high"] + \
                [k for k in ("n_train", "tau_epoch") if k in record]:
            value = record[key]
            click.echo(f"SWEEP_{key.upper()}={'' if value is None else repr(value)}")


@main.command("refit")
@click.argument("name")
@STORAGE
@click.option("--rule", type=click.Choice(list(RULES)), required=True, help=RULE_HELP)
def refit_cmd(name: str, storage: str | None, rule: str) -> None:
    """Refit the lambda RULE picks for study NAME on the whole training set and store its test accuracy."""
    from sweep.selection import best_record, load_study
    from sweep.study import refit_for

    refit_for(load_study(name, storage), rule)
    _echo_pick(best_record(name, storage=storage, rule=rule))


@main.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME [NAME ...]")
@STORAGE
@click.option("-o", "--output", default="report.html", show_default=True, metavar="PATH",
              help="Where to write the self-contained HTML report (opens with no internet).")
@click.option("--png", default=None, metavar="PATH",
              help="Also write the accuracy-vs-lambda chart as a PNG (needs kaleido and Chromium; BROWSER_PATH picks one).")
def report(names: tuple[str, ...], storage: str | None, output: str, png: str | None) -> None:
    """Write a Plotly report of one or more studies: accuracy against lambda, the gap, history, learning curves.

    Several NAMEs are overlaid on the same axes with a summary table. The accuracy-vs-lambda
    chart is also stored in each study, where optuna-dashboard shows it.
    """
    from sweep.report import html as report_mod
    from sweep.report.figures import plot_accuracy_vs_lambda
    from sweep.selection import load_study

    records = report_mod.write_report(names, storage, output)
    n = sum(len(r.trials) for r in records)
    click.echo(f"wrote {output} ({len(records)} stud{'y' if len(records) == 1 else 'ies'}, {n} trials)")
    if png:
        report_mod.write_png(plot_accuracy_vs_lambda(records), png)
        click.echo(f"wrote {png}")
    for name in dict.fromkeys(names):
        report_mod.save_dashboard_figure(load_study(name, storage))


@main.command()
@click.argument("name")
@STORAGE
def evidence(name: str, storage: str | None) -> None:
    """Compute the Laplace log evidence of each complete trial's lambda of study NAME (needs the evidence extra).

    Each lambda is refit on the whole training set; the figures are stored with the study, and
    'sweep report' draws them beside the validation curve.
    """
    from sweep.objectives.evidence import evidence_of_study
    from sweep.selection import evidence_choice

    def on_trial(number: int, lam: float, value: float) -> None:
        click.echo(f"trial {number} lambda={lam:.3g} log evidence {value:.1f}", err=True)

    evidence_of_study(name, storage=storage, on_trial=on_trial)
    pick = evidence_choice(name, storage=storage)
    click.echo(f"evidence picks lambda {pick.lam:.4g} (trial {pick.trial}, log evidence {pick.log_evidence:.1f}); "
               f"rule {pick.rule} picks lambda {pick.rule_lam:.4g} "
               f"({'smoothed curve' if pick.rule_trial is None else f'trial {pick.rule_trial}'})"
               + ("" if pick.agree else ": they disagree, see docs/evidence.md"))


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=str))
@STORAGE
@OVERRIDES
@NEW_NAME
def submit(study_file: str, storage: str | None, overrides: tuple[str, ...], name: str | None) -> None:
    """Store the study of STUDY_FILE (with its config) for workers to run; print its name and return."""
    from sweep.study import create_or_load

    cfg = _load_study_file(study_file, overrides, name)
    create_or_load(cfg, storage)
    click.echo(cfg.name)


@main.command("worker")
@STORAGE
@click.option("--study", "study_name", default=None, metavar="NAME",
              help="Work on this study only [default: every lambda-sweep study with budget left].")
@click.option("--wait", is_flag=True, help="When there is no work, keep polling for new studies instead of exiting.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS",
              help="How often to look again while other workers hold the remaining trials.")
@click.option("--no-refit", is_flag=True, hidden=True, help="Leave the refit to the caller (sweep run --workers).")
@click.option("--trust", "trust", multiple=True, metavar="PREFIX",
              help="Import factories under this module prefix (repeatable) [env SWEEP_TRUSTED_FACTORIES]; "
                   "a study naming any other is skipped (refused with --study).")
def worker_cmd(storage: str | None, study_name: str | None, wait: bool, poll: float, no_refit: bool,
               trust: tuple[str, ...]) -> None:
    """Run trials of studies that still have budget; exit when there is no work left (or keep polling with --wait)."""
    from sweep.workers import loop as worker
    from sweep.workers.trust import trusted_prefixes

    def on_trial(p: Any) -> None:
        lam = "-" if p.lam is None else f"{p.lam:.3g}"
        click.echo(f"#{p.trial} {p.state.lower()} lambda={lam} val={fmt(p.value)} ({p.complete}/{p.target} complete)",
                   err=True)

    with worker.stop_on_signals(worker.StopFlag()) as stop:
        summary = worker.work(storage, study_name=study_name, wait=wait, poll=poll, refit=not no_refit,
                              trust=trusted_prefixes(trust),
                              on_trial=on_trial, stop=stop)
    click.echo(worker.describe(summary))
    if summary.interrupted is not None:
        what = signal.Signals(summary.interrupted).name
        if summary.interrupted_trial is not None:
            click.echo(f"error: stopped by {what}; trial {summary.interrupted_trial} was failed as 'interrupted' "
                       "and its lambda queued again", err=True)
        else:
            click.echo(f"error: stopped by {what} between trials", err=True)
        sys.exit(128 + summary.interrupted)


@main.command()
@STORAGE
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study store (Ctrl-C stops it)."""
    import optuna_dashboard

    from sweep.storages.store import mask, open_storage, resolve_url

    while True:  # a server started beside an empty database (compose, Kubernetes) waits for the first study
        try:
            store = open_storage(storage, read_only=True)
            break
        except EmptyStoreError as err:
            click.echo(f"sweep: {err}; waiting", err=True)
            time.sleep(10)
    click.echo(f"optuna-dashboard for {mask(resolve_url(storage))} at http://{host}:{port}/", err=True)
    try:
        optuna_dashboard.run_server(store, host=host, port=port)
    except OSError as err:
        raise SweepError(f"cannot serve the dashboard on {host}:{port}: {err.strerror}; choose another --port") from None
