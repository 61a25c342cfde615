"""Paired standard errors, the plausible range, the smoother and the stop test, on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.selection.paired import Comparison, SmoothFit, critical_value, fit_smooth, paired_diff, plausible_range, resolved
from sweep.selection.rules import choose, select
from sweep.selection.scores import TrialScore, compare


def test_critical_values_are_the_one_sided_5_percent_quantiles() -> None:
    assert critical_value(None) == pytest.approx(1.6448536, abs=1e-6)
    assert critical_value(2) == pytest.approx(2.9199856, abs=1e-6)  # Student's t, 2 degrees of freedom
    assert critical_value(4) == pytest.approx(2.1318468, abs=1e-6)


def test_paired_se_is_the_se_of_the_per_unit_differences() -> None:
    best = [1, 1, 1, 0, 1, 1, 0, 1]
    other = [1, 0, 1, 0, 1, 1, 1, 0]
    d = [1 - 1, 1 - 0, 0, 0, 0, 0, 0 - 1, 1 - 0]  # 1 - 1 = 0 ... written out by hand
    direct = math.sqrt(sum((x - sum(d) / 8) ** 2 for x in d) / 7) / math.sqrt(8)
    diff, se, dof = paired_diff(best, other, best_mean=0.75, mean=0.625, best_se=0.15, se=0.17)
    assert (diff, dof) == (0.125, 7)
    assert se == pytest.approx(direct, rel=1e-12)
    # Shared successes and failures cancel: the paired SE is far below the unpaired one.
    assert se < math.hypot(0.15, 0.17)


def test_without_units_the_comparison_is_unpaired() -> None:
    diff, se, dof = paired_diff(None, [1.0, 0.0], best_mean=0.9, mean=0.8, best_se=0.03, se=0.04)
    assert (diff, se, dof) == (pytest.approx(0.1), pytest.approx(0.05), None)


# Five trials scored on the same 10 validation examples; trial 1 is the best (9/10).
UNITS = {
    0: [1, 1, 1, 1, 1, 1, 1, 0, 0, 1],  # 8/10: loses example 7 to the best, wins none
    1: [1, 1, 1, 1, 1, 1, 1, 1, 0, 1],  # 9/10: best
    2: [1, 1, 1, 1, 1, 1, 0, 1, 1, 1],  # 9/10 tie, later trial
    3: [0, 1, 1, 1, 1, 1, 1, 0, 1, 1],  # 8/10 but wins one and loses two: noisy
    4: [0, 0, 0, 1, 1, 0, 1, 1, 0, 1],  # 5/10
}
LAMS = {0: 1e-5, 1: 1e-4, 2: 1e-3, 3: 3e-3, 4: 1e-2}


def _scores() -> list[TrialScore]:
    return [TrialScore(n, LAMS[n], float(np.mean(u)), math.sqrt(np.mean(u) * (1 - np.mean(u)) / 10), tuple(map(float, u)))
            for n, u in UNITS.items()]


def test_comparisons_plausible_range_and_1se_paired_against_a_direct_computation() -> None:
    scores = _scores()
    comps = {c.number: c for c in compare(scores, choose(scores, "min"))}
    assert choose(scores, "min").number == 1
    for n, u in UNITS.items():
        d = np.array(UNITS[1], float) - np.array(u, float)
        se = 0.0 if n == 1 else d.std(ddof=1) / math.sqrt(10)
        assert comps[n].diff == pytest.approx(0.0 if n == 1 else d.mean())
        assert comps[n].se == pytest.approx(se)
        assert comps[n].paired and comps[n].crit == pytest.approx(critical_value(9))
    # By hand: trial 0 gives up 0.1 with SE 0.1 (1.83*0.1 >= 0.1: plausible), trial 3 0.1 with SE 0.1795,
    # trial 4 0.4 with SE 0.163 (0.4 > 1.83*0.163: significantly worse).
    assert {n for n, c in comps.items() if c.plausible} == {0, 1, 2, 3}
    assert plausible_range(list(comps.values())) == (1e-5, 3e-3)
    # 1se-paired: the largest lambda whose difference is within one paired SE: trial 3 (0.1 <= 0.1795).
    assert choose(scores, "1se-paired").number == 3
    # Unpaired 1se with the best's binomial SE (0.0949) keeps only the 9/10 trials: the largest is trial 2.
    assert choose(scores, "1se").number == 2


def test_plausible_range_with_cv_folds_uses_student_t() -> None:
    best = TrialScore(0, 1e-4, 0.95, 0.01, (0.94, 0.95, 0.96))
    worse = TrialScore(1, 1e-3, 0.93, 0.01, (0.925, 0.93, 0.935))  # 0.02 below on every fold: SE 0.0029
    close = TrialScore(2, 1e-2, 0.94, 0.01, (0.95, 0.93, 0.94))  # diffs -0.01, 0.02, 0.02: SE 0.01
    comps = compare([best, worse, close], best)
    assert comps[1].crit == pytest.approx(critical_value(2)) and not comps[1].plausible
    assert comps[2].se == pytest.approx(0.01) and comps[2].plausible  # 0.01 <= 2.92 * 0.01
    assert plausible_range(comps) == (1e-4, 1e-2)


def _peak(lams: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.95 - 0.02 * (np.log10(lams) + 3.0) ** 2 + rng.normal(0, noise, lams.size)


def test_smooth_finds_the_peak_of_a_noisy_curve_and_its_interval_holds_it() -> None:
    lams = np.geomspace(1e-5, 1e-1, 25)
    fit = fit_smooth(list(lams), list(_peak(lams, 0.004)), low=1e-5, high=1e-1)
    assert abs(math.log10(fit.lam) + 3) < 0.3  # the true peak is at 1e-3
    assert fit.interval[0] <= 1e-3 <= fit.interval[1]
    assert 0.001 < fit.noise < 0.01  # the WhiteKernel found the noise level (0.004)
    assert fit.acc == pytest.approx(0.95, abs=0.005)
    i = fit.grid.index(fit.lam)
    assert fit.lower[i] < fit.mean[i] < fit.upper[i]


def test_smooth_beats_the_best_trial_on_average_when_the_peak_is_noisy() -> None:
    """Over 20 noisy draws of one curve, the smoothed pick is closer (in log10 lambda) to the true peak."""
    lams = np.geomspace(1e-5, 1e-1, 12)
    err_smooth, err_min = [], []
    for seed in range(20):
        accs = _peak(lams, 0.01, seed)
        fit = fit_smooth(list(lams), list(accs), low=1e-5, high=1e-1)
        err_smooth.append(abs(math.log10(fit.lam) + 3))
        err_min.append(abs(math.log10(lams[int(np.argmax(accs))]) + 3))
    assert np.mean(err_smooth) < np.mean(err_min)


def test_select_with_too_few_lambdas_to_smooth_uses_the_best_trial() -> None:
    scores = [TrialScore(0, 1e-4, 0.9, 0.01), TrialScore(1, 1e-3, 0.91, 0.01)]
    sel = select(scores)
    assert sel.smooth is None and sel.picks["smooth"].trial == 1 and sel.picks["smooth"].lam == 1e-3


def test_resolved_is_the_regret_bound_against_the_best_trials_se() -> None:
    grid = tuple(float(v) for v in np.geomspace(1e-5, 1e-2, 4))
    fit = SmoothFit(grid, mean=(0.90, 0.95, 0.94, 0.80), lower=(0.88, 0.945, 0.93, 0.78), upper=(0.92, 0.955, 0.95, 0.82),
                    lam=grid[1], acc=0.95, sd=0.003, interval=(grid[0], grid[2]), noise=0.01)
    # max upper 0.955 - max lower 0.945 = 0.01: the most any lambda could still gain.
    assert resolved(fit, 0.0101) == (True, pytest.approx(0.01), 0.0101)
    assert resolved(fit, 0.0099)[0] is False


def test_comparison_is_frozen_and_carries_its_verdict() -> None:
    c = Comparison(3, 1e-3, diff=0.02, se=0.01, crit=1.645, paired=True)
    assert not c.plausible and Comparison(3, 1e-3, 0.016, 0.01, 1.645, True).plausible
