"""The stop rule, ``search.stop = "resolved"``: stop a study once no lambda left could be told apart
from the best (docs/selection.md). It reads the same ``Selection`` as every figure, so the reason a
study stopped and the pick it reports agree.
"""

from __future__ import annotations

from sweep.config import StudyConfig
from sweep.selection.paired import resolved
from sweep.selection.rules import Selection


def min_trials_to_stop(cfg: StudyConfig) -> int:
    """Complete trials before ``stop = "resolved"`` may act: the samplers' random start (and at least 5)."""
    return min(cfg.search.n_trials, max(5, min(10, cfg.search.n_trials // 2)))


def stop_reason(sel: Selection, cfg: StudyConfig) -> str | None:
    """Why the study may stop now under ``search.stop = "resolved"``, or None to go on (docs/selection.md)."""
    n = len(sel.scores)
    if cfg.search.stop != "resolved" or n < min_trials_to_stop(cfg) or sel.smooth is None:
        return None
    best = sel.picks["min"]
    done, regret, threshold = resolved(sel.smooth, best.val_se, sel.scores[0].sign)
    if not done:
        return None
    return (f"resolved after {n} complete trials: no lambda in the searched range can beat the best by more than "
            f"{regret:.4f} (the smoothed curve's highest upper bound minus its highest lower bound), which is "
            f"within the best trial's standard error ({threshold:.4f})")
