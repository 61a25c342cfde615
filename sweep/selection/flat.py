"""The flat answer: when a study's complete trials cannot be told apart, the pick is said to be a tie-break.

A study is flat when

- every complete trial scores the same (an underfit network, a majority-class classifier), or
- the pick predicts one class for every validation example (its score is the share of that class, whatever
  lambda), for a metric scored from the predicted class alone (``Metric.thresholded``: trials of the others
  store no ``predicted_classes``), or
- no complete trial is significantly worse than the best by the paired test behind the plausible range
  (docs/selection.md): the lambdas searched make no difference the validation data can measure.

``sweep run`` and ``sweep best`` print the reason beside the pick, and ``sweep best --format json`` carries
``flat`` (true or false) and ``flat_reason``.
"""

from __future__ import annotations

from sweep.selection.scores import ScoreTable


def flat_reason(table: ScoreTable) -> str | None:
    """Why ``table``'s trials cannot be told apart (one clause), or None when the best is measurably better than some."""
    scores, best = table.scores, table.best
    if len(scores) < 2:
        return None
    lams = sorted(s.lam for s in scores)
    where = f"{len(scores)} complete trials, lambda {lams[0]:.3g} to {lams[-1]:.3g}"
    if len({s.mean for s in scores}) == 1:
        return f"every complete trial scores {best.mean:.4f} ({where}): the pick is a tie-break"
    if best.predicted == 1:
        return (f"the pick (trial {best.number}) predicts one class for every validation example: its score is "
                "that class's share, not a sign that lambda helps")
    if all(c.plausible for c in table.comparisons):
        return (f"no complete trial is significantly worse than the best ({where}): lambda in this range makes "
                "no measurable difference")
    return None
