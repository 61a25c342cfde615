"""Selection rules on hand-made tables of trial scores, and the record ``sweep best`` prints."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep import best_lambda
from sweep.config import PARAM
from sweep.errors import NoCompleteTrialsError
from sweep.selection import TrialScore, best_record, scores_of
from sweep.selection.rules import choose

# Accuracies and SEs are binary fractions, so "within one SE" is exact in floating point.
TABLE = [
    TrialScore(number=0, lam=1e-5, mean=0.875, se=0.0625),
    TrialScore(number=1, lam=1e-4, mean=0.9375, se=0.0625),  # best mean
    TrialScore(number=2, lam=1e-3, mean=0.90625, se=0.25),  # within one SE of the best
    TrialScore(number=3, lam=1e-2, mean=0.875, se=0.5),  # exactly best - SE: within (>=)
    TrialScore(number=4, lam=1e-1, mean=0.8125, se=0.5),  # below best - SE, whatever its own SE
]


def test_min_is_the_best_mean() -> None:
    assert choose(TABLE, "min").number == 1


def test_1se_is_the_largest_lambda_within_one_se_of_the_best() -> None:
    pick = choose(TABLE, "1se")
    assert (pick.number, pick.lam) == (3, 1e-2)
    assert pick.lam > choose(TABLE, "min").lam


def test_1se_uses_the_best_trials_se_not_the_candidates() -> None:
    # Trial 4's own SE (0.5) would reach the best mean; the rule measures from the best trial's SE only.
    assert choose(TABLE[:2] + TABLE[4:], "1se").number == 1


def test_1se_equals_min_when_nothing_else_is_within() -> None:
    table = [TrialScore(0, 1e-4, 0.95, 0.001), TrialScore(1, 1e-3, 0.90, 0.001), TrialScore(2, 1e-2, 0.80, 0.1)]
    assert choose(table, "1se") == choose(table, "min") == table[0]


def test_1se_equals_min_when_the_best_is_the_largest_lambda() -> None:
    table = [TrialScore(0, 1e-4, 0.90, 0.01), TrialScore(1, 1e-2, 0.95, 0.01)]
    assert choose(table, "1se").number == choose(table, "min").number == 1


def test_ties() -> None:
    table = [
        TrialScore(0, 1e-3, 0.9, 0.0),
        TrialScore(1, 1e-5, 0.9, 0.0),
        TrialScore(2, 1e-2, 0.9, 0.0),
        TrialScore(3, 1e-1, 0.5, 0.0),
    ]
    # min: equal means go to the earliest trial (as Optuna's best_trial); 1se: to the largest lambda.
    assert choose(table, "min").number == 0
    assert choose(table, "1se").number == 2


def test_zero_se_keeps_only_ties_with_the_best() -> None:
    table = [TrialScore(0, 1e-4, 0.9, 0.0), TrialScore(1, 1e-3, 0.8999, 0.0)]
    assert choose(table, "1se").number == 0


def test_empty_and_unknown_rule() -> None:
    with pytest.raises(NoCompleteTrialsError):
        choose([], "1se")
    with pytest.raises(ValueError, match="rule must be one of min, 1se, 1se-paired, smooth, got 'max'"):
        choose(TABLE, "max")


def _trial(lam: float, value: float | None, se: float, state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={PARAM: lam}, distributions={PARAM: FloatDistribution(1e-5, 1.0, log=True)},
        user_attrs={"val_se": se}, intermediate_values={0: value if value is not None else 0.0},
    )


def test_scores_of_reads_val_se_and_skips_unfinished_trials() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(1e-4, 0.9, 0.02))
    study.add_trial(_trial(1e-3, 0.5, 0.1, TrialState.PRUNED))
    study.add_trial(_trial(1e-2, None, 0.1, TrialState.FAIL))
    assert scores_of(study.get_trials()) == [TrialScore(0, 1e-4, 0.9, 0.02)]


@pytest.fixture
def table_study(sqlite_url: str, tiny_cfg: Any) -> str:
    """A stored study holding TABLE, a CV study whose own rule is min, refit (by hand) for the 1se rule only."""
    study = optuna.create_study(study_name="table", storage=sqlite_url, direction="maximize")
    for s in TABLE:
        study.add_trial(_trial(s.lam, s.mean, s.se))
    study.set_user_attr("config", tiny_cfg(name="table", search={"validation": "cv", "rule": "min"}).to_json())
    study.set_user_attr("refit", {"1se": {"rule": "1se", "trial": 3, "lambda": 1e-2, "seed": 0, "test_acc": 0.91}})
    return sqlite_url


def test_best_record_names_both_rules(table_study: str) -> None:
    rec = best_record("table", storage=table_study, rule="1se").as_dict()
    assert rec["rule"] == "1se" and rec["validation"] == "cv"
    assert (rec["lambda"], rec["val_acc"], rec["val_se"], rec["trial"]) == (1e-2, 0.875, 0.5, 3)
    assert (rec["lambda_1se"], rec["val_acc_1se"], rec["val_se_1se"]) == (1e-2, 0.875, 0.5)
    assert (rec["lambda_min"], rec["val_acc_min"], rec["val_se_min"]) == (1e-4, 0.9375, 0.0625)
    assert rec["lambda_1se"] >= rec["lambda_min"]
    assert (rec["test_acc"], rec["refit_seed"]) == (0.91, 0)
    assert "lam" not in rec and "lam_min" not in rec


def test_test_accuracy_only_for_the_rule_that_was_refit(table_study: str) -> None:
    rec = best_record("table", storage=table_study, rule="min")
    assert (rec.lam, rec.test_acc, rec.refit_seed) == (1e-4, None, None)
    assert (rec.lam_1se, rec.lam_min) == (1e-2, 1e-4)
    assert best_lambda("table", storage=table_study, rule="1se") == 1e-2


def test_best_record_carries_every_rule_and_the_plausible_range(table_study: str) -> None:
    from sweep.selection import selection_of
    from sweep.selection.paired import critical_value

    rec = best_record("table", storage=table_study, rule="smooth").as_dict()
    sel = selection_of(optuna.load_study(study_name="table", storage=table_study))
    assert sel is not None and sel.smooth is not None
    assert (rec["lambda"], rec["trial"], rec["val_acc"]) == (sel.smooth.lam, None, sel.smooth.acc)
    assert (rec["lambda_smooth"], rec["smooth_low"], rec["smooth_high"]) == (sel.smooth.lam, *sel.smooth.interval)
    assert rec["test_acc"] is None  # only 1se was refit
    # TABLE has no paired units: the comparisons are unpaired, sqrt(se_best^2 + se^2), at the normal 5% quantile.
    z = critical_value(None)
    plausible = [s.lam for s in TABLE if s.number == 1 or 0.9375 - s.mean <= z * (0.0625**2 + s.se**2) ** 0.5]
    assert (rec["plausible_low"], rec["plausible_high"]) == (min(plausible), max(plausible)) == (1e-5, 1e-1)
    assert rec["lambda_1se_paired"] == choose(TABLE, "1se-paired").lam == 1e-1  # 0.125 <= sqrt(0.0625^2+0.5^2)
    assert rec["stopped"] is None


def test_correct_bits_round_trip_to_the_units_of_a_trial() -> None:
    import torch

    from sweep.objectives.attrs import correct_bits
    from sweep.selection.scores import _units

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x[:, 0].long(), 10).float()  # predicts the first pixel's value

    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    x = torch.zeros(11, 784)
    x[:, 0] = torch.tensor([3, 1, 0, 1, 5, 0, 2, 6, 0, 3, 5])  # wrong at 2, 5 and 8
    bits = correct_bits(Fixed(), x, y)
    assert len(bits) == 4  # 11 bits in 2 bytes, base64
    units = _units({"val_correct": [bits, bits], "n_val": 11})
    assert units == (1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0)
    # CV: fold-major fold_scores, the seeds of a fold averaged first.
    assert _units({"fold_scores": [0.9, 0.8, 0.7, 0.6], "folds": 2, "repeats": 2}) == (pytest.approx(0.85), pytest.approx(0.65))
    assert _units({"val_se": 0.01}) is None


@pytest.mark.parametrize("batch", [1, 2])
def test_holdout_trials_and_batch_members_store_their_per_example_correctness(tiny_cfg: Any, sqlite_url: str,
                                                                              batch: int) -> None:
    from sweep.workers.run import run as run_study

    study = run_study(tiny_cfg(name="bits", train={"epochs": 1}, search={"n_trials": 2, "batch": batch}), sqlite_url,
                      refit_after=False)
    scores = scores_of(study.get_trials())
    assert len(scores) == 2
    for s in scores:
        assert s.units is not None and len(s.units) == 1000
        assert sum(s.units) / 1000 == pytest.approx(s.mean, abs=0.0015)  # the population's own evaluation may round
