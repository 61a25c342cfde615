"""Whole studies, end to end, three ways, in one run; each study's compute floor measured in the same run.

    PYTHONPATH=. python benchmarks/study_speed.py [--quick] [--json out.json] [--ways a,b,c] [--studies quickstart,cv]
                                                  [--repeat N]

Ways of running one study (the same lambdas' search, the same epochs, data and pruner):

- (a) ``optuna+seed``: what a user writes by hand today: Optuna's ``study.optimize`` (in-memory
  storage, the study's sampler and pruner) around the seed document's loop: a torchvision
  dataset with ``ToTensor``, ``DataLoader`` (batch 64, shuffle), ``nn.Module``, ``optim.SGD``
  with ``weight_decay = lambda``; per epoch it scores the validation set and reports it;
- (b) ``sweep, 1 at a time``: ``sweep.workers.run.run`` with ``search.batch = 1`` on a SQLite file;
- (c) ``sweep, populations``: the same with the study's ``search.batch``.

Studies: ``quickstart`` (studies/quickstart.toml as shipped: 20 TPE trials, 150 epochs on 3,000
sample digits, batches of 5, median pruner) and ``cv`` (16 lambdas on a grid x 5 folds, 2 epochs,
full Fashion-MNIST, no pruner, batch 16). ``--quick``: small versions of both, for a smoke test.
Neither (b) nor (c) refits here, and (a) has no refit: each row is the search alone.

The floor of a row is its FLOPs over this machine's matmul rate (a 1024^3 float32 matmul,
best of 20), measured before and after every row of this run, the best of those measurements
taken: on a shared machine a single measurement can catch a slow minute and make the floor
look easy (a run of 2026-12-02 read 102 GFLOP/s at its start, where the machine's best is about
190). The "near" column is the best of the two measurements around the row, to show the
machine's speed while the row ran; every "x floor" uses the run's best. The model-epochs the row actually trained (pruned
trials train fewer) times 409,088 FLOPs per training example (forward and backward of
SimpleNet 784-128-10, no input gradient) plus 203,264 per validation example scored.

``--repeat N`` runs every study's ways N times, round by round (a, b, c, then a, b, c again), each
row against its own round's (a) and (b), and ends with each way's median and range over the
rounds: on a shared machine one row's wall time can move by a third between runs, so a single
row's "x floor" is one draw, and the median of several in one run is the figure to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from seed_eval import seed_accuracy  # benchmarks/ is the script's folder, on sys.path
from torch import nn, optim
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from sweep import config
from sweep.objectives.prepared import fold_indices
from sweep.study import make_pruner, make_sampler
from sweep.training import data
from sweep.training.model import init_simplenet
from sweep.workers.run import run

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FLOPS = 2 * 2 * (784 * 128) + 3 * 2 * (128 * 10)  # per training example: forward + backward
EVAL_FLOPS = 2 * (784 * 128 + 128 * 10)  # per scored example: forward


@dataclass
class Row:
    study: str
    way: str
    wall_s: float
    model_epochs: int
    flops: float
    floor_s: float
    best_lambda: float | None
    repeat: int = 1
    near_gflops: float = 0.0  # the better rate of the two measurements around the row


def matmul_rate() -> float:
    """FLOP/s of a 1024^3 float32 matmul on the CPU, best of 20."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def study_configs(quick: bool) -> dict[str, config.StudyConfig]:
    qs = config.load(ROOT / "studies" / "quickstart.toml", ["train.device=cpu"])
    cv = config.validate({"name": "cv-16x5", "data": {"dataset": "fashion-mnist"},
                          "train": {"epochs": 2, "device": "cpu"},
                          "search": {"sampler": "grid", "n_trials": 16, "validation": "cv", "folds": 5,
                                     "pruner": "none", "batch": 16}}, source="study_speed")
    if quick:
        qs = config.load(ROOT / "studies" / "quickstart.toml",
                         ["train.device=cpu", "train.epochs=4", "search.n_trials=4", "search.batch=2"])
        cv = config.validate({"name": "cv-4x3", "data": {"dataset": "mnist-sample"}, "train": {"epochs": 1, "device": "cpu"},
                              "search": {"sampler": "grid", "n_trials": 4, "validation": "cv", "folds": 3,
                                         "pruner": "none", "batch": 4}}, source="study_speed")
    return {"quickstart": qs, "cv": cv}


