"""Checks that a scaling fit means something: held-out prediction and a trend test.

* :func:`holdout_predict` — fit every size but the largest and predict the largest, the test
  that a scaling law extrapolates (the protocol of Hoffmann et al. 2022 fig. A5 and of the
  GPT-4 technical report's loss prediction, on a small scale).
* :func:`trend_test` — is there any scale trend at all? Reports must be able to say "no
  detectable trend at these sizes" instead of fitting a power law to noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from alignlab.scaling._resample import (
    IntArray,
    Resample,
    group_permutations,
    method_name,
    percentile_estimate,
    resolve_scheme,
)
from alignlab.scaling._validate import (
    FitInputError,
    FloatArray,
    check_level,
    check_n_boot,
    check_xy,
)
from alignlab.scaling.fits import CurveFit, fit_kaplan, fit_power, fit_sigmoid
from alignlab.stats import Estimate

FitName = Literal["power", "offset_power", "sigmoid"]


@dataclass(frozen=True)
class HoldoutResult:
    """A fit on all but the largest size, checked against the largest.

    Attributes:
        fit: which form was fitted (``"power"``, ``"offset_power"``, ``"sigmoid"``).
        x_holdout: the held-out (largest) x.
        observed: mean of the metric over the points at ``x_holdout``.
        n_obs: how many points (seeds) were averaged into ``observed``.
        predicted: the prediction, with a prediction interval for the mean of ``n_obs`` new
            observations (bootstrap of refits plus resampled residual noise).
        abs_error: predicted - observed.
        rel_error: abs_error / |observed|.
        inside: whether ``observed`` lies inside the prediction interval.
        n_train: points used for the fit.
        fit_params: the fitted parameters, as Estimate dicts.
    """

    fit: str
    x_holdout: float
    observed: float
    n_obs: int
    predicted: Estimate
    abs_error: float
    rel_error: float
    inside: bool
    n_train: int
    fit_params: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "fit": self.fit,
            "x_holdout": self.x_holdout,
            "observed": self.observed,
            "n_obs": self.n_obs,
            "predicted": self.predicted.to_dict(),
            "abs_error": self.abs_error,
            "rel_error": self.rel_error,
            "inside": self.inside,
            "n_train": self.n_train,
            "fit_params": self.fit_params,
        }


def holdout_predict(
    x: ArrayLike,
    y: ArrayLike,
    fit: FitName = "power",
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    resample: Resample = "auto",
) -> HoldoutResult:
    """Fit all but the largest x, predict the metric at the largest, and score the prediction.

    All points at the largest x (every seed) are held out; the truth is their mean, and the
    interval is a *prediction* interval for that mean (``predict(..., noise=True,
    n_obs=seeds)``), so a well-calibrated law puts the truth inside it ~``level`` of the time.

    Args:
        x: scale of each point (> 0).
        y: metric of each point.
        fit: ``"power"`` (Kaplan pure power law, for losses), ``"offset_power"``, ``"sigmoid"``.
        level: interval coverage.
        n_boot: bootstrap refits of the training fit.
        seed: resampling seed.
        resample: bootstrap scheme for the training fit.

    Returns:
        HoldoutResult with the prediction, its error and whether the truth is inside.

    Raises:
        FitInputError: an unknown ``fit``, or too few distinct x left after holding one out.

    Example:
        >>> import numpy as np
        >>> n = np.geomspace(1e6, 1e9, 6)
        >>> res = holdout_predict(n, (8.8e13 / n) ** 0.076 * (1 + 0.003 * np.cos(n)), n_boot=200)
        >>> res.inside, abs(res.rel_error) < 0.01
        (True, True)
    """
    fitters = {"power": fit_kaplan, "offset_power": fit_power, "sigmoid": fit_sigmoid}
    if fit not in fitters:
        raise FitInputError(f"fit must be one of {sorted(fitters)}, got {fit!r}")
    xa, ya, _ = check_xy(x, y, what=f"held-out {fit}", n_params=1, min_distinct=2)
    x_max = float(xa.max())
    train = xa < x_max
    fitted: CurveFit = fitters[fit](
        xa[train], ya[train], level=level, n_boot=n_boot, seed=seed, resample=resample
    )
    n_obs = int((~train).sum())
    observed = float(ya[~train].mean())
    pred = fitted.predict(x_max, noise=True, n_obs=n_obs)
    err = pred.value - observed
    return HoldoutResult(
        fit=fit,
        x_holdout=x_max,
        observed=observed,
        n_obs=n_obs,
        predicted=pred,
        abs_error=err,
        rel_error=err / abs(observed) if observed != 0 else float("nan"),
        inside=bool(pred.lo <= observed <= pred.hi),
        n_train=int(train.sum()),
        fit_params={k: v.to_dict() for k, v in fitted.params.items()},
    )


def trend_test(
    x: ArrayLike,
    y: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    n_perm: int = 2000,
    n_sim: int = 400,
    n_boot: int = 2000,
    seed: int = 0,
    resample: Resample = "auto",
    metric: str = "metric",
) -> dict[str, Any]:
    """Is there a monotone scale trend? OLS slope of y on log10 x, a permutation test, and the
    slope the test could have detected.

    The test (Manly 2007, "Randomization, Bootstrap and Monte Carlo Methods in Biology"):

    * statistic: the OLS slope of y on log10 x (change in y per 10x of scale). With ``groups``
      (the seed of each point), the within-group slope: each seed's offset is removed first, so
      a seed that is better at every size does not count as noise (with every seed run at the
      same sizes this equals the pooled OLS slope).
    * p-value: two-sided, from permutations of y among the sizes *within* each group (sizes are
      shuffled among one seed's values; without ``groups`` among all points). Exact when, under
      the null, a seed's values are exchangeable across sizes. All within-group permutations
      are enumerated when there are at most ``n_perm`` of them (p = share of permutations at
      least as extreme, identity included); else ``n_perm`` random ones with the +1 correction.
      Ties count as "at least as extreme": a permuted slope that equals the observed one up to
      floating-point rounding (1e-9 of the data's scale) is a hit, so tied values (rates at 0 or
      1) give a conservative p, never a spuriously small one; all-equal values give p = 1.
    * ``slope`` interval: the slopes b that the same test does not reject when applied to
      y - b log10 x (test inversion). It excludes 0 iff p <= alpha.
    * ``min_detectable_slope``: the smallest |slope| per 10x that this test detects with
      probability ``power`` at ``alpha``, by simulation under the observed design: the
      residuals of the within-group fit (rescaled by sqrt((n - g) / (n - g - 1)) to undo the
      fit's shrinkage) are permuted within group to make ``n_sim`` null data sets, slope s times
      log10 x is added, and each is put through the same permutation test; s is found by
      bisection (common random numbers, both signs averaged). ``min_detectable_slope_t`` is the
      normal-theory value (noncentral t power of the OLS t test with the same residual SD), a
      cross-check: the two agree within a few percent for normal noise at 4 x 3 and more.
    * ``slope_bootstrap``: the percentile bootstrap interval (resampling as in the fits),
      reported for comparison only. In simulations with 4-8 sizes and pure noise it excluded 0
      in 9-14% of data sets at the 95% level — too often to base a claim on.

    The verdict is ``"increasing"`` / ``"decreasing"`` when p <= ``alpha``, otherwise
    ``"no detectable trend"``, and the statement then says which slope would have been detected:
    a null result with its power, never a bare one.

    Args:
        x: scale (> 0) of each point.
        y: metric of each point.
        groups: block label of each point (its seed); permutations stay within a block.
        alpha: significance level; the interval has coverage 1 - alpha.
        power: detection probability for ``min_detectable_slope``, in (alpha, 1).
        n_perm: permutations for the p-value and the interval.
        n_sim: simulated data sets for the detectable slope (Monte Carlo SE of the power at 0.8
            is 0.02 at 400, about 2.5% of the slope).
        n_boot: bootstrap resamples for ``slope_bootstrap``.
        seed: seed for all of the above.
        resample: bootstrap scheme for ``slope_bootstrap``.
        metric: the metric's name, used in the statement.

    Returns:
        JSON-ready dict: ``slope`` (Estimate dict, per decade of x), ``slope_bootstrap``,
        ``p_value``, ``detected`` (p <= alpha), ``verdict``, ``statement`` (one sentence for
        reports), ``min_detectable_slope`` (per decade, >= 0; None when the design cannot reach
        ``power`` at ``alpha`` for any slope, e.g. 3 sizes x 2 seeds, whose smallest attainable p
        is 2/36 — see ``p_min``), ``min_detectable_slope_t``, ``residual_sd`` (and ``_dof``),
        ``power``, ``p_min``, ``n``, ``n_x``, ``n_groups``, ``x_min``, ``x_max``, ``test``,
        ``exact`` (permutations enumerated).

    Raises:
        FitInputError: fewer than 3 distinct x, x <= 0, NaN, n_perm < 99, n_sim < 50, groups of
            the wrong length, or no group with two distinct x.

    Example:
        >>> import numpy as np
        >>> x = np.repeat(np.geomspace(1e6, 1e9, 5), 3)
        >>> res = trend_test(x, np.random.default_rng(2).normal(0.5, 0.05, x.size))
        >>> res["verdict"], round(res["min_detectable_slope"], 2)
        ('no detectable trend', 0.04)
    """
    xa, ya, _ = check_xy(x, y, what="trend", n_params=2)
    check_level(1.0 - alpha)
    check_n_boot(n_boot)
    if n_perm < 99:
        raise FitInputError(f"n_perm must be >= 99 for a usable p-value, got {n_perm}")
    if n_sim < 50:
        raise FitInputError(f"n_sim must be >= 50 for a usable detectable slope, got {n_sim}")
    if not alpha < power < 1.0:
        raise FitInputError(f"power must be in (alpha={alpha}, 1), got {power}")
    t = np.log10(xa)
    n = t.size
    codes = _group_codes(groups, n)
    n_groups = int(codes.max()) + 1
    coef = _slope_weights(t, codes)
    rng = np.random.default_rng(seed)
    tol = _TIE_TOL * float(np.abs(coef).sum()) * (float(np.abs(ya).max()) + float(np.abs(t).max()))
    slope = float(coef @ ya)
    if abs(slope) <= tol:
        slope = 0.0  # all-equal (or exactly trend-free) values: rounding noise is not a slope

    # Permutation test, and its inversion for the interval. Permuting y - b t gives permuted
    # slopes S(y_perm) - b S(t_perm), so one set of permutations serves every b; and the slope is
    # linear in y, so each permutation is a row of weights: S(y[perm]) = weights @ y.
    perms, exact = group_permutations(codes, n_perm, rng)
    weights = _permuted_weights(coef, perms)
    s_y, s_t = weights @ ya, weights @ t
    extra = 0 if exact else 1

    def p_at(b: float) -> float:
        hits = np.abs(s_y - b * s_t) >= abs(slope - b) - tol * (1.0 + abs(b))
        return float((extra + hits.sum()) / (extra + perms.shape[0]))

    p = p_at(0.0)
    # Smallest attainable p: data exactly on a line are matched only by permutations that keep
    # (or mirror) the order of log10 x within every group.
    p_min = float((extra + (np.abs(s_t) >= 1.0 - 1e-9).sum()) / (extra + perms.shape[0]))
    spread = float(np.std(s_y))
    scale = spread if spread > 1e3 * tol else (float(np.ptp(ya) / np.ptp(t)) or 1.0)
    lo, hi = (_invert(p_at, slope, sign * scale, alpha) for sign in (-1.0, 1.0))
    method = f"permutation-inversion{100 * (1 - alpha):g}"
    est = Estimate(slope, lo, hi, n=n, method=method)
    boot = _bootstrap_slope(t, ya, alpha, n_boot, rng, resample)

    power_info = _detectable_slope(
        t, ya, codes, coef, weights, exact, slope, alpha=alpha, power=power, n_sim=n_sim, rng=rng
    )
    detected = p <= alpha
    verdict = ("increasing" if slope > 0 else "decreasing") if detected else "no detectable trend"
    n_x = int(np.unique(xa).size)
    span = f"{n_x} sizes, {_human(xa.min())} to {_human(xa.max())}"
    if n_groups > 1:
        span += f", {n_groups} seeds"
    numbers = (
        f"slope {slope:+.3g} per decade, {100 * (1 - alpha):g}% CI [{lo:+.3g}, {hi:+.3g}], "
        f"permutation p = {p:.3g}"
    )
    mds = power_info["min_detectable_slope"]
    if mds is None:
        power_note = (
            f"this design cannot detect any slope at alpha {alpha:g} (smallest attainable p = {p_min:.3g})"
            if p_min > alpha
            else "the detectable slope cannot be estimated (no residual degrees of freedom)"
        )
    else:
        power_note = (
            f"a slope of ±{mds:.2g} per decade would have been detected with {100 * power:g}% power "
            f"(residual SD {power_info['residual_sd']:.2g})"
        )
    if detected:
        statement = f"{metric} is {verdict} with scale ({span}): {numbers}"
    elif np.ptp(ya) == 0:
        # A design's power is meaningless when the outcome never varied (e.g. a rate at its floor
        # in every cell): say that instead of "a slope of 0 would have been detected".
        statement = (
            f"{metric}: every cell measured {ya[0]:.3g} ({span}), so there is no variation for a "
            "trend test to use; move the doses off the floor or ceiling to measure a trend"
        )
    else:
        statement = f"{metric}: no trend detected ({span}); {power_note}; {numbers}"
    perm_kind = "within each group (seed)" if n_groups > 1 else "among all points"
    return {
        "metric": metric,
        "slope": est.to_dict(),
        "slope_bootstrap": boot.to_dict(),
        "slope_units": "change in y per decade (10x) of x (OLS on log10 x)",
        "p_value": p,
        "p_min": p_min,
        "alpha": alpha,
        "detected": detected,
        "verdict": verdict,
        "statement": statement,
        "power": power,
        **power_info,
        "n": n,
        "n_x": n_x,
        "n_groups": n_groups,
        "x_min": float(xa.min()),
        "x_max": float(xa.max()),
        "test": f"two-sided permutation test of the OLS slope on log10 x, sizes permuted {perm_kind}; "
        "ties count as extreme; CI by test inversion",
        "exact": exact,
        "n_perm": int(perms.shape[0]),
        "n_sim": n_sim,
        "seed": seed,
    }


# Relative tolerance for "as extreme as observed": slopes computed through different summation
# orders differ by ~1e-16 of the data's scale; 1e-9 absorbs that and nothing real.
_TIE_TOL = 1e-9

# Permutations used per simulated data set for the detectable slope (p-value resolution 0.001).
_POWER_PERMS = 999


def _group_codes(groups: ArrayLike | None, n: int) -> IntArray:
    """Integer code 0..g-1 of each point's group (all 0 without groups)."""
    if groups is None:
        return np.zeros(n, dtype=np.intp)
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise FitInputError(f"groups needs one label per point ({n}), got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    return np.asarray(codes.reshape(-1), dtype=np.intp)


def _slope_weights(t: FloatArray, codes: IntArray) -> FloatArray:
    """Weights c with c @ y = the within-group OLS slope of y on t (c @ t = 1)."""
    counts = np.bincount(codes)
    t_c = t - (np.bincount(codes, weights=t) / counts)[codes]
    s_tt = float(t_c @ t_c)
    if s_tt <= 0.0:
        raise FitInputError("a trend test needs some group (seed) with at least 2 distinct x")
    return np.asarray(t_c / s_tt)


def _permuted_weights(coef: FloatArray, perms: IntArray) -> FloatArray:
    """Rows w_p with w_p @ y = coef @ y[perms[p]] (the slope of each permuted data set)."""
    weights = np.zeros(perms.shape, dtype=np.float64)
    np.put_along_axis(weights, perms, np.broadcast_to(coef, perms.shape), axis=1)
    return weights


def _detectable_slope(
    t: FloatArray,
    y: FloatArray,
    codes: IntArray,
    coef: FloatArray,
    weights: FloatArray,
    exact: bool,
    slope: float,
    *,
    alpha: float,
    power: float,
    n_sim: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Minimum detectable slope of the permutation test, by simulation (see ``trend_test``)."""
    from scipy import optimize
    from scipy import stats as sps

    n, n_groups = t.size, int(codes.max()) + 1
    dof = n - n_groups - 1
    counts = np.bincount(codes)
    t_c = t - (np.bincount(codes, weights=t) / counts)[codes]
    resid = y - (np.bincount(codes, weights=y) / counts)[codes] - slope * t_c
    out: dict[str, Any] = {
        "min_detectable_slope": None,
        "min_detectable_slope_t": None,
        "residual_sd": None,
        "residual_dof": dof,
        "mds_method": f"simulation: within-group permutations of the rescaled residuals, "
        f"{n_sim} data sets, permutation test as above; _t: noncentral t",
    }
    if dof <= 0:
        return out
    sd = math.sqrt(float(resid @ resid) / dof)
    tol = _TIE_TOL * float(np.abs(coef).sum()) * (float(np.abs(y).max()) + float(np.abs(t).max()))
    sd = 0.0 if sd <= tol else sd
    out["residual_sd"] = sd
    se = sd * math.sqrt(float(coef @ coef))  # SE of the OLS slope: sd / sqrt(sum t_c^2)

    # Normal theory: power of the two-sided t test at true slope s is P(|T'| > t_crit) with T'
    # noncentral t (dof, s / se).
    if se > 0:
        t_crit = float(sps.t.ppf(1 - alpha / 2, dof))

        def t_power(s: float) -> float:
            nc = s / se
            # The wrong-sign tail is negligible here, and scipy returns NaN for it at large nc.
            wrong_sign = float(np.nan_to_num(sps.nct.cdf(-t_crit, dof, nc)))
            return float(sps.nct.sf(t_crit, dof, nc)) + wrong_sign - power

        # Power exceeds 0.99 by nc = t_crit + 10 at any dof >= 1.
        out["min_detectable_slope_t"] = float(optimize.brentq(t_power, 0.0, se * (t_crit + 10)))

    # The permutation test on simulated data: null residuals permuted within group plus s * t.
    if exact and weights.shape[0] <= _POWER_PERMS:
        w, extra = weights, 0
    else:
        keep = min(weights.shape[0], _POWER_PERMS)
        w, extra = weights[rng.choice(weights.shape[0], size=keep, replace=False)], 1
    scaled = resid * math.sqrt((n - n_groups) / dof)
    sim_perms, _ = group_permutations(codes, n_sim, rng, exact=False)
    null = scaled[sim_perms]  # (n_sim, n)
    a_perm, a_obs, b_perm = null @ w.T, null @ coef, w @ t
    base_tol = _TIE_TOL * float(np.abs(coef).sum()) * float(np.abs(scaled).max() + np.abs(t).max())

    # Reject when at most `allowed` permuted slopes are as extreme: p = (extra + hits) /
    # (extra + P) <= alpha.
    allowed = math.floor(alpha * (extra + w.shape[0]) + 1e-9) - extra
    buf = np.empty_like(a_perm)

    def sim_power(s: float) -> float:
        rejected = 0
        for signed in (s, -s):
            np.multiply(b_perm, signed, out=buf)
            np.add(buf, a_perm, out=buf)
            np.abs(buf, out=buf)
            bar = np.abs(a_obs + signed) - base_tol * (1 + abs(signed))
            hits = np.count_nonzero(buf >= bar[:, None], axis=1)
            rejected += int(np.count_nonzero(hits <= allowed))
        return rejected / (2 * a_obs.size)

    reach = 1e6 * max(se, tol, 1e-12)
    if sim_power(reach) < power:
        return out  # even a huge slope is not detected: too few permutations for alpha
    if sd == 0.0:
        out["min_detectable_slope"] = 0.0
        return out
    lo_s, hi_s = 0.0, max(out["min_detectable_slope_t"] or se, se)
    for _ in range(80):  # sim_power(reach) >= power, so doubling gets there
        if sim_power(hi_s) >= power:
            break
        lo_s, hi_s = hi_s, 2 * hi_s
    for _ in range(40):
        mid = (lo_s + hi_s) / 2
        if sim_power(mid) >= power:
            hi_s = mid
        else:
            lo_s = mid
        if hi_s - lo_s <= 5e-3 * hi_s:  # well inside the ~2.5% Monte Carlo error at n_sim 400
            break
    out["min_detectable_slope"] = hi_s
    return out


def _slopes(t: FloatArray, y: FloatArray) -> FloatArray:
    """OLS slope of each row of y (..., n) on the matching rows of t."""
    tc = t - t.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((tc * yc).sum(axis=-1) / (tc * tc).sum(axis=-1))


def _invert(p_at: Callable[[float], float], center: float, step: float, alpha: float) -> float:
    """The end of the acceptance region {b : p(b) > alpha} in the direction of ``step``.

    p(center) = 1; step outward until p <= alpha, then bisect to ~1e-6 of the step.
    """
    inner, outer = center, center + step
    for _ in range(60):
        if p_at(outer) <= alpha:
            break
        inner, outer = outer, outer + 2 * (outer - center)
    else:
        return math.copysign(math.inf, step)
    for _ in range(60):
        mid = (inner + outer) / 2
        if p_at(mid) > alpha:
            inner = mid
        else:
            outer = mid
        if abs(outer - inner) <= 1e-6 * abs(step):
            break
    return inner


def _bootstrap_slope(
    t: FloatArray,
    y: FloatArray,
    alpha: float,
    n_boot: int,
    rng: np.random.Generator,
    resample: Resample,
) -> Estimate:
    """Percentile bootstrap of the OLS slope (vectorised; within-x draws rescaled)."""
    scheme = resolve_scheme(t, resample)
    n = t.size
    if scheme == "within_x":
        idx = np.empty((n_boot, n), dtype=np.intp)
        ys = np.empty((n_boot, n))
        for v in np.unique(t):
            g = np.flatnonzero(t == v)
            pick = g[rng.integers(0, g.size, size=(n_boot, g.size))]
            idx[:, g] = pick
            mean = y[g].mean()
            c = math.sqrt(g.size / (g.size - 1)) if g.size > 1 else 1.0
            ys[:, g] = mean + c * (y[pick] - mean)
        boot = _slopes(t[idx], ys)
    else:
        idx = rng.integers(0, n, size=(n_boot, n))
        boot = _slopes(t[idx], y[idx])
    return percentile_estimate(
        float(_slopes(t, y)),
        boot,
        n=n,
        level=1 - alpha,
        method=method_name(1 - alpha, scheme),
    )


def _human(x: float) -> str:
    """12000 -> "12k", 3.3e5 -> "330k", 2.1e6 -> "2.1M"; small values as three digits."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
