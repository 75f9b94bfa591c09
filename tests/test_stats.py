"""Estimate and the percentile bootstrap."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from alignlab import stats
from alignlab.stats import Estimate, bootstrap


def test_estimate_str_shows_value_and_interval() -> None:
    assert str(Estimate(0.93, 0.88, 0.97, n=200, method="bootstrap95")) == "0.93 [0.88, 0.97]"
    # A narrow interval gets enough decimals to be visible.
    assert str(Estimate(0.5012, 0.5004, 0.5021, n=10**6, method="x")) == "0.5012 [0.5004, 0.5021]"
    assert str(Estimate(3.0, 3.0, 3.0, n=1, method="x")) == "3 [3, 3]"


def test_estimate_dict_round_trip_and_validation() -> None:
    est = Estimate(0.1, 0.05, 0.2, n=30, method="bootstrap95")
    assert est.to_dict() == {"value": 0.1, "lo": 0.05, "hi": 0.2, "n": 30, "method": "bootstrap95"}
    assert Estimate.from_dict(est.to_dict()) == est
    # Store metric rows carry extra keys; they are ignored.
    assert Estimate.from_dict({**est.to_dict(), "step": 3, "tokens": None}) == est
    with pytest.raises(ValueError, match="missing lo, hi"):
        Estimate.from_dict({"value": 1.0, "lo": None, "hi": None, "n": 3, "method": "m"})
    with pytest.raises(ValueError, match="reversed"):
        Estimate(0.5, 0.9, 0.1, n=3, method="m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.value = 2.0  # type: ignore[misc]


def test_bootstrap_contains_true_mean_seeded() -> None:
    sample = np.random.default_rng(123).normal(loc=3.0, scale=2.0, size=400)
    est = bootstrap(sample, seed=0)
    assert est.lo < 3.0 < est.hi
    assert est.value == pytest.approx(sample.mean())
    assert est.n == 400
    assert est.method == "bootstrap95"


def test_bootstrap_coverage_is_near_nominal() -> None:
    # 200 independent datasets: a 90% interval should cover the true mean ~180 times.
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(200):
        est = bootstrap(rng.exponential(1.0, size=80), n_boot=500, seed=i, confidence=0.9)
        covered += est.lo < 1.0 < est.hi
    assert 160 <= covered <= 195


def test_bootstrap_matches_normal_approximation_on_large_sample() -> None:
    sample = np.random.default_rng(1).exponential(2.0, size=20_000)
    est = bootstrap(sample, seed=0)
    se = sample.std(ddof=1) / math.sqrt(sample.size)
    half = 1.959964 * se
    # Monte Carlo error of the 2.5%/97.5% quantiles with 2000 resamples is ~3% of the
    # half-width; 15% is five of those, on each side.
    assert est.lo == pytest.approx(sample.mean() - half, abs=0.15 * half)
    assert est.hi == pytest.approx(sample.mean() + half, abs=0.15 * half)


def test_bootstrap_is_deterministic_per_seed() -> None:
    sample = np.random.default_rng(2).normal(size=50)
    assert bootstrap(sample, seed=5) == bootstrap(sample, seed=5)
    assert bootstrap(sample, seed=5) != bootstrap(sample, seed=6)


def test_bootstrap_statistic_without_axis_matches_vectorised() -> None:
    sample = np.random.default_rng(3).normal(size=60)
    vectorised = bootstrap(sample, statistic=np.median, seed=4)
    looped = bootstrap(sample, statistic=lambda x: float(np.median(x)), seed=4)
    assert looped == vectorised


def test_bootstrap_chunks_large_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = np.random.default_rng(4).normal(size=1000)
    whole = bootstrap(sample, n_boot=1000, seed=0)
    monkeypatch.setattr(stats, "_MAX_CHUNK_ELEMENTS", 7 * 1000)  # 7 resamples per chunk
    chunked = bootstrap(sample, n_boot=1000, seed=0)
    assert chunked.value == whole.value
    half = (whole.hi - whole.lo) / 2
    assert chunked.lo == pytest.approx(whole.lo, abs=0.2 * half)
    assert chunked.hi == pytest.approx(whole.hi, abs=0.2 * half)


def test_bootstrap_confidence_names_method_and_widens() -> None:
    sample = np.random.default_rng(5).normal(size=100)
    e90 = bootstrap(sample, confidence=0.9)
    e99 = bootstrap(sample, confidence=0.99)
    assert (e90.method, e99.method) == ("bootstrap90", "bootstrap99")
    assert e99.lo < e90.lo and e90.hi < e99.hi


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([], {}, "empty"),
        ([[1.0, 2.0]], {}, "1-D"),
        ([1.0, float("nan")], {}, "NaN"),
        ([1.0, 2.0], {"confidence": 1.0}, "confidence"),
        ([1.0, 2.0], {"n_boot": 0}, "n_boot"),
    ],
)
def test_bootstrap_rejects_bad_input(values: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap(values, **kwargs)


def test_wilson_interval_matches_reference_values_and_stays_honest_at_the_edges() -> None:
    from alignlab.stats import wilson

    # Reference: Wilson score interval, z = 1.959964 (e.g. statsmodels proportion_confint).
    est = wilson(5, 10)
    assert est.value == 0.5
    # The references are rounded to 6 decimals (within 5e-7); float64 adds nothing visible.
    assert abs(est.lo - 0.236593) <= 5e-7 and abs(est.hi - 0.763407) <= 5e-7
    top = wilson(48, 48)
    assert top.value == 1.0 and top.hi == 1.0 and 0.92 < top.lo < 0.94
    bottom = wilson(0, 100)
    assert bottom.lo == 0.0 and 0.03 < bottom.hi < 0.04
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_seed_interval_edge_cases_print_and_validate() -> None:
    from alignlab.stats import SINGLE_SEED, rate_over_seeds, seed_interval, wilson

    one = seed_interval([0.83])
    assert one.n == 1 and one.method == SINGLE_SEED and math.isnan(one.lo) and math.isnan(one.hi)
    assert str(one) == "0.83 (n/a: single seed)"
    # Identical seeds: zero width (seed_interval has no floor; rate_over_seeds does).
    same = seed_interval([0.5, 0.5, 0.5])
    assert (same.lo, same.hi) == (0.5, 0.5)
    # Near the ceiling the t interval runs past 1 unless clipped to the natural bounds.
    assert seed_interval([0.9, 1.0, 1.0]).hi > 1.0
    assert seed_interval([0.9, 1.0, 1.0], bounds=(0, 1)).hi == 1.0
    assert seed_interval([1.0, 3.0], confidence=0.5).method == "t50 over seeds"
    # Every seed at 50/50: t alone would say [1, 1]; the pooled Wilson floor of 150/150 does not.
    top = rate_over_seeds([50, 50, 50], 50)
    assert top.hi == 1.0 and top.lo == pytest.approx(wilson(150, 150).lo)
    single = rate_over_seeds([40], [50])
    assert (single.lo, single.hi) == (wilson(40, 50).lo, wilson(40, 50).hi)
    assert "single seed" in single.method
    for call, match in [
        (lambda: seed_interval([]), "empty"),
        (lambda: seed_interval([0.5, float("nan")]), "NaN"),
        (lambda: seed_interval([0.5, 1.2], bounds=(0, 1)), "within bounds"),
        (lambda: seed_interval([0.5, 0.6], bounds=(1, 0)), "low < high"),
        (lambda: seed_interval([0.5, 0.6], confidence=95), "confidence"),
        (lambda: rate_over_seeds([51, 3], 50), r"\[0, trials\]"),
        (lambda: rate_over_seeds([1.5, 3], 50), "whole numbers"),
        (lambda: rate_over_seeds([1, 3], 0), "positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


def test_difference_adds_half_widths_in_quadrature_and_is_the_one_used() -> None:
    a = Estimate(0.9, 0.84, 0.96, n=200, method="wilson95")  # half-width 0.06
    b = Estimate(0.7, 0.62, 0.78, n=150, method="wilson95")  # half-width 0.08
    d = stats.difference(a, b)
    # 0.06 and 0.08 in quadrature are 0.1; each bound within a few float64 roundings of its size.
    assert d.value == pytest.approx(0.2, rel=4 * 2.0**-52)
    assert (d.lo, d.hi) == pytest.approx((0.1, 0.3), rel=8 * 2.0**-52)
    assert d.n == 150
    one_seed = Estimate(0.5, math.nan, math.nan, n=1, method=stats.SINGLE_SEED)
    assert math.isnan(stats.difference(a, one_seed).lo)
    from alignlab import safety
    from alignlab.organisms import gates

    assert safety.difference is stats.difference and gates.difference is stats.difference


def test_bootstrap_rows_resamples_columns_together_and_drops_undefined_resamples() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    y = x + 0.3 * rng.normal(size=60)

    def corr(i: np.ndarray) -> float:
        return float(np.corrcoef(x[i], y[i])[0, 1])

    est = stats.bootstrap_rows(60, corr, n_boot=400, seed=1)
    assert est.value == corr(np.arange(60)) and est.lo < est.value < est.hi < 1.0
    assert est == stats.bootstrap_rows(60, corr, n_boot=400, seed=1)
    # The resamples are rows: resampling x and y independently would destroy the correlation.
    assert est.lo > 0.8
    # Undefined without row 0 (about a third of the resamples of 10): those are dropped.
    partial = stats.bootstrap_rows(10, lambda i: float(x[i].mean()) if (i == 0).any() else math.nan)
    assert math.isfinite(partial.lo) and partial.lo < partial.value < partial.hi
    undefined = stats.bootstrap_rows(5, lambda i: math.nan, n_boot=10)
    assert math.isnan(undefined.value) and math.isnan(undefined.lo) and math.isnan(undefined.hi)


def test_holm_matches_the_step_down_rule_and_controls_family_wise_error() -> None:
    from alignlab.stats import holm

    # By hand: sorted 0.01 -> 3 x 0.01; 0.03 -> 2 x 0.03; 0.04 -> max(1 x 0.04, 0.06).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], rel=1e-12)
    assert holm([0.5]) == [0.5] and holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    # Family-wise error under the global null: 8 independent uniform p-values per family; some
    # adjusted p < 0.05 in 1 - (1 - 0.05/8)**8 = 0.049 of families (Holm <= alpha). 4,000
    # families (seeded): binomial SD 0.0034, so the band is about -5 / +2 SD around 0.049.
    rng = np.random.default_rng(0)
    hits = sum(min(holm(rng.uniform(size=8))) < 0.05 for _ in range(4000))
    assert 0.03 <= hits / 4000 <= 0.055
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])
