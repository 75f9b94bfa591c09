"""Coverage of intervals over seeds, by simulation at the study's seed counts (2, 3 and 5).

Each check draws ``REPS`` data sets of n seeds, builds the nominal 95% interval of each with the
vectorised core that :func:`alignlab.stats.seed_interval` / :func:`rate_over_seeds` call (a test
below checks they agree row by row), and counts how often the interval holds the true mean.
With 20,000 data sets the binomial standard error of a coverage near 0.95 is
sqrt(0.95 * 0.05 / 20000) = 0.0015, so the bounds [0.93, 0.97] sit >= 13 SE from 0.95.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from alignlab import stats
from alignlab.stats import bootstrap, rate_over_seeds, seed_interval, wilson

REPS = 20_000
Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
SEEDS = (2, 3, 5)


def _coverage(lo: np.ndarray, hi: np.ndarray, truth: float) -> float:
    return float(((lo <= truth) & (truth <= hi)).mean())


def _c4(n: int) -> float:
    """E[s] / sigma for n normal values (s with ddof=1)."""
    return math.sqrt(2 / (n - 1)) * math.exp(special.gammaln(n / 2) - special.gammaln((n - 1) / 2))


def _t_width(n: int, sigma: float) -> float:
    """Expected width of the 95% t interval for n normal values of SD ``sigma``."""
    return 2 * float(sps.t.ppf(0.975, n - 1)) * _c4(n) * sigma / math.sqrt(n)


# (name, sampler(rng, shape), true mean, SD). beta(3, 6) and beta(6, 3) are bounded with skewness
# +-0.41, the kind of spread per-seed rates show away from 0 and 1.
CONTINUOUS = [
    ("normal", lambda rng, shape: rng.normal(0.3, 0.1, shape), 0.3, 0.1),
    ("beta(3,6)", lambda rng, shape: rng.beta(3, 6, shape), 1 / 3, math.sqrt(18 / (81 * 10))),
    ("beta(6,3)", lambda rng, shape: rng.beta(6, 3, shape), 2 / 3, math.sqrt(18 / (81 * 10))),
]


@pytest.mark.parametrize("n", SEEDS)
@pytest.mark.parametrize(("name", "draw", "mean", "sd"), CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_t_interval_over_seeds_covers_95_percent(
    n: int, name: str, draw: Sampler, mean: float, sd: float
) -> None:
    rng = np.random.default_rng(1000 * n + len(name))
    values = draw(rng, (REPS, n))
    _, lo, hi = stats._t_bounds(values, 0.95)
    assert 0.93 <= _coverage(lo, hi, mean) <= 0.97, name
    # Mean width against the normal-theory expectation 2 t_{n-1} c4(n) sigma / sqrt(n): exact for
    # the normal (Monte Carlo SE of the ratio <= 0.6% at n = 2, so +-3% is 5 SE); for the betas
    # E[s] is not c4 sigma exactly (measured ratio 1.00-1.02), hence +-5%.
    ratio = float((hi - lo).mean()) / _t_width(n, sd)
    tol = 0.03 if name == "normal" else 0.05
    assert 1 - tol <= ratio <= 1 + tol, (name, ratio)


def test_t_interval_undercovers_strongly_skewed_values() -> None:
    # The documented limit (alignlab.stats module docs): beta(1, 4), skewness 1.05, covers ~0.91
    # at 3 seeds. No method fixes this from 3 values without assumptions; the docs say so.
    values = np.random.default_rng(5).beta(1, 4, (REPS, 3))
    _, lo, hi = stats._t_bounds(values, 0.95)
    assert 0.89 <= _coverage(lo, hi, 0.2) < 0.93


@pytest.mark.parametrize(("n", "expected"), [(2, 0.50), (3, 0.75)])
def test_percentile_bootstrap_over_seeds_covers_far_less(n: int, expected: float) -> None:
    """Contrast: the percentile bootstrap over 2-3 seeds is [min, max] (ideal bootstrap: every one
    of the n^n resamples, quantiles of the discrete distribution), which holds a symmetric
    distribution's mean with probability 1 - 2 (1/2)^n."""
    values = np.random.default_rng(n).normal(0.3, 0.1, (REPS, n))
    resamples = np.array(list(itertools.product(range(n), repeat=n)))
    means = values[:, resamples].mean(axis=-1)
    lo, hi = np.quantile(means, [0.025, 0.975], axis=1, method="inverted_cdf")
    # Binomial SE of the coverage is <= 0.0036; +-0.02 is > 5 SE.
    assert _coverage(lo, hi, 0.3) == pytest.approx(expected, abs=0.02)
    _, t_lo, t_hi = stats._t_bounds(values, 0.95)
    assert _coverage(t_lo, t_hi, 0.3) > _coverage(lo, hi, 0.3) + 0.15
    # alignlab's own bootstrap (2000 resamples) gives that same [min, max] at 3 seeds.
    if n == 3:
        for row in values[:5]:
            est = bootstrap(row, n_boot=2000, seed=0)
            assert (est.lo, est.hi) == (row.min(), row.max())


