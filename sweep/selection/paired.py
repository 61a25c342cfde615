"""Uncertainty of a lambda choice: paired standard errors, the plausible range, the smoother.

Plain numbers in, plain numbers out (no Optuna, no torch), so every piece is tested on
hand-made scores; ``sweep.selection.rules.select`` calls it once per study and everything else reads that.

Paired comparisons. Every trial of a study is scored on the same validation examples
(holdout) or the same folds (CV) with the same training seeds, so the difference between
two lambdas is known far better than either accuracy alone. A trial's *units* are its
per-unit scores: per validation example (correct = 1, wrong = 0, averaged over the training
seeds) for holdout, per fold (averaged over the fold's seeds) for CV. The paired SE of the
difference to the best trial is ``std(best_units - units, ddof=1) / sqrt(n_units)``.
Trials without units (made by other code) fall back to the unpaired ``sqrt(se_best^2 + se^2)``.

Plausible range: the trials not significantly worse than the best by a one-sided paired
test at level ``LEVEL`` (5%): ``diff <= crit * se_paired`` with ``crit`` the normal quantile
(holdout: hundreds of examples) or Student's t with ``n_units - 1`` degrees of freedom (CV folds).

Smoother: scikit-learn's Gaussian process on (log10 lambda, accuracy) with an RBF kernel and a
WhiteKernel, so the noise level is fitted from the trials, not assumed. Its mean's argmax is
the ``smooth`` pick; the 5%..95% quantiles of the argmax over posterior draws are that pick's interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.05  # one-sided level of the paired test behind the plausible range and of the smoother's bounds
GRID = 200  # points of the smoothed curve over the searched range (log-spaced)
DRAWS = 500  # posterior draws for the interval of the smoothed argmax


@dataclass(frozen=True)
class Comparison:
    """One trial against the best: the accuracy it gives up, that difference's SE, the test's verdict."""

    number: int
    lam: float
    diff: float  # best mean - this mean (>= 0)
    se: float  # paired SE of ``diff`` (unpaired when ``paired`` is False)
    crit: float  # one-sided critical value at ``LEVEL``
    paired: bool

    @property
    def plausible(self) -> bool:
        """Not significantly worse than the best (one-sided, level ``LEVEL``)."""
        return self.diff <= self.crit * self.se


def critical_value(dof: int | None) -> float:
    """One-sided critical value at ``LEVEL``: Student's t with ``dof`` degrees of freedom, the normal one for None."""
    if dof is None or dof >= 200:
        return float(stats.norm.ppf(1 - LEVEL))
    return float(stats.t.ppf(1 - LEVEL, max(dof, 1)))


def paired_diff(best_units: Sequence[float] | None, units: Sequence[float] | None, *,
                best_mean: float, mean: float, best_se: float, se: float,
                replicates: bool = False) -> tuple[float, float, int | None]:
    """(difference of means, its SE, degrees of freedom or None): paired when both have units of one length.
    ``replicates``: the units are paired bootstrap replicates of the two scores, whose differences' std is the SE."""
    diff = best_mean - mean
    if best_units is not None and units is not None and len(best_units) == len(units) and len(units) > 1:
        d = np.asarray(best_units, dtype=float) - np.asarray(units, dtype=float)
        if replicates:  # resamples that could not be scored (AUROC of one class) are NaN for every lambda alike
            return diff, float(np.nanstd(d, ddof=1)), None
        n = d.size
        # Many units (validation examples): the normal test; few (folds): Student's t.
        return diff, float(d.std(ddof=1) / math.sqrt(n)), n - 1
    return diff, math.hypot(best_se, se), None


def plausible_range(comparisons: Sequence[Comparison]) -> tuple[float, float]:
    """Lowest and highest lambda not significantly worse than the best (the best is always in it)."""
    lams = [c.lam for c in comparisons if c.plausible]
    return min(lams), max(lams)


