"""How close does each rule's and each method's lambda land to the best one, at what wall time, and how many
trials does stop = "resolved" save?

    PYTHONPATH=. python benchmarks/search_quality.py --replicates 10 [--settings quickstart,seed]
        [--methods holdout,cv,evidence,marglik] [--ref-lambdas 32] [--ref-seeds 3] [--quickstart-epochs 150]
        [--trials 20] [--seed-stride 1000] [--json out.json]

Two settings on the shipped 5,000-digit sample, both from ``studies/quickstart.toml``:

- ``quickstart``: its own regime (lr 0.1, ``--quickstart-epochs`` epochs: the network overfits, lambda matters);
- ``seed``: the seed document's regime (lr 0.01, 5 epochs: underfit, lambda barely matters).

For each setting:

1. a dense reference curve: ``--ref-lambdas`` lambdas log-spaced over the study's range x
   ``--ref-seeds`` training seeds, each trained on the whole 4,000-digit training set with the
   population trainer (``fit_population``) and scored on the 1,000 test digits. The reference
   optimum is the lambda with the best mean test accuracy; the reference accuracy of any lambda
   is that mean curve interpolated in log10 lambda;
2. ``--replicates`` studies (TPE, the study file's pruner and batch), replicate r with
   ``search.seed = r * --seed-stride`` and ``train.seed = r``, each run to ``n_trials`` complete
   trials (a stride of 1, search seed r, is how docs/selection.md's figures were measured);
3. for each rule: the mean and worst gap (points of test accuracy) between the reference optimum
   and the reference accuracy at the rule's lambda, and how often that lambda is within half a
   decade of the optimum; how often the plausible range contains the optimum;
4. trials used with and without ``stop = "resolved"``: the run loop tests the stop rule under the
   study lock before each new batch, so a study with the rule ends at the first batch boundary
   where ``sweep.selection.stop_reason`` says resolved; this script applies that same function to the
   same prefixes of each replicate's trials (the trials of a study with the rule are that prefix:
   same seeds, same sampler) and reports the rules' gaps at that point too;
5. the same replicate's study with 5-fold CV, with the Laplace evidence as the validation, and the
   one-run marglik search (``search_methods``: ``--methods`` picks which), run one after another so
   their wall times share the machine's load: per method the gap of its lambda as in 3, and its mean
   wall time against the CV study's. The load average is printed with each replicate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
from search_methods import METHODS, Outcome, outcome, run_method, table  # benchmarks/ is the script's folder, on sys.path

from sweep import config as config_mod
from sweep.selection import RULES, Selection, min_trials_to_stop, scores_of, select, stop_reason
from sweep.training import data
from sweep.training.fit import resolve_device
from sweep.training.models import net_for
from sweep.training.population import fit_population

STUDY = Path(__file__).resolve().parent.parent / "studies" / "quickstart.toml"


def setting(name: str, *, epochs: int, trials: int | None) -> config_mod.StudyConfig:
    sets = ["train.device=cpu"]
    if name == "seed":
        sets += ["train.lr=0.01", "train.epochs=5"]
    else:
        sets += [f"train.epochs={epochs}"]
    if trials:
        sets.append(f"search.n_trials={trials}")
    return config_mod.load(STUDY, sets + [f'name="bench-{name}"'])


def reference(cfg: config_mod.StudyConfig, *, n_lams: int, n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(lambdas, mean test accuracy over seeds) from the population trainer on the whole training set."""
    device = resolve_device("cpu")
    ds = data.load(cfg.data.dataset, cfg.data.data_dir)
    x, y = data.to_device(ds.train, device)
    xt, yt = data.to_device(ds.test, device)
    net = net_for(cfg.model, in_shape=(784,), classes=10)  # the study's network (SimpleNet or an mlp)
    lams = np.geomspace(cfg.search.lambda_low, cfg.search.lambda_high, n_lams)
    accs = np.zeros((n_seeds, n_lams))
    for s in range(n_seeds):  # one population per seed: members sharing a seed take the fast path
        out = fit_population(x, y, xt, yt, lams=list(lams), seeds=[s] * n_lams, cfg=cfg.train, net=net)
        accs[s] = [r.history[-1].val_acc if r.state == "complete" else np.nan for r in out]
    return lams, np.nanmean(accs, axis=0)


