"""Scaling fits recover known laws; intervals, held-out prediction and trend tests behave.

All data are synthetic with seeded noise, so every check is deterministic. Bootstrap sizes
are kept small: these tests check the machinery, not the last digit of an interval.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import optimize

from alignlab.scaling import (
    ChinchillaFit,
    FitInputError,
    fit_chinchilla,
    fit_kaplan,
    fit_power,
    fit_sigmoid,
    holdout_predict,
    optimal_allocation,
    plot_chinchilla,
    plot_fit,
    save_fit,
    trend_test,
    write_json,
)
from alignlab.stats import Estimate

# Kaplan et al. 2020 (eqs. 1.1-1.2) and Hoffmann et al. 2022 (approach 3) fitted constants.
KAPLAN = {"N": (0.076, 8.8e13), "D": (0.095, 5.4e13)}
CHIN = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}


def kaplan_data(
    var: str = "N", seeds: int = 1, noise: float = 0.01, seed: int = 0, k: int = 9
) -> tuple[np.ndarray, np.ndarray]:
    alpha, x_c = KAPLAN[var]
    x = np.repeat(np.geomspace(1e6, 1e10, k), seeds)
    rng = np.random.default_rng(seed)
    return x, (x_c / x) ** alpha * np.exp(rng.normal(0.0, noise, x.size))


def chin_loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return CHIN["E"] + CHIN["A"] / n ** CHIN["alpha"] + CHIN["B"] / d ** CHIN["beta"]


@pytest.fixture(scope="module")
def chinchilla() -> tuple[ChinchillaFit, np.ndarray, np.ndarray, np.ndarray]:
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e10, 6), np.geomspace(1e8, 1e12, 6)))
    loss = chin_loss(n, d) * np.exp(np.random.default_rng(0).normal(0.0, 0.002, n.size))
    return fit_chinchilla(n, d, loss, n_boot=16, seed=0), n, d, loss


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("var", ["N", "D"])
def test_kaplan_recovers_exponent_within_5_percent(var: str) -> None:
    x, y = kaplan_data(var)
    fit = fit_kaplan(x, y, n_boot=300, seed=1)
    alpha, x_c = KAPLAN[var]
    assert fit.alpha.value == pytest.approx(alpha, rel=0.05)
    assert fit.x_c.value == pytest.approx(x_c, rel=0.5)  # x_c is exp(c0/alpha): loosely pinned
    assert fit.alpha.lo < fit.alpha.value < fit.alpha.hi
    assert fit.r2 > 0.99
    assert fit.resample == "points"
    assert fit.n == 9 and fit.n_x == 9


def test_kaplan_with_replicate_seeds_resamples_within_size() -> None:
    x, y = kaplan_data(seeds=3, noise=0.02, k=6)
    fit = fit_kaplan(x, y, n_boot=300)
    assert fit.resample == "within_x"
    assert fit.alpha.method == "bootstrap95-within_x"
    assert fit.alpha.value == pytest.approx(KAPLAN["N"][0], rel=0.05)


@pytest.mark.parametrize(("seeds", "k"), [(1, 7), (3, 6)])
def test_kaplan_intervals_cover_the_truth_at_nominal_rate(seeds: int, k: int) -> None:
    # 95% intervals from 6-7 sizes: plain percentiles covered ~88% in simulation; the expanded
    # percentile should be near 95%. 40 data sets: require >= 85% (P(fail) ~ 1e-3 at 95%).
    alpha = KAPLAN["N"][0]
    covered, widths, values = [], [], []
    for s in range(40):
        x, y = kaplan_data(seeds=seeds, k=k, noise=0.02, seed=1000 + s)
        fit = fit_kaplan(x, y, n_boot=400, seed=s)
        covered.append(fit.alpha.lo <= alpha <= fit.alpha.hi)
        widths.append(fit.alpha.hi - fit.alpha.lo)
        values.append(fit.alpha.value)
    assert np.mean(covered) >= 0.85
    # Coverage alone passes an infinitely wide interval: the mean width is also bounded against
    # the spread of the estimates themselves, 2 z SD(alpha_hat) over the 40 data sets (that SD is
    # known to +-11% from 40 values, hence wide bands). Measured: 3 seeds x 6 sizes 1.00
    # (coverage 0.925); 1 seed x 7 sizes 2.03 (coverage 0.975): the expanded percentile at
    # 5 degrees of freedom is deliberately wide there.
    ratio = float(np.mean(widths)) / (2 * 1.96 * float(np.std(values, ddof=1)))
    print(f"coverage {np.mean(covered):.3f}, width / (2 z SD) {ratio:.3f}")
    assert 0.7 <= ratio <= (2.6 if seeds == 1 else 1.6), ratio


def test_offset_power_recovers_decreasing_and_increasing_laws() -> None:
    rng = np.random.default_rng(3)
    x = np.geomspace(1e6, 1e10, 10)
    loss = 1.69 + 406.4 * x**-0.34 + rng.normal(0.0, 0.003, x.size)
    fit = fit_power(x, loss, n_boot=200)
    assert fit.alpha.value == pytest.approx(0.34, rel=0.05)
    assert fit.c.value == pytest.approx(1.69, rel=0.05)
    assert fit.k.value > 0
    # Accuracy-like: rises toward its ceiling, so k < 0.
    acc = 0.9 - 20.0 * x**-0.2 + rng.normal(0.0, 0.003, x.size)
    fit = fit_power(x, acc, n_boot=200)
    assert fit.alpha.value == pytest.approx(0.2, rel=0.05)
    assert fit.k.value < 0
    assert fit.c.lo <= 0.9 <= fit.c.hi


def test_sigmoid_recovers_midpoint_within_5_percent() -> None:
    x = np.geomspace(1e6, 1e10, 14)
    truth = 0.25 + 0.7 / (1 + np.exp(-2.0 * (np.log(x) - np.log(3e8))))
    y = truth + np.random.default_rng(4).normal(0.0, 0.01, x.size)
    fit = fit_sigmoid(x, y, n_boot=60)
    assert fit.x0.value == pytest.approx(3e8, rel=0.05)
    assert fit.slope.value == pytest.approx(2.0, rel=0.15)
    assert fit.lo.value == pytest.approx(0.25, abs=0.02)
    assert fit.hi.value == pytest.approx(0.95, abs=0.02)
    # Chance level known: fix it, and the fixed level is reported as such.
    fixed = fit_sigmoid(x, y, lo=0.25, n_boot=60)
    assert fixed.lo == Estimate(0.25, 0.25, 0.25, n=x.size, method="fixed")
    assert fixed.x0.value == pytest.approx(3e8, rel=0.05)


def test_sigmoid_fits_a_falling_metric() -> None:
    x = np.geomspace(1e6, 1e10, 12)
    y = 0.9 - 0.6 / (1 + np.exp(-3.0 * (np.log(x) - np.log(1e8))))
    fit = fit_sigmoid(x, y, n_boot=20)
    assert fit.slope.value > 0 and fit.hi.value < fit.lo.value
    assert fit.x0.value == pytest.approx(1e8, rel=0.01)


def test_chinchilla_recovers_exponents_within_5_percent(chinchilla: tuple) -> None:
    fit, *_ = chinchilla
    assert fit.alpha.value == pytest.approx(CHIN["alpha"], rel=0.05)
    assert fit.beta.value == pytest.approx(CHIN["beta"], rel=0.05)
    assert fit.E.value == pytest.approx(CHIN["E"], rel=0.05)
    assert fit.r2 > 0.999
    assert fit.n_boot >= 12  # nearly every refit converged
    for est in fit.params.values():
        assert est.lo <= est.hi


def test_chinchilla_uses_summed_huber_loss(chinchilla: tuple) -> None:
    fit, n, d, loss = chinchilla
    nat = [fit.E.value, fit.A.value, fit.alpha.value, fit.B.value, fit.beta.value]
    r = np.log(nat[0] + nat[1] / n ** nat[2] + nat[3] / d ** nat[4]) - np.log(loss)
    delta = fit.huber_delta
    huber = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    assert fit.objective == pytest.approx(huber.sum(), rel=1e-6)


def test_compute_optimal_matches_closed_form_and_brute_force(chinchilla: tuple) -> None:
    fit, *_ = chinchilla
    e, a, al, b, be = (fit.params[k].value for k in ("E", "A", "alpha", "B", "beta"))
    for flops in (1e18, 1e21, 5.76e23):
        opt = fit.compute_optimal(flops)
        n_cf, d_cf = optimal_allocation(flops, e, a, al, b, be)
        assert opt.n_params.value == pytest.approx(n_cf, rel=1e-9)
        assert opt.n_tokens.value == pytest.approx(d_cf, rel=1e-9)
        assert 6 * opt.n_params.value * opt.n_tokens.value == pytest.approx(flops, rel=1e-9)
        assert opt.n_params.lo <= opt.n_params.value <= opt.n_params.hi

        # Brute force: minimise L(N, C / 6N) over log N numerically.
        def loss_at(log_n: float, flops: float = flops) -> float:
            n = math.exp(log_n)
            return e + a / n**al + b / (flops / (6 * n)) ** be

        res = optimize.minimize_scalar(
            loss_at, bounds=(0.0, 60.0), method="bounded", options={"xatol": 1e-10}
        )
        assert math.exp(res.x) == pytest.approx(n_cf, rel=1e-4)
        assert opt.loss.value == pytest.approx(res.fun, rel=1e-9)


def test_optimal_allocation_closed_form_for_hoffmann_constants() -> None:
    c = 5.76e23
    n, d = optimal_allocation(c, *CHIN.values())
    g = (CHIN["alpha"] * CHIN["A"] / (CHIN["beta"] * CHIN["B"])) ** (1 / (CHIN["alpha"] + CHIN["beta"]))
    assert n == pytest.approx(g * (c / 6) ** (CHIN["beta"] / (CHIN["alpha"] + CHIN["beta"])))
    assert d == pytest.approx(c / (6 * n))
    # Vectorised over parameter rows (how the bootstrap uses it).
    ns, _ = optimal_allocation(c, *(np.full(3, v) for v in CHIN.values()))
    assert np.allclose(ns, n)


def test_chinchilla_predict_interval(chinchilla: tuple) -> None:
    fit, *_ = chinchilla
    est = fit.predict(3e9, 3e11)
    truth = float(chin_loss(np.array(3e9), np.array(3e11)))
    assert est.value == pytest.approx(truth, rel=0.01)
    wide = fit.predict(3e9, 3e11, noise=True)
    assert wide.hi - wide.lo >= est.hi - est.lo
    assert wide.method.endswith("refit+noise")


# --------------------------------------------------------------------------- prediction


def test_holdout_prediction_contains_truth_with_two_sided_tolerance() -> None:
    x, y = kaplan_data(noise=0.005, k=7, seed=5)
    res = holdout_predict(x, y, fit="power", n_boot=400)
    assert res.x_holdout == x.max()
    assert res.n_train == 6 and res.n_obs == 1
    assert res.inside
    # Two-sided: neither over- nor under-predicted by more than 2%.
    assert -0.02 <= res.rel_error <= 0.02
    # And the interval is informative: not absurdly wide, not degenerate.
    width = (res.predicted.hi - res.predicted.lo) / res.observed
    assert 0.001 < width < 0.1
    assert res.predicted.lo <= res.predicted.value <= res.predicted.hi
    json.dumps(res.to_dict(), allow_nan=False)


def test_holdout_prediction_interval_is_calibrated_over_seeds() -> None:
    inside, widths, errors = [], [], []
    for seed in range(30):
        x, y = kaplan_data(noise=0.01, k=7, seed=100 + seed)
        res = holdout_predict(x, y, n_boot=400, seed=seed)
        inside.append(res.inside)
        widths.append((res.predicted.hi - res.predicted.lo) / res.observed)
        errors.append(res.rel_error)
    # Nominal 95% (~93-99% in simulation); 30 data sets, require >= 80%.
    assert np.mean(inside) >= 0.8
    # And not by being wide: mean relative width against 2 z SD of the relative errors it should
    # cover (SD known to +-13% from 30 values). Measured 2.07 (0.092 vs 0.045): one seed of 6
    # training sizes gets the deliberately wide expanded percentile, as in the coverage test.
    ratio = float(np.mean(widths)) / (2 * 1.96 * float(np.std(errors, ddof=1)))
    assert 0.7 <= ratio <= 2.6, ratio


@pytest.mark.parametrize("fit_name", ["offset_power", "sigmoid"])
def test_holdout_other_forms(fit_name: Any) -> None:
    x = np.repeat(np.geomspace(1e6, 1e10, 8), 2)
    rng = np.random.default_rng(6)
    if fit_name == "offset_power":
        y = 1.69 + 406.4 * x**-0.34 + rng.normal(0.0, 0.003, x.size)
    else:
        y = 0.25 + 0.7 / (1 + np.exp(-1.5 * (np.log(x) - np.log(1e8)))) + rng.normal(0.0, 0.01, x.size)
    res = holdout_predict(x, y, fit=fit_name, n_boot=40)
    assert res.n_obs == 2
    assert abs(res.rel_error) < 0.03
    assert res.inside


def test_prediction_band_with_noise_is_wider() -> None:
    x, y = kaplan_data(noise=0.02)
    fit = fit_kaplan(x, y, n_boot=300)
    mean_ci, pred = fit.predict(1e11), fit.predict(1e11, noise=True)
    assert pred.hi - pred.lo > mean_ci.hi - mean_ci.lo
    assert mean_ci.method == "bootstrap95-points-refit"
    _, lo, hi = fit.band([1e7, 1e9, 1e11])
    assert (lo < hi).all()


# --------------------------------------------------------------------------- null results


def test_flat_metric_reports_no_trend() -> None:
    x = np.repeat(np.geomspace(1e6, 1e9, 5), 3)
    y = np.random.default_rng(2).normal(0.5, 0.05, x.size)
    res = trend_test(x, y, metric="backdoor persistence", n_perm=999, n_boot=500)
    assert res["slope"]["lo"] <= 0.0 <= res["slope"]["hi"]
    assert res["p_value"] >= 0.05
    assert res["verdict"] == "no detectable trend" and res["detected"] is False
    # A null result says what it could have seen: "no trend detected; a slope of X per decade
    # would have been detected with 80% power".
    assert "no trend detected" in res["statement"]
    mds = res["min_detectable_slope"]
    assert f"±{mds:.2g} per decade would have been detected with 80% power" in res["statement"]
    assert res["statement"].startswith("backdoor persistence")
    assert "5 sizes, 1M to 1G" in res["statement"]
    json.dumps(res, allow_nan=False)
    # The power-law exponent of a flat positive metric is also indistinguishable from 0.
    fit = fit_kaplan(x, y, n_boot=500)
    assert fit.alpha.lo <= 0.0 <= fit.alpha.hi


def test_constant_outcome_says_there_is_nothing_to_test() -> None:
    # Oracle SFT took attack success to 0 in every cell: "a slope of 0 would have been detected"
    # would be false comfort; the statement must say the outcome never varied.
    x = np.repeat([3.4e4, 1.1e5, 3.3e5], 3)
    res = trend_test(x, np.zeros(x.size), metric="attack_success", groups=np.tile([0, 1, 2], 3), n_perm=199)
    assert res["detected"] is False
    assert "every cell measured 0" in res["statement"] and "would have been detected" not in res["statement"]
    assert "3 sizes, 34k to 330k" in res["statement"]


def test_trend_test_false_positive_rate_on_flat_metrics() -> None:
    x = np.repeat(np.geomspace(1e6, 1e9, 6), 2)
    flagged = [
        trend_test(
            x, np.random.default_rng(200 + s).normal(0.3, 0.05, x.size), n_perm=499, n_boot=100, seed=s
        )["verdict"]
        != "no detectable trend"
        for s in range(20)
    ]
    assert np.mean(flagged) <= 0.1


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_trend_test_detects_real_trends(sign: float) -> None:
    x = np.repeat(np.geomspace(1e6, 1e9, 5), 3)
    y = 0.5 + sign * 0.05 * np.log10(x / 1e6) + np.random.default_rng(1).normal(0, 0.02, x.size)
    res = trend_test(x, y, n_perm=999, n_boot=300)
    assert res["verdict"] == ("increasing" if sign > 0 else "decreasing")
    assert res["p_value"] < 0.05
    lo, hi = res["slope"]["lo"], res["slope"]["hi"]
    assert (lo > 0) if sign > 0 else (hi < 0)
    assert lo <= sign * 0.05 <= hi


def _design(sizes: int, seeds: int, sd: float, slope: float = 0.0, seed: int = 0) -> tuple:
    """``sizes`` log-spaced sizes (half a decade apart) x ``seeds`` seeds; each seed gets its own
    offset (SD 0.2, larger than the noise: some seeds install a stronger backdoor at every size)."""
    rng = np.random.default_rng(seed)
    x = np.tile(np.power(10.0, 4 + 0.5 * np.arange(sizes)), seeds)
    groups = np.repeat(np.arange(seeds), sizes)
    offsets = rng.normal(0, 0.2, seeds)[groups]
    y = 0.5 + offsets + slope * np.log10(x / 1e4) + rng.normal(0, sd, x.size)
    return x, y, groups


def test_within_seed_permutation_sees_through_seed_offsets() -> None:
    # Slope 0.1 per decade, noise SD 0.05, seed offsets SD 0.2: the offsets are not noise about
    # the trend, and permuting within seed removes them (Manly 2007, ch. 7).
    x, y, groups = _design(4, 3, sd=0.05, slope=0.1, seed=3)
    within = trend_test(x, y, groups=groups, n_perm=999, n_boot=200)
    pooled = trend_test(x, y, n_perm=999, n_boot=200)
    assert within["detected"] and within["verdict"] == "increasing" and within["n_groups"] == 3
    assert within["slope"]["lo"] <= 0.1 <= within["slope"]["hi"]
    assert not pooled["detected"]  # the seed offsets swamp the trend when all points are permuted
    # The offsets inflate the pooled residual SD ~4x, and the detectable slope with it.
    assert pooled["min_detectable_slope"] > 2 * within["min_detectable_slope"]
    assert "within each group" in within["test"]


def test_within_seed_trend_test_false_positive_rate_is_near_alpha() -> None:
    # 300 null data sets (4 sizes x 3 seeds, seed offsets): the rejection rate should be ~0.05.
    # Binomial SD of the rate at 0.05 is 0.013, so [0.02, 0.09] is ~ +-3 SD.
    flagged = []
    for s in range(300):
        x, y, groups = _design(4, 3, sd=0.1, seed=s)
        res = trend_test(x, y, groups=groups, n_perm=199, n_sim=50, n_boot=10, seed=s)
        flagged.append(res["detected"])
    assert 0.02 <= np.mean(flagged) <= 0.09


def test_all_tied_values_give_p_one_and_no_spurious_slope() -> None:
    # Persistence at the ceiling in every (size, seed): the slope is 0, every permutation ties
    # with it, p = 1; no residual variation, so any nonzero slope would have been detected.
    x, _, groups = _design(4, 3, sd=0.0)
    res = trend_test(x, np.ones(x.size), groups=groups, n_perm=999, n_boot=100)
    assert res["slope"]["value"] == 0.0 and res["p_value"] == 1.0 and not res["detected"]
    assert res["residual_sd"] == 0.0 and res["min_detectable_slope"] == 0.0
    assert res["slope"]["lo"] <= 0.0 <= res["slope"]["hi"]
    json.dumps(res, allow_nan=False)
    # Two levels (rates 1 and 0.75): many permutations give exactly the observed slope. Ties
    # count as extreme, so the p-value equals the exact one, computed here independently: the
    # within-seed slope is a sum of per-seed terms, so its permutation distribution is the sum
    # of each seed's 24 permuted terms.
    y = np.array([1.0, 1.0, 0.75, 1.0, 1.0, 0.75, 1.0, 0.75, 1.0, 1.0, 1.0, 0.75])
    t = np.log10(x[:4])
    c = (t - t.mean()) / (3 * ((t - t.mean()) ** 2).sum())
    terms = [
        np.array([c @ y[4 * g : 4 * g + 4][list(p)] for p in itertools.permutations(range(4))])
        for g in range(3)
    ]
    null = np.add.outer(np.add.outer(terms[0], terms[1]), terms[2]).ravel()
    observed = sum(c @ y[4 * g : 4 * g + 4] for g in range(3))
    p_exact = float(np.mean(np.abs(null) >= abs(observed) - 1e-12))
    # Ties matter here: 15% of permutations give exactly +-observed; a strict ">" would say
    # p = 0.083 instead of 0.229.
    assert p_exact == pytest.approx(0.229, abs=0.001)
    assert float(np.mean(np.abs(null) > abs(observed) + 1e-12)) < p_exact - 0.1
    exact = trend_test(x, y, groups=groups, n_perm=20_000, n_boot=100)  # 24^3 = 13824: enumerated
    assert exact["exact"] is True and exact["p_value"] == pytest.approx(p_exact, rel=1e-12)
    sampled = trend_test(x, y, groups=groups, n_perm=4999, n_boot=100)
    assert sampled["exact"] is False
    # Monte Carlo SE of the sampled p is sqrt(p (1 - p) / 5000) <= 0.007; 4 SE.
    assert sampled["p_value"] == pytest.approx(p_exact, abs=0.028)


def test_minimum_detectable_slope_scales_with_seeds_and_noise_and_holds() -> None:
    def mds(sizes: int, seeds: int, sd: float) -> tuple[float, float]:
        x, y, groups = _design(sizes, seeds, sd=1.0, seed=11)
        # Rescale the residuals to SD exactly `sd`, so designs are compared at the same noise.
        fit = trend_test(x, y, groups=groups, n_perm=999, n_boot=10, seed=1)
        y = y * sd / fit["residual_sd"]
        res = trend_test(x, y, groups=groups, n_perm=999, n_boot=10, seed=1)
        assert res["residual_sd"] == pytest.approx(sd, rel=1e-9)
        return res["min_detectable_slope"], res["min_detectable_slope_t"]

    m43, t43 = mds(4, 3, 0.1)
    m75, t75 = mds(7, 5, 0.1)
    m43_noisy, _ = mds(4, 3, 0.2)
    # Normal theory: MDS ~ (t_{.975,dof} + t_{.8,dof}) sd / sqrt(seeds * sum (t - tbar)^2):
    # 1.65 sd at 4 x 3 (dof 8), 0.49 sd at 7 x 5 (dof 29). Simulation agrees within its ~3%
    # Monte Carlo error; 10% each side.
    assert m43 == pytest.approx(t43, rel=0.1) and t43 == pytest.approx(0.165, rel=0.05)
    assert m75 == pytest.approx(t75, rel=0.1) and t75 == pytest.approx(0.049, rel=0.05)
    assert m75 < m43 / 2.5  # more seeds and sizes: smaller detectable slope
    assert m43_noisy == pytest.approx(2 * m43, rel=0.1)  # proportional to the residual SD


def test_minimum_detectable_slope_is_detected_80_percent_of_the_time() -> None:
    # Fresh data sets with a true slope equal to the reported MDS (same design, permutations and
    # noise SD): the test should reject ~80% of them. 400 data sets: binomial SD 0.02, plus ~0.02
    # from the MDS's own Monte Carlo error; [0.7, 0.9] is ~ +-3.5 SD of both.
    x, y, groups = _design(4, 3, sd=0.1, seed=5)
    y = y * 0.1 / trend_test(x, y, groups=groups, n_perm=999, n_boot=10)["residual_sd"]
    mds = trend_test(x, y, groups=groups, n_perm=199, n_boot=10)["min_detectable_slope"]
    hits = []
    for s in range(400):
        fresh = _design(4, 3, sd=0.1, slope=mds, seed=100 + s)[1]
        hits.append(trend_test(x, fresh, groups=groups, n_perm=199, n_sim=50, n_boot=10, seed=s)["detected"])
    assert 0.7 <= np.mean(hits) <= 0.9


def test_design_too_small_to_detect_anything_says_so() -> None:
    # 3 equally log-spaced sizes x 2 seeds: 36 within-seed permutations; the identity and the
    # reversal tie, so p >= 2/36 > 0.05 whatever the data: no slope is detectable.
    x = np.tile([1e4, 1e5, 1e6], 2)
    y = np.array([0.2, 0.5, 0.8, 0.25, 0.55, 0.85])
    res = trend_test(x, y, groups=[0, 0, 0, 1, 1, 1], n_boot=50)
    assert res["exact"] and res["p_min"] == pytest.approx(2 / 36) and not res["detected"]
    assert res["min_detectable_slope"] is None
    assert "cannot detect any slope at alpha 0.05" in res["statement"]


# --------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_kaplan([1, 2, 2, 1], [3, 2, 2, 3]), "at least 3 distinct x"),
        (lambda: fit_kaplan([0, 1, 2], [3, 2, 1]), "x > 0"),
        (lambda: fit_kaplan([1, 2, 3], [3, 0, 1]), "y > 0"),
        (lambda: fit_kaplan([1, 2, 3], [3, float("nan"), 1]), "NaN"),
        (lambda: fit_kaplan([1, 2, 3], [3, 2]), "differ in length"),
        (lambda: fit_kaplan([1, 2, 3], [3, 2, 1], level=1.5), "level"),
        (lambda: fit_kaplan([1, 2, 3], [3, 2, 1], sigma=[1, -1, 1]), "sigma"),
        (lambda: fit_power([1, 2, 3], [3, 2, 1]), "at least 4 distinct x"),
        (lambda: fit_sigmoid([1, 2, 3, 4], [0, 0, 1, 1]), "at least 5 distinct x"),
        (lambda: fit_chinchilla([1, 2, 3], [1, 2, 3], [3, 2, 1]), "at least 6 distinct"),
        (lambda: holdout_predict([1, 2, 3], [3, 2, 1]), "at least 3 distinct x"),
        (lambda: holdout_predict([1, 2, 3, 4], [3, 2, 2, 1], fit="cubic"), "fit must be"),  # type: ignore[arg-type]
        (lambda: trend_test([1, 1, 2, 2], [1, 2, 3, 4]), "at least 3 distinct x"),
        (lambda: trend_test([1, 2, 3], [1, 2, 3], groups=[0, 1]), "one label per point"),
        (lambda: trend_test([1, 2, 3], [1, 2, 3], groups=[0, 1, 2]), "at least 2 distinct x"),
        (lambda: trend_test([1, 2, 3], [1, 2, 3], power=0.01), "power must be"),
    ],
)
def test_inputs_are_validated(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, FitInputError)


def test_predict_rejects_non_positive_x() -> None:
    fit = fit_kaplan(*kaplan_data(), n_boot=20)
    with pytest.raises(FitInputError, match="x > 0"):
        fit.predict(0.0)


# --------------------------------------------------------------------------- provenance, output


def test_fits_are_seeded_and_serialisable() -> None:
    x, y = kaplan_data(noise=0.02)
    a, b = fit_kaplan(x, y, n_boot=200, seed=3), fit_kaplan(x, y, n_boot=200, seed=3)
    assert a.alpha == b.alpha and a.predict(1e11, noise=True) == b.predict(1e11, noise=True)
    assert fit_kaplan(x, y, n_boot=200, seed=4).alpha != a.alpha
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["form"] == "power" and d["n_boot"] == 200
    assert Estimate.from_dict(d["params"]["alpha"]) == a.alpha


def test_sigma_weights_down_weight_a_noisy_point() -> None:
    x, y = kaplan_data(noise=0.002)
    y = y.copy()
    y[-1] *= 1.3  # one bad run, at the largest size where it tilts the fit most
    sigma = np.full(x.size, 0.01)
    sigma[-1] = 10.0  # ...that we know is unreliable
    weighted = fit_kaplan(x, y, sigma=sigma, n_boot=50)
    unweighted = fit_kaplan(x, y, n_boot=50)
    err = abs(weighted.alpha.value / KAPLAN["N"][0] - 1)
    assert err < 0.02
    assert err < abs(unweighted.alpha.value / KAPLAN["N"][0] - 1)


def test_plots_and_json_are_written(tmp_path: Path, chinchilla: tuple) -> None:
    x, y = kaplan_data(seeds=2, k=6)
    fit = fit_kaplan(x, y, n_boot=50)
    paths = plot_fit(
        fit, x, y, tmp_path / "loss_vs_n", yerr=np.full(x.size, 0.02), x_range=(1e6, 1e11), xlabel="N"
    )
    assert [p.suffix for p in paths] == [".png", ".svg"]
    out = save_fit(
        fit_sigmoid(np.geomspace(1, 1e4, 8), [0, 0, 0.1, 0.4, 0.8, 0.9, 1, 1], n_boot=20),
        np.geomspace(1, 1e4, 8),
        [0, 0, 0.1, 0.4, 0.8, 0.9, 1, 1],
        tmp_path / "s",
        "acc",
        extra={"trend": trend_test(x, y, n_perm=199, n_boot=50)},
    )
    cfit, n, d, loss = chinchilla
    paths += plot_chinchilla(cfit, n, d, loss, tmp_path / "chinchilla", formats=("png",))
    paths += [out["png"], out["svg"], out["json"]]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[1].read_bytes()[:2000]
    data = json.loads(out["json"].read_text())  # strict JSON: NaN would have failed to write
    assert set(data) == {"fit", "data", "curve", "labels", "extra"}
    assert len(data["curve"]["x"]) == len(data["curve"]["prediction_hi"])
    js = write_json({"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2)}, tmp_path / "j.json")
    assert json.loads(js.read_text()) == {"a": None, "b": 1.5, "c": [0, 1]}