@dataclass(frozen=True)
class SmoothFit:
    """The smoothed accuracy curve over the searched range and its pick."""

    grid: tuple[float, ...]  # lambdas, log-spaced over the searched range
    mean: tuple[float, ...]  # fitted mean accuracy at each
    lower: tuple[float, ...]  # mean - z*sd of the latent curve (z: one-sided ``LEVEL``)
    upper: tuple[float, ...]
    lam: float  # argmax of the mean, within the span of the trials
    acc: float  # fitted mean there
    sd: float  # latent sd there
    interval: tuple[float, float]  # 5%..95% of the argmax over posterior draws
    noise: float  # fitted noise sd of one trial (the WhiteKernel), in accuracy units


def fit_smooth(lams: Sequence[float], accs: Sequence[float], *, low: float, high: float) -> SmoothFit:
    """Gaussian-process smooth of ``accs`` against log10 ``lams``; see the module docstring."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    x = np.log10(np.asarray(lams, dtype=float))[:, None]
    y = np.asarray(accs, dtype=float)
    centre, scale = float(y.mean()), float(y.std()) or 1e-6
    span = max(math.log10(high) - math.log10(low), 1e-6)
    # Length scale at least a tenth of the range: a wiggle narrower than that is noise, not a curve.
    # The fixed constant term keeps the level of the curve uncertain (by about noise/sqrt(trials)): without
    # it, trials that scatter widely are read as a flat curve known exactly, and the stop rule would act.
    kernel = (ConstantKernel(1.0, "fixed") + ConstantKernel(1.0, (1e-3, 1e2)) * RBF(span / 3, (span / 10, span * 10))
              + WhiteKernel(0.5, (1e-6, 1e1)))
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, (y - centre) / scale)
    grid = np.geomspace(low, high, GRID)
    mu, cov = gp.predict(np.log10(grid)[:, None], return_cov=True)
    noise_var = float(gp.kernel_.k2.noise_level)
    cov = cov - noise_var * np.eye(GRID)  # the latent curve: without the noise of one more trial
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    inside = (grid >= min(lams) * (1 - 1e-9)) & (grid <= max(lams) * (1 + 1e-9))  # no extrapolated pick
    if not inside.any():
        inside[np.argmin(np.abs(np.log10(grid) - x[0, 0]))] = True
    best = int(np.flatnonzero(inside)[np.argmax(mu[inside])])
    rng = np.random.default_rng(0)
    draws = rng.multivariate_normal(mu[inside], cov[np.ix_(inside, inside)], size=DRAWS, method="eigh")
    picks = grid[inside][draws.argmax(axis=1)]
    z = critical_value(None)
    to_acc = lambda v: centre + scale * v  # noqa: E731
    return SmoothFit(
        grid=tuple(float(g) for g in grid), mean=tuple(float(v) for v in to_acc(mu)),
        lower=tuple(float(v) for v in to_acc(mu - z * sd)), upper=tuple(float(v) for v in to_acc(mu + z * sd)),
        lam=float(grid[best]), acc=float(to_acc(mu[best])), sd=float(scale * sd[best]),
        interval=(float(np.quantile(picks, 0.05)), float(np.quantile(picks, 0.95))),
        noise=float(scale * math.sqrt(noise_var)),
    )


def flip(fit: SmoothFit) -> SmoothFit:
    """A curve fitted to ``-value`` (a minimised metric, as the rules maximise) in the metric's own units, and back:
    the mean and the pick negated, the band's bounds negated and swapped."""
    neg = lambda v: tuple(-x for x in v)  # noqa: E731
    return SmoothFit(grid=fit.grid, mean=neg(fit.mean), lower=neg(fit.upper), upper=neg(fit.lower), lam=fit.lam,
                     acc=-fit.acc, sd=fit.sd, interval=fit.interval, noise=fit.noise)


def resolved(fit: SmoothFit, best_se: float, sign: int = 1) -> tuple[bool, float, float]:
    """(done, the most any lambda could still gain, the threshold): a regret bound, as Optuna's terminator.

    The most a lambda of the searched range could still beat the best by is bounded by the
    smoothed curve's highest upper bound minus its highest lower bound. Done when that bound is
    no larger than ``best_se``, the standard error of the best trial's own accuracy: a gain
    smaller than the error with which the chosen lambda's accuracy is known cannot be told apart.
    """
    fit = fit if sign > 0 else flip(fit)  # the bound is on the gain, larger is better
    regret = max(fit.upper) - max(fit.lower)
    return bool(regret <= best_se), float(regret), float(best_se)
