"""Where a profiled ``sweep run`` spends its wall time: a table from a cProfile file.

    python -m cProfile -o run.prof -m sweep run studies/quickstart.toml --storage sqlite:///q.db
    python benchmarks/profile_breakdown.py run.prof [more.prof ...]

Each row sums the cumulative time of the functions named beside it (they do not call
each other, so nothing is counted twice); "other" is what is left of the whole run.
Works on profiles of this version and of the one before populations had folds
(``population._step``/``_evaluate`` there, ``stacks.step``/``evaluate`` here), and of the
versions before and after reports were written per epoch (``Trial.report``,
``trial_writes.report_many``, in ``storage.py`` before 2026-12-02),
and of the layout by concept (``storages/writes.py``, ``objectives/scheme.py``, ``objectives/prepared.py``,
``storages/optuna_compat.py``'s pruner view; the older file names stay for older profiles).
"""

from __future__ import annotations

import pstats
import sys

# (row, [(file suffix, function name), ...])
ROWS = [
    ("training steps", [("population.py", "_step"), ("stacks.py", "step"), ("stacks.py", "batch"),
                        ("stacks.py", "order"), ("population.py", "_order")]),
    ("evaluation (per epoch)", [("population.py", "_evaluate"), ("stacks.py", "evaluate")]),
    ("reports (storage writes)", [("_trial.py", "report"), ("storage.py", "report_many"), ("trial_writes.py", "report_many"),
                                  ("writes.py", "report_many")]),
    ("pruner (reads all trials)", [("_trial.py", "should_prune"), ("batch_trials.py", "should_prune"),
                                   ("optuna_compat.py", "should_prune")]),
    ("ask, tell, attributes (storage, sampler)", [("study.py", "ask"), ("study.py", "tell"),
                                                  ("_trial.py", "set_user_attr")]),
    ("refit (single fit, 4,000 digits)", [("objective.py", "refit"), ("scheme.py", "refit")]),
    ("data, study set-up", [("trial_data.py", "prepare"), ("prepared.py", "prepare"), ("study.py", "create_or_load")]),
    ("imports", [("<frozen importlib._bootstrap>", "_find_and_load")]),
]


def breakdown(path: str) -> list[tuple[str, float]]:
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _), (_, _, _, ct, _) in stats.items())
    out, used = [], 0.0
    for row, names in ROWS:
        t = 0.0
        for (file, _, func), (_, _, _, ct, callers) in stats.items():
            # only calls from outside the row's own functions (imports nest in imports)
            if any(file.endswith(suffix) and func == name for suffix, name in names) and not any(
                    c[2] == func for c in callers):
                t += ct
        out.append((row, t))
        used += t
    out.append(("other (epoch loop, Python, workers' polling)", total - used))
    out.append(("total", total))
    return out


def main() -> None:
    tables = [(p, breakdown(p)) for p in sys.argv[1:]]
    print(f"{'':<46}" + "".join(f"{p[-24:]:>26}" for p, _ in tables))
    for i, (row, _) in enumerate(tables[0][1]):
        cells = "".join(f"{t[i][1]:>17.1f} s {100 * t[i][1] / t[-1][1]:>5.1f}%" for _, t in tables)
        print(f"{row:<46}{cells}")


if __name__ == "__main__":
    main()
