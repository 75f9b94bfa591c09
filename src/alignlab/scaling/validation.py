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

from alignlab.scaling._resample import Resample, method_name, percentile_estimate, resolve_scheme
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
    alpha: float = 0.05,
    n_perm: int = 2000,
    n_boot: int = 2000,
    seed: int = 0,
    resample: Resample = "auto",
    metric: str = "metric",
) -> dict[str, Any]:
    """Is there a monotone scale trend? OLS slope of y on log10 x with a permutation test.

    The test (Manly 2007, "Randomization, Bootstrap and Monte Carlo Methods in Biology"):

    * statistic: the OLS slope of y on log10 x (change in y per 10x of scale);
    * p-value: two-sided, from ``n_perm`` random permutations of y over the points, with the +1
      correction so that it is never 0. Exact when, under the null, the points are exchangeable
      (no dependence of y on x, equal noise at every size);
    * ``slope`` interval: the slopes b that the same permutation test does not reject when
      applied to y - b log10 x (test inversion). It has (1 - alpha) coverage under the same
      assumptions and agrees with the p-value by construction: it excludes 0 iff p < alpha.
    * ``slope_bootstrap``: the percentile bootstrap interval (resampling as in the fits),
      reported for comparison only. In simulations with 4-8 sizes and pure noise it excluded 0
      in 9-14% of data sets at the 95% level — too often to base a claim on.

    The verdict is ``"increasing"`` / ``"decreasing"`` when p < ``alpha``, otherwise
    ``"no detectable trend"`` — a null result reported as such, never a fitted trend.

    Args:
        x: scale (> 0) of each point.
        y: metric of each point.
        alpha: significance level; the intervals have coverage 1 - alpha.
        n_perm: permutations for the p-value and the interval.
        n_boot: bootstrap resamples for ``slope_bootstrap``.
        seed: seed for both.
        resample: bootstrap scheme for ``slope_bootstrap``.
        metric: the metric's name, used in the statement.

    Returns:
        JSON-ready dict: ``slope`` (Estimate dict, per decade of x), ``slope_bootstrap``,
        ``p_value``, ``verdict``, ``statement`` (one sentence for reports), ``n``, ``n_x``,
        ``x_min``, ``x_max``, ``test``.

    Raises:
        FitInputError: fewer than 3 distinct x, x <= 0, NaN, n_perm < 99.

    Example:
        >>> import numpy as np
        >>> x = np.repeat(np.geomspace(1e6, 1e9, 5), 3)
        >>> trend_test(x, np.random.default_rng(2).normal(0.5, 0.05, x.size))["verdict"]
        'no detectable trend'
    """
    xa, ya, _ = check_xy(x, y, what="trend", n_params=2)
    check_level(1.0 - alpha)
    check_n_boot(n_boot)
    if n_perm < 99:
        raise FitInputError(f"n_perm must be >= 99 for a usable p-value, got {n_perm}")
    t = np.log10(xa)
    n = t.size
    rng = np.random.default_rng(seed)
    slope = float(_slopes(t, ya))

    # Permutation test, and its inversion for the interval. Permuting y - b t gives permuted
    # slopes S(y_perm) - b S(t_perm), so one set of permutations serves every b.
    perm = np.argsort(rng.random((n_perm, n)), axis=1)
    s_y, s_t = _slopes(t, ya[perm]), _slopes(t, t[perm])

    def p_at(b: float) -> float:
        stat = abs(slope - b)
        hits = np.abs(s_y - b * s_t) >= stat * (1 - 1e-12)
        return float((1 + hits.sum()) / (n_perm + 1))

    p = p_at(0.0)
    scale = float(np.std(s_y)) or 1.0
    lo, hi = (_invert(p_at, slope, sign * scale, alpha) for sign in (-1.0, 1.0))
    method = f"permutation-inversion{100 * (1 - alpha):g}"
    est = Estimate(slope, lo, hi, n=n, method=method)
    boot = _bootstrap_slope(t, ya, alpha, n_boot, rng, resample)

    verdict = "no detectable trend"
    if p < alpha:
        verdict = "increasing" if slope > 0 else "decreasing"
    n_x = int(np.unique(xa).size)
    span = f"{n_x} sizes, {xa.min():.3g} to {xa.max():.3g}"
    numbers = (
        f"slope {slope:+.3g} per 10x, {100 * (1 - alpha):g}% CI [{lo:+.3g}, {hi:+.3g}], "
        f"permutation p = {p:.3g}"
    )
    if verdict == "no detectable trend":
        statement = f"{metric}: no detectable trend with scale at these sizes ({span}); {numbers}"
    else:
        statement = f"{metric} is {verdict} with scale ({span}): {numbers}"
    return {
        "metric": metric,
        "slope": est.to_dict(),
        "slope_bootstrap": boot.to_dict(),
        "slope_units": "change in y per 10x of x (OLS on log10 x)",
        "p_value": p,
        "alpha": alpha,
        "verdict": verdict,
        "statement": statement,
        "n": n,
        "n_x": n_x,
        "x_min": float(xa.min()),
        "x_max": float(xa.max()),
        "test": "two-sided permutation test of the OLS slope on log10 x; CI by test inversion",
        "n_perm": n_perm,
        "seed": seed,
    }


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
