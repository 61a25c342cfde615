"""Choosing lambda from the stored trials, computed once and read by every figure a user sees.

Read by concept:

- ``scores.py``: each complete trial as the rules see it (``TrialScore``) and a study's ``ScoreTable``;
- ``rules.py``: the registry of rules (``REGISTRY``: ``min``, ``1se``, ``1se-paired``, ``smooth``), one
  entry each with its pick, and ``select``, every rule's pick as one ``Selection``;
- ``metrics.py``: the registry of metrics (``search.metric``): direction, scikit-learn score, paired units;
- ``paired.py``: the paired statistics, the plausible range and the smoothed curve the rules rest on;
- ``stop.py``: the stop rule (``search.stop = "resolved"``);
- ``best.py``: reading a study's choice back (``sweep best``, ``best_lambda``, ``sweep evidence``);
- ``transfer.py``: the rules that carry a tuned lambda to another run (``sweep best --for``; docs/transfer.md).

``sweep best``, the report, the dashboard figure, ``best_lambda`` and the refit all read one
``Selection``. Selection never prints and never trains.
"""

from sweep.selection.best import (
    BestRecord,
    EvidenceChoice,
    best_for,
    best_record,
    evidence_choice,
    evidence_pick,
    load_study,
    refit_matches,
    selection_of,
    study_metric,
    study_run,
)
from sweep.selection.metrics import REGISTRY as METRICS
from sweep.selection.metrics import Metric, metric_named
from sweep.selection.rules import REGISTRY, RULES, Pick, Rule, Selection, rule_named, rules_help, select
from sweep.selection.scores import ScoreTable, TrialScore, best_score, scores_of, sign_of, state_counts
from sweep.selection.stop import min_trials_to_stop, stop_reason
from sweep.selection.transfer import DEFAULT_RULE as DEFAULT_TRANSFER
from sweep.selection.transfer import Run, Transferred, parse_for, tau_epoch

__all__ = [
    "DEFAULT_TRANSFER", "METRICS", "REGISTRY", "RULES", "BestRecord", "EvidenceChoice", "Metric", "Pick", "Rule", "Run",
    "ScoreTable", "Selection", "Transferred", "TrialScore", "best_for", "best_record", "best_score", "evidence_choice",
    "evidence_pick", "load_study", "metric_named", "min_trials_to_stop", "parse_for", "refit_matches", "rule_named",
    "rules_help", "scores_of", "select", "selection_of", "sign_of", "state_counts", "stop_reason", "study_metric",
    "study_run", "tau_epoch",
]