def _write_idx(root: Path, ds: data.Dataset) -> None:
    """The shipped sample as MNIST IDX files, so torchvision's MNIST dataset (the seed's loader) reads it."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", ds.train), ("t10k", ds.test)):
        x, y = part.x.numpy().astype(np.uint8), part.y.numpy().astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, *x.shape) + x.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y)) + y.tobytes())


def seed_way(cfg: config.StudyConfig, data_dir: str) -> Row:
    """(a): Optuna's study.optimize around the seed document's DataLoader loop."""
    transform = transforms.ToTensor()
    ds = data.load(cfg.data.dataset, data_dir)  # fashion-mnist: unpacks the IDX files where torchvision looks
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.data.dataset == "mnist-sample":
            _write_idx(Path(tmp), ds)
            train = datasets.MNIST(root=tmp, train=True, download=False, transform=transform)
        else:
            train = datasets.FashionMNIST(root=data_dir, train=True, download=False, transform=transform)
        if cfg.search.validation == "cv":
            splits = [(a.tolist(), b.tolist()) for a, b in fold_indices(ds.train.y, folds=cfg.search.folds,
                                                                          seed=cfg.data.split_seed)]
        else:
            fit_i, val_i = data.holdout_split(ds.train.y, cfg.data.holdout, cfg.data.split_seed)
            splits = [(fit_i.tolist(), val_i.tolist())]
        counted = {"epochs": 0, "flops": 0.0}
        hidden = cfg.model.hidden
        assert isinstance(hidden, int), "the benchmark's studies are SimpleNet, one hidden width"

        def one_fit(lam: float, fit_i: list[int], val_i: list[int], trial: optuna.Trial | None) -> float:
            train_loader = DataLoader(Subset(train, fit_i), batch_size=cfg.train.batch_size, shuffle=True)
            val_loader = DataLoader(Subset(train, val_i), batch_size=cfg.train.batch_size)
            model = init_simplenet(hidden, cfg.train.seed)
            criterion = nn.CrossEntropyLoss()
            optimizer = optim.SGD(model.parameters(), lr=cfg.train.lr, weight_decay=lam)
            acc = 0.0
            for epoch in range(1, cfg.train.epochs + 1):
                model.train()
                for batch_data, target in train_loader:
                    optimizer.zero_grad()
                    loss = criterion(model(batch_data), target)
                    loss.backward()
                    optimizer.step()
                acc = seed_accuracy(model, val_loader)
                counted["epochs"] += 1
                counted["flops"] += len(fit_i) * TRAIN_FLOPS + len(val_i) * EVAL_FLOPS
                if trial is not None:
                    trial.report(acc, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
            return acc

        def objective(trial: optuna.Trial) -> float:
            lam = trial.suggest_float("lambda", cfg.search.lambda_low, cfg.search.lambda_high, log=True)
            if len(splits) == 1:
                return one_fit(lam, *splits[0], trial)
            return float(np.mean([one_fit(lam, f, v, None) for f, v in splits]))

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg), pruner=make_pruner(cfg))
        start = time.perf_counter()
        study.optimize(objective, n_trials=cfg.search.n_trials)
        wall = time.perf_counter() - start
    return Row(cfg.name, "(a) optuna+seed", wall, int(counted["epochs"]), counted["flops"], 0.0, study.best_params["lambda"])


def sweep_way(cfg: config.StudyConfig, batch: int) -> Row:
    """(b) and (c): ``sweep.workers.run.run`` on a fresh SQLite file, without the refit."""
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"batch": batch})})
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        start = time.perf_counter()
        study = run(cfg, url, refit_after=False)
        wall = time.perf_counter() - start
        n_train = len(data.load(cfg.data.dataset, cfg.data.data_dir).train)
        cv = cfg.search.validation == "cv"
        h = cfg.data.holdout
        n_val = n_train / cfg.search.folds if cv else (round(h * n_train) if h < 1 else h)
        per_epoch = (n_train - n_val) * TRAIN_FLOPS + n_val * EVAL_FLOPS
        # CV: each stored fold score is one fit of all epochs; holdout: the epochs each trial reported, per seed.
        epochs = sum(len(t.user_attrs.get("fold_scores", [])) * cfg.train.epochs if cv
                     else len(t.intermediate_values) * cfg.search.repeats for t in study.get_trials())
        flops = epochs * per_epoch
        best = study.best_params["lambda"] if any(t.value is not None for t in study.get_trials()) else None
    way = "(b) sweep, 1 at a time" if batch == 1 else f"(c) sweep, batch {batch}"
    return Row(cfg.name, way, wall, epochs, flops, 0.0, best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small studies, for a smoke test")
    ap.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    ap.add_argument("--ways", default="a,b,c", help="which ways to run (default a,b,c)")
    ap.add_argument("--studies", default="quickstart,cv", help="which studies to run (default quickstart,cv)")
    ap.add_argument("--data-dir", default=os.environ.get("SWEEP_DATA_DIR", "data"))
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="rounds of every study's ways (default 1)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    ways, names = args.ways.split(","), args.studies.split(",")
    if any(w not in ("a", "b", "c") for w in ways):
        ap.error(f"--ways takes a comma-separated list of a, b and c, got {args.ways!r}; e.g. --ways b,c")
    if bad := [n for n in names if n not in ("quickstart", "cv")]:
        ap.error(f"--studies takes quickstart and/or cv, got {', '.join(bad)!r}; e.g. --studies quickstart")
    torch.manual_seed(0)
    rates = [matmul_rate()]  # before and after every row
    rows: list[Row] = []
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul rate {rates[0] / 1e9:.0f} GFLOP/s; "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    for name, cfg in study_configs(args.quick).items():
        if name not in names:
            continue
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": args.data_dir})})
        for rnd, way in ((r, w) for r in range(1, args.repeat + 1) for w in ways):
            row = seed_way(cfg, args.data_dir) if way == "a" else sweep_way(
                cfg, 1 if way == "b" else int(cfg.search.batch) if cfg.search.batch != "auto" else 32)
            row.repeat = rnd
            rows.append(row)
            rates.append(matmul_rate())
            row.near_gflops = max(rates[-2:]) / 1e9
            print(f"  done: {row.study} {row.way}: {row.wall_s:.1f} s, {row.model_epochs} model-epochs, "
                  f"load {os.getloadavg()[0]:.2f}, matmul rate after it {rates[-1] / 1e9:.0f} GFLOP/s", flush=True)
    rate = max(rates)
    for r in rows:
        r.floor_s = r.flops / rate
    load = os.getloadavg()
    print(f"matmul rate {rate / 1e9:.0f} GFLOP/s (best of {len(rates)} measurements, before and after each row; "
          f"lowest {min(rates) / 1e9:.0f}); load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'study':<12} {'way':<24} {'wall s':>8} {'model-ep':>9} {'m-ep/s':>8} {'floor s':>8} {'x floor':>8} "
          f"{'a/this':>7} {'b/this':>7} {'near':>5}")
    for r in rows:
        same = {x.way[:3]: x.wall_s for x in rows if x.study == r.study and x.repeat == r.repeat}
        ratio = {k: f"{same[k] / r.wall_s:6.1f}x" if k in same else "      -" for k in ("(a)", "(b)")}
        print(f"{r.study:<12} {r.way:<24} {r.wall_s:8.1f} {r.model_epochs:9d} {r.model_epochs / r.wall_s:8.1f} "
              f"{r.floor_s:8.1f} {r.wall_s / r.floor_s:7.1f}x {ratio['(a)']} {ratio['(b)']} {r.near_gflops:5.0f}")
    summary = summarise(rows) if args.repeat > 1 else []
    if summary:
        print(f"over {args.repeat} rounds: {'study':<12} {'way':<24} {'median s':>9} {'x floor':>8} {'range':>12}")
        for m in summary:
            print(f"{'':<15} {m['study']:<12} {m['way']:<24} {m['median_wall_s']:9.1f} {m['median_x_floor']:7.1f}x "
                  f"{m['min_x_floor']:5.1f}-{m['max_x_floor']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_gflops": rate / 1e9, "load_average": load,
                                               "matmul_gflops_measured": [v / 1e9 for v in rates],
                                               "rows": [asdict(r) for r in rows],
                                               "summary": summary}, indent=2))


def summarise(rows: list[Row]) -> list[dict[str, object]]:
    """Each (study, way)'s median wall time and its "x floor" median and range over the rounds."""
    out: list[dict[str, object]] = []
    for key in dict.fromkeys((r.study, r.way) for r in rows):
        mine = [r for r in rows if (r.study, r.way) == key]
        x = [r.wall_s / r.floor_s for r in mine]
        out.append({"study": key[0], "way": key[1], "rounds": len(mine),
                    "median_wall_s": float(np.median([r.wall_s for r in mine])),
                    "median_x_floor": float(np.median(x)), "min_x_floor": min(x), "max_x_floor": max(x)})
    return out


if __name__ == "__main__":
    main()