def _rates(p: np.ndarray, trials: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).binomial(trials, p).astype(np.float64)


# Per-seed true rates: spread between seeds (beta(20, 20): SD 0.08 around 0.5), near the ceiling
# (beta(45, 5): mean 0.9, skewness -0.8) and at it (every seed's rate 0.995, where most seeds
# score 50/50 and the t interval collapses to [1, 1]).
RATES = [
    ("beta(20,20)", lambda rng, shape: rng.beta(20, 20, shape), 0.5),
    ("beta(45,5)", lambda rng, shape: rng.beta(45, 5, shape), 0.9),
    ("0.995", lambda rng, shape: np.full(shape, 0.995), 0.995),
]


@pytest.mark.parametrize("n", SEEDS)
@pytest.mark.parametrize(("name", "draw", "mean"), RATES, ids=[r[0] for r in RATES])
def test_rate_over_seeds_covers_at_least_95_percent(n: int, name: str, draw: Sampler, mean: float) -> None:
    trials = 50
    rng = np.random.default_rng(10 * n + len(name))
    k = _rates(draw(rng, (REPS, n)), trials, seed=n)
    _, lo, hi = stats._rate_bounds(k, np.float64(trials), 0.95)
    cover = _coverage(lo, hi, mean)
    assert cover >= 0.93, (name, cover)
    # The pooled-Wilson floor only widens: it over-covers where the t interval is degenerate
    # (ties at 2 seeds, rates at the ceiling: measured up to 0.999) but costs little width away
    # from the bounds, where coverage stays <= 0.98 and the mean width within 5% of plain t's.
    _, t_lo, t_hi = stats._t_bounds(k / trials, 0.95)
    t_lo, t_hi = np.clip(t_lo, 0, 1), np.clip(t_hi, 0, 1)
    if name == "beta(20,20)":
        assert cover <= 0.98, cover
        assert float((hi - lo).mean()) <= 1.05 * float((t_hi - t_lo).mean())
    if name == "0.995" and n >= 3:
        # Contrast: plain t over per-seed rates at the ceiling (measured 0.52 at 3, 0.71 at 5 seeds).
        assert _coverage(t_lo, t_hi, mean) < 0.8


def test_public_functions_match_the_vectorised_cores() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 3))
    _, lo, hi = stats._t_bounds(values, 0.9)
    for row, row_lo, row_hi in zip(values, lo, hi, strict=True):
        est = seed_interval(row, confidence=0.9)
        assert (est.lo, est.hi, est.value, est.n) == (row_lo, row_hi, row.mean(), 3)
        # Same as scipy's t.interval (scale = standard error of the mean).
        ref = sps.t.interval(0.9, 2, loc=row.mean(), scale=sps.sem(row))
        assert est.lo == pytest.approx(ref[0], rel=1e-12) and est.hi == pytest.approx(ref[1], rel=1e-12)
    k = rng.binomial(40, 0.85, size=(20, 4)).astype(float)
    _, lo, hi = stats._rate_bounds(k, np.float64(40), 0.95)
    for row, row_lo, row_hi in zip(k, lo, hi, strict=True):
        est = rate_over_seeds(row.astype(int), 40)
        assert (est.lo, est.hi) == (row_lo, row_hi)
        assert est.value == pytest.approx(row.mean() / 40, rel=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (48, 48), (3, 200)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    est = wilson(k, n)
    # Closed form vs scipy's: same formula, rounding differences only.
    assert est.lo == pytest.approx(ref.low, abs=1e-12) and est.hi == pytest.approx(ref.high, abs=1e-12)