def ref_at(lams: np.ndarray, curve: np.ndarray, lam: float) -> float:
    return float(np.interp(math.log10(lam), np.log10(lams), curve))


def optima(lams: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """The reference optimum: every lambda at the curve's maximum (a flat curve can tie)."""
    return lams[curve >= curve.max() - 1e-12]


def gap_at(lams: np.ndarray, curve: np.ndarray, lam: float) -> tuple[float, bool]:
    """(gap in points from the reference optimum to the curve at ``lam``, ``lam`` within half a decade of it)."""
    opts = optima(lams, curve)
    return 100 * (float(curve.max()) - ref_at(lams, curve, lam)), bool(np.min(np.abs(np.log10(opts / lam))) <= 0.5)


def assess(sel: Selection, lams: np.ndarray, curve: np.ndarray) -> dict[str, tuple[float, bool]]:
    """rule -> (gap in points to the reference optimum, within half a decade of it)."""
    return {rule: gap_at(lams, curve, p.lam) for rule, p in sel.picks.items()}


def batches(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """The trial counts at which the run loop asked for a new batch (members carry a ``population`` attribute)."""
    ends, i = [], 0
    while i < len(trials):
        i += int(trials[i].user_attrs.get("population", 1))
        ends.append(min(i, len(trials)))
    return ends


def stop_point(cfg: config_mod.StudyConfig, trials: list[optuna.trial.FrozenTrial]) -> int | None:
    """Trials a study with stop = "resolved" would have run (None: it never stops early)."""
    resolved_cfg = config_mod.validate({**cfg.model_dump(mode="json"),
                                        "search": {**cfg.search.model_dump(mode="json"), "stop": "resolved"}},
                                       source="benchmark")
    for end in batches(trials)[:-1]:
        scores = scores_of(trials[:end])
        if len(scores) < min_trials_to_stop(resolved_cfg):
            continue
        sel = select(scores, low=cfg.search.lambda_low, high=cfg.search.lambda_high)
        if stop_reason(sel, resolved_cfg) is not None:
            return end
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="quickstart,seed")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"any of {','.join(METHODS)}")
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--ref-lambdas", type=int, default=32)
    ap.add_argument("--ref-seeds", type=int, default=3)
    ap.add_argument("--quickstart-epochs", type=int, default=150)
    ap.add_argument("--trials", type=int, default=None, help="n_trials of each study [default: the study file's]")
    ap.add_argument("--seed-stride", type=int, default=1000,
                    help="replicate r's search.seed is r times this (kept from before sampler_seed hashed the reseeding)")
    ap.add_argument("--json", type=Path, default=None, help="also write every replicate's outcome here")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        ap.error(f"unknown methods {sorted(unknown)}; choose from {','.join(METHODS)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report: dict[str, dict] = {}
    for name in args.settings.split(","):
        report[name] = quality(name, args, methods)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def quality(name: str, args: argparse.Namespace, methods: list[str]) -> dict:
    """One setting: the reference curve, then every method on every replicate; prints the tables."""
    cfg = setting(name, epochs=args.quickstart_epochs, trials=args.trials)
    t0 = time.perf_counter()
    lams, curve = reference(cfg, n_lams=args.ref_lambdas, n_seeds=args.ref_seeds)
    opts = optima(lams, curve)
    print(f"\n## {name}: lr {cfg.train.lr}, {cfg.train.epochs} epochs, {cfg.search.n_trials} TPE trials, "
          f"batch {cfg.search.batch}, pruner {cfg.search.pruner}, {args.replicates} replicates "
          f"(search seed r x {args.seed_stride}); methods {','.join(methods)}; load average {load()}")
    print(f"reference: {args.ref_lambdas} lambdas x {args.ref_seeds} seeds in {time.perf_counter() - t0:.0f} s; "
          f"optimum lambda {opts[0]:.3g}..{opts[-1]:.3g} ({len(opts)} tied), test accuracy {curve.max():.4f}; "
          f"curve min {curve.min():.4f} at {lams[int(np.argmin(curve))]:.3g}", flush=True)
    print("reference curve: " + " ".join(f"{lam:.2g}:{acc:.4f}" for lam, acc in zip(lams, curve, strict=True)))

    full: dict[str, list[tuple[float, bool]]] = {rule: [] for rule in RULES}
    stopped: dict[str, list[tuple[float, bool]]] = {rule: [] for rule in RULES}
    outcomes: dict[str, list[Outcome]] = {m: [] for m in methods}
    covered, used, total = 0, [], []
    with tempfile.TemporaryDirectory(prefix="search-quality-") as folder:
        for r in range(args.replicates):
            line = []
            for method in methods:  # one after another within a replicate: the wall times share the machine's load
                trials, seconds = run_method(cfg, method, r, folder, stride=args.seed_stride)
                o = outcome(trials, seconds, cfg, lambda lam: gap_at(lams, curve, lam))
                outcomes[method].append(o)
                line.append(f"{method} {o.lam:.3g} ({o.gap:.2f} pt{', ' + o.note if o.note else ''}) {seconds:.0f} s")
                if method != "holdout":
                    continue
                sel = select(scores_of(trials), low=cfg.search.lambda_low, high=cfg.search.lambda_high)
                for rule, v in assess(sel, lams, curve).items():
                    full[rule].append(v)
                covered += bool(np.any((opts >= sel.plausible[0]) & (opts <= sel.plausible[1])))
                stop_at = stop_point(cfg, trials)
                end = stop_at or len(trials)
                used.append(end)
                total.append(len(trials))
                early = select(scores_of(trials[:end]), low=cfg.search.lambda_low, high=cfg.search.lambda_high)
                for rule, v in assess(early, lams, curve).items():
                    stopped[rule].append(v)
                line.append(f"holdout smooth {sel.picks['smooth'].lam:.3g}, plausible {sel.plausible[0]:.3g}.."
                            f"{sel.plausible[1]:.3g}, {len(trials)} trials ({len(sel.scores)} complete), stop = resolved: "
                            f"{'never' if stop_at is None else f'after {end} trials'}")
            print(f"  replicate {r} (load {load()}): " + "; ".join(line), flush=True)
    n = args.replicates
    if "holdout" in methods:
        print("\n| rule | mean gap (pt) | worst gap (pt) | in the optimum's decade | "
              "mean gap with stop (pt) | worst gap with stop (pt) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for rule in RULES:
            g = [v[0] for v in full[rule]]
            gs = [v[0] for v in stopped[rule]]
            print(f"| {rule} | {np.mean(g):.2f} | {max(g):.2f} | {sum(v[1] for v in full[rule])}/{n} | "
                  f"{np.mean(gs):.2f} | {max(gs):.2f} |")
        print(f"\nplausible range contains the reference optimum: {covered}/{n}")
        print(f"trials used (all states, pruned included): without stop mean {np.mean(total):.1f} "
              f"(min {min(total)}, max {max(total)}); with stop = \"resolved\": mean {np.mean(used):.1f} "
              f"(min {min(used)}, max {max(used)}); stopped early in {sum(u < t for u, t in zip(used, total, strict=True))}/{n}")
    print("\n" + "\n".join(table(outcomes)))
    print(f"setting time: {time.perf_counter() - t0:.0f} s; load average {load()}", flush=True)
    return {"epochs": cfg.train.epochs, "lr": cfg.train.lr, "n_trials": cfg.search.n_trials,
            "optimum": [float(opts[0]), float(opts[-1])], "optimum_acc": float(curve.max()),
            "methods": {m: [asdict(o) for o in got] for m, got in outcomes.items()}}


if __name__ == "__main__":
    main()
