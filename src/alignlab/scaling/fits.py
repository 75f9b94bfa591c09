"""Curve fits of one metric against one scale variable, each with bootstrap intervals.

Three forms, for any metric in the store (loss, eval accuracy, backdoor persistence, probe AUROC,
head scores):

* :func:`fit_kaplan` — the pure power law L(x) = (x_c / x)^alpha of Kaplan et al. 2020
  ("Scaling Laws for Neural Language Models", eqs. 1.1-1.2), fitted as a straight line in
  log-log space. Use it for L(N) and L(D) when the loss is far from its irreducible floor.
* :func:`fit_power` — a power law with offset, y = c + k * x^(-alpha), alpha > 0. k > 0 decays
  toward the asymptote c (loss-like); k < 0 rises toward it (accuracy-like). The offset is the
  irreducible term that makes pure power laws bend at large scale (Hoffmann et al. 2022, eq. 2).
* :func:`fit_sigmoid` — a logistic in log x, y = lo + (hi - lo) / (1 + exp(-s (log x - log x0))),
  s > 0, for bounded metrics that switch between two levels (e.g. accuracy rising from chance).

Both nonlinear forms are *separable*: for fixed exponent (or slope and midpoint) the model is
linear in the remaining parameters, so those are solved exactly and only the nonlinear ones are
searched, first on a grid and then locally (variable projection, Golub & Pereyra 1973). This
needs no user initial guess and does not get stuck in the flat directions a joint optimiser
wanders into.

Uncertainty: every parameter is an :class:`~alignlab.stats.Estimate` whose interval is the
percentile bootstrap of refits, taken at Hesterberg's expanded tail probability for small
samples (see :mod:`alignlab.scaling._resample` for the resampling schemes and the expansion;
with it, 95% intervals covered the true exponent in 95-97% of simulated 6-9-size sweeps,
against 86-91% for plain percentiles). ``predict(x)`` gives the interval of the refitted curves
at x — a confidence interval for the mean curve — and ``predict(x, noise=True)`` adds to each
refit one residual drawn from the fit's residuals (inflated by sqrt(n / (n - p))), which makes
it a prediction interval for a new observation at x.

``to_dict()`` output can hold NaN or infinity (an undefined R^2, a diverging x_c);
:func:`alignlab.scaling.write_json` writes those as null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

from alignlab.scaling._resample import (
    IntArray,
    Resample,
    Resampler,
    bootstrap_params,
    expanded_tail,
    method_name,
    percentile_estimate,
    resolve_scheme,
)
from alignlab.scaling._threads import single_thread_blas
from alignlab.scaling._validate import (
    FitInputError,
    FloatArray,
    as_1d,
    check_level,
    check_n_boot,
    check_xy,
)
from alignlab.stats import Estimate

# Search range of the offset power law's exponent. Language-model exponents are ~0.05-0.5
# (Kaplan et al. 2020; Hoffmann et al. 2022); 4 leaves room for steep task metrics.
_ALPHA_MIN, _ALPHA_MAX = 1e-3, 4.0
_ALPHA_GRID = np.geomspace(_ALPHA_MIN, _ALPHA_MAX, 64)


@dataclass(frozen=True, eq=False)
class CurveFit:
    """What every one-variable fit shares: goodness of fit, provenance, prediction.

    Attributes:
        r2: coefficient of determination in the space the fit was made (log y for
            :class:`PowerLawFit`, y otherwise), weighted when ``sigma`` was given.
        n: number of points fitted.
        n_x: number of distinct x values.
        level: coverage of every interval, e.g. 0.95.
        resample: bootstrap scheme used, ``"points"`` or ``"within_x"``.
        n_boot: bootstrap refits that succeeded (the intervals' sample size).
        seed: seed of the resampling.
        tail: probability cut from each end of the bootstrap distribution — Hesterberg's
            expanded percentile for ``level`` at n - p degrees of freedom (see _resample).
        theta: internal parameter vector of the point fit.
        boot_theta: internal parameter vectors of the bootstrap refits, shape (n_boot, p).
        residuals: residuals of the point fit, in the fit space.
    """

    r2: float
    n: int
    n_x: int
    level: float
    resample: str
    n_boot: int
    seed: int
    tail: float
    theta: FloatArray = field(repr=False)
    boot_theta: FloatArray = field(repr=False)
    residuals: FloatArray = field(repr=False)

    form: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    space: ClassVar[Literal["log", "linear"]] = "linear"
    param_names: ClassVar[tuple[str, ...]] = ()

    def _eta(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        """The curve in fit space for parameter rows ``theta`` (..., p) at ``x`` (m,)."""
        raise NotImplementedError

    def _to_y(self, eta: FloatArray) -> FloatArray:
        return np.exp(eta) if self.space == "log" else eta

    @property
    def params(self) -> dict[str, Estimate]:
        """The fitted parameters by name."""
        return {name: getattr(self, name) for name in self.param_names}

    def band(
        self, x: ArrayLike, *, noise: bool = False, n_obs: int = 1
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Fitted curve and interval bounds at each x: ``(value, lo, hi)`` arrays.

        Args:
            x: where to evaluate (must be > 0).
            noise: False: confidence band of the mean curve (bootstrap of refits only).
                True: prediction band for new observations (each refit plus one residual
                drawn from the fit's residuals, inflated by sqrt(n / (n - p))).
            n_obs: with ``noise``, the band is for the mean of this many new observations
                (e.g. the number of seeds run at a held-out size): the residual draws are
                averaged over ``n_obs``.
        """
        xa = as_1d(np.atleast_1d(np.asarray(x, dtype=np.float64)), "x")
        if (xa <= 0).any():
            raise FitInputError(f"{self.form} predictions need x > 0, got min x = {xa.min():g}")
        value = self._to_y(self._eta(self.theta, xa))
        if self.boot_theta.shape[0] < 2:
            nan = np.full_like(value, np.nan)
            return value, nan, nan
        eta_b = self._eta(self.boot_theta, xa)  # (B, m)
        if noise:
            eta_b = eta_b + self._noise_draws(eta_b.shape, n_obs)
        with np.errstate(over="ignore", invalid="ignore"):
            y_b = self._to_y(eta_b)
        lo, hi = np.nanquantile(y_b, [self.tail, 1.0 - self.tail], axis=0)
        return value, lo, hi

    def predict(self, x: float, *, noise: bool = False, n_obs: int = 1) -> Estimate:
        """The fitted metric at ``x`` with its bootstrap interval.

        ``noise=False`` (default) gives a confidence interval for the mean curve; ``noise=True``
        a prediction interval for a new observation (see :meth:`band`).

        Example:
            >>> fit = fit_kaplan([1e6, 1e7, 1e8, 1e9], [4.1, 3.4, 2.9, 2.4], n_boot=200)
            >>> fit.predict(1e10).value < 2.4
            True
        """
        value, lo, hi = self.band([x], noise=noise, n_obs=n_obs)
        suffix = "refit+noise" if noise else "refit"
        return Estimate(
            float(value[0]),
            float(lo[0]),
            float(hi[0]),
            n=self.n,
            method=method_name(self.level, self.resample, suffix),
        )

    def _noise_draws(self, shape: tuple[int, ...], n_obs: int) -> FloatArray:
        if n_obs < 1:
            raise FitInputError(f"n_obs must be >= 1, got {n_obs}")
        p = len(self.theta)
        dof = max(self.n - p, 1)
        resid = self.residuals * math.sqrt(self.n / dof)
        # Own stream, derived from the fit's seed: predictions are reproducible.
        rng = np.random.default_rng([self.seed, 1])
        draws = rng.choice(resid, size=(*shape, n_obs))
        return np.asarray(draws.mean(axis=-1), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """All numbers as a JSON-ready dict (parameters as Estimate dicts)."""
        return {
            "form": self.form,
            "formula": self.formula,
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "r2": self.r2,
            "r2_space": "log y" if self.space == "log" else "y",
            "n": self.n,
            "n_x": self.n_x,
            "level": self.level,
            "resample": self.resample,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "tail": self.tail,
            "interval": "expanded percentile bootstrap of refits (Hesterberg 2015)",
        }


@dataclass(frozen=True, eq=False)
class PowerLawFit(CurveFit):
    """Kaplan et al. 2020 form y = (x_c / x)^alpha, fitted as log y = c0 - alpha log x.

    Attributes:
        alpha: exponent (> 0 when y falls with x).
        x_c: scale constant, exp(c0 / alpha). Only meaningful when the alpha interval excludes
            0: as alpha -> 0 it diverges.
    """

    alpha: Estimate
    x_c: Estimate

    form: ClassVar[str] = "power"
    formula: ClassVar[str] = "y = (x_c / x)^alpha"
    space: ClassVar[Literal["log", "linear"]] = "log"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "x_c")

    def _eta(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        return np.asarray(theta[..., 0:1] - theta[..., 1:2] * np.log(x), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class OffsetPowerFit(CurveFit):
    """y = c + k * x^(-alpha) with alpha > 0.

    Attributes:
        c: asymptote as x -> infinity (e.g. the irreducible loss).
        k: amplitude; > 0 decreasing toward c, < 0 increasing toward c.
        alpha: exponent.
        x_ref: internal scale (geometric mean of x) used for conditioning; k is reported in
            the original units of x.
    """

    c: Estimate
    k: Estimate
    alpha: Estimate
    x_ref: float

    form: ClassVar[str] = "offset_power"
    formula: ClassVar[str] = "y = c + k * x^(-alpha)"
    param_names: ClassVar[tuple[str, ...]] = ("c", "k", "alpha")

    def _eta(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        u = np.log(x / self.x_ref)
        return np.asarray(theta[..., 0:1] + theta[..., 1:2] * np.exp(-theta[..., 2:3] * u), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SigmoidFit(CurveFit):
    """y = lo + (hi - lo) / (1 + exp(-slope * (log x - log x0))), slope > 0.

    Attributes:
        lo: level as x -> 0.
        hi: level as x -> infinity (hi < lo for a falling metric).
        slope: steepness per e-fold of x; the 10%-90% transition spans a factor
            exp(2 ln 9 / slope) in x.
        x0: midpoint of the transition, in units of x.
    """

    lo: Estimate
    hi: Estimate
    slope: Estimate
    x0: Estimate

    form: ClassVar[str] = "sigmoid"
    formula: ClassVar[str] = "y = lo + (hi - lo) / (1 + exp(-slope * (log x - log x0)))"
    param_names: ClassVar[tuple[str, ...]] = ("lo", "hi", "slope", "x0")

    def _eta(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        lo, hi = theta[..., 0:1], theta[..., 1:2]
        s, m = theta[..., 2:3], theta[..., 3:4]
        return np.asarray(lo + (hi - lo) * special.expit(s * (np.log(x) - m)), dtype=np.float64)


# --------------------------------------------------------------------------- shared helpers


def _weights(y: FloatArray, sigma: FloatArray | None) -> FloatArray:
    return np.ones_like(y) if sigma is None else 1.0 / sigma**2


def _r2(y: FloatArray, fitted: FloatArray, w: FloatArray) -> float:
    ybar = float(np.average(y, weights=w))
    sst = float(np.sum(w * (y - ybar) ** 2))
    sse = float(np.sum(w * (y - fitted) ** 2))
    # A constant y has nothing to explain: R^2 is undefined, not 1 or -inf.
    return 1.0 - sse / sst if sst > 0 else float("nan")


def _shared_fields(
    xa: FloatArray,
    target: FloatArray,
    fitted: FloatArray,
    w: FloatArray,
    theta: FloatArray,
    boot: FloatArray,
    rs: Resampler,
    seed: int,
    level: float,
    tail: float,
) -> dict[str, Any]:
    """The `CurveFit` fields every form fills the same way (``target`` is y in the fit's space)."""
    return {
        "r2": _r2(target, fitted, w),
        "n": xa.size,
        "n_x": int(np.unique(xa).size),
        "level": level,
        "resample": rs.scheme,
        "n_boot": boot.shape[0],
        "seed": seed,
        "theta": theta,
        "boot_theta": boot,
        "residuals": target - fitted,
        "tail": tail,
    }


def _setup(
    x: FloatArray,
    z: FloatArray,
    level: float,
    n_boot: int,
    seed: int,
    resample: Resample,
    min_distinct: int,
) -> Resampler:
    check_level(level)
    check_n_boot(n_boot)
    scheme = resolve_scheme(x, resample)
    return Resampler(x, z, scheme, min_distinct=min_distinct, seed=seed)


# --------------------------------------------------------------------------- Kaplan power law


def _wls_line(t: FloatArray, z: FloatArray, w: FloatArray) -> FloatArray:
    """Weighted least squares z = a + b t; returns (a, b)."""
    wsum = w.sum()
    tbar, zbar = (w @ t) / wsum, (w @ z) / wsum
    stt = w @ (t - tbar) ** 2
    if stt <= 0:
        raise FloatingPointError("all x equal in this resample")
    b = (w @ ((t - tbar) * (z - zbar))) / stt
    return np.array([zbar - b * tbar, b])


@single_thread_blas
def fit_kaplan(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    resample: Resample = "auto",
) -> PowerLawFit:
    """Fit the Kaplan et al. 2020 power law y = (x_c / x)^alpha (L(N), L(D) or L(C)).

    Least squares on log y = alpha log x_c - alpha log x: the noise in losses across seeds is
    roughly multiplicative, and this is the fit Kaplan et al. show as straight lines in their
    figure 1.

    Args:
        x: scale (non-embedding parameters N, tokens D, or compute C); > 0.
        y: the metric, > 0 (usually loss).
        sigma: optional standard errors of y; weights become (y / sigma)^2 in log space
            (delta method).
        level: interval coverage.
        n_boot: bootstrap refits (closed-form, so thousands are cheap).
        seed: resampling seed.
        resample: ``"auto"``, ``"points"`` or ``"within_x"`` (see module docs).

    Returns:
        PowerLawFit with ``alpha`` and ``x_c`` as Estimates.

    Raises:
        FitInputError: fewer than 3 distinct x, x <= 0, y <= 0, NaN, mismatched lengths.

    Example:
        >>> import numpy as np
        >>> n = np.geomspace(1e6, 1e9, 6)
        >>> fit = fit_kaplan(n, (8.8e13 / n) ** 0.076, n_boot=100)
        >>> round(fit.alpha.value, 3)
        0.076
    """
    xa, ya, sa = check_xy(x, y, what="power-law", n_params=2, sigma=sigma, y_positive=True)
    t, z = np.log(xa), np.log(ya)
    w = _weights(ya, None if sa is None else sa / ya)
    theta = _wls_line(-t, z, w)  # (c0, alpha)
    rs = _setup(xa, z, level, n_boot, seed, resample, min_distinct=3)
    boot = bootstrap_params(lambda i, zi: _wls_line(-t[i], zi, w[i]), rs, n_boot, 2)
    fitted = theta[0] - theta[1] * t
    method = method_name(level, rs.scheme)
    tail = expanded_tail(level, xa.size, xa.size - 2, rs.scheme)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # x_c = exp(c0 / alpha) diverges as alpha -> 0 (a flat metric): inf, not an error.
        x_c_boot = np.exp(boot[:, 0] / boot[:, 1])
        x_c = float(np.exp(np.float64(theta[0]) / np.float64(theta[1])))
    return PowerLawFit(
        **_shared_fields(xa, z, fitted, w, theta, boot, rs, seed, level, tail),
        alpha=percentile_estimate(theta[1], boot[:, 1], n=xa.size, level=level, method=method, tail=tail),
        x_c=percentile_estimate(x_c, x_c_boot, n=xa.size, level=level, method=method, tail=tail),
    )


# --------------------------------------------------------------------------- offset power law


def _profile_power(
    u: FloatArray, y: FloatArray, w: FloatArray, alphas: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Best (c, k) and weighted RSS for each exponent in ``alphas``; u = log(x / x_ref)."""
    basis = np.exp(-np.outer(alphas, u))  # (G, n)
    wn = w / w.sum()
    bbar = basis @ wn
    ybar = wn @ y
    db = basis - bbar[:, None]
    dy = y - ybar
    sbb = (db**2) @ w
    sby = db @ (w * dy)
    k = np.where(sbb > 1e-300, sby / np.maximum(sbb, 1e-300), 0.0)
    c = ybar - k * bbar
    rss = float(w @ dy**2) - k * sby
    return c, k, np.maximum(rss, 0.0)


def _solve_power(u: FloatArray, y: FloatArray, w: FloatArray) -> FloatArray:
    """(c, k_ref, alpha) minimising weighted RSS: grid over log alpha, then Brent."""
    _, _, rss = _profile_power(u, y, w, _ALPHA_GRID)
    i = int(np.argmin(rss))
    lo_a = math.log(_ALPHA_GRID[max(i - 1, 0)])
    hi_a = math.log(_ALPHA_GRID[min(i + 1, _ALPHA_GRID.size - 1)])

    def obj(log_a: float) -> float:
        return float(_profile_power(u, y, w, np.array([math.exp(log_a)]))[2][0])

    res = optimize.minimize_scalar(obj, bounds=(lo_a, hi_a), method="bounded", options={"xatol": 1e-7})
    alpha = math.exp(float(res.x)) if res.fun <= rss[i] else float(_ALPHA_GRID[i])
    c, k, _ = _profile_power(u, y, w, np.array([alpha]))
    return np.array([c[0], k[0], alpha])


@single_thread_blas
def fit_power(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    resample: Resample = "auto",
) -> OffsetPowerFit:
    """Fit y = c + k * x^(-alpha) (alpha > 0) to any metric, by least squares in y.

    Args:
        x: scale (parameters, tokens, FLOPs, or training steps); > 0.
        y: the metric (any sign).
        sigma: optional standard errors of y (weights 1 / sigma^2).
        level: interval coverage.
        n_boot: bootstrap refits.
        seed: resampling seed.
        resample: ``"auto"``, ``"points"`` or ``"within_x"``.

    Returns:
        OffsetPowerFit with ``c``, ``k``, ``alpha`` as Estimates.

    Raises:
        FitInputError: fewer than 4 distinct x, x <= 0, NaN, mismatched lengths.

    Example:
        >>> import numpy as np
        >>> n = np.geomspace(1e6, 1e9, 8)
        >>> fit = fit_power(n, 1.7 + 400 * n ** -0.34, n_boot=100)
        >>> round(fit.alpha.value, 2), round(fit.c.value, 2)
        (0.34, 1.7)
    """
    xa, ya, sa = check_xy(x, y, what="offset power-law", n_params=3, sigma=sigma)
    x_ref = float(np.exp(np.mean(np.log(xa))))
    u = np.log(xa / x_ref)
    w = _weights(ya, sa)
    theta = _solve_power(u, ya, w)
    rs = _setup(xa, ya, level, n_boot, seed, resample, min_distinct=4)
    boot = bootstrap_params(lambda i, yi: _solve_power(u[i], yi, w[i]), rs, n_boot, 3)
    fitted = theta[0] + theta[1] * np.exp(-theta[2] * u)
    method = method_name(level, rs.scheme)
    tail = expanded_tail(level, xa.size, xa.size - 3, rs.scheme)

    def est(value: float, samples: FloatArray) -> Estimate:
        return percentile_estimate(value, samples, n=xa.size, level=level, method=method, tail=tail)

    # k in original units of x: k_ref * (x / x_ref)^-alpha = (k_ref * x_ref^alpha) * x^-alpha.
    with np.errstate(over="ignore", invalid="ignore"):
        k_boot = boot[:, 1] * x_ref ** boot[:, 2]
    return OffsetPowerFit(
        **_shared_fields(xa, ya, fitted, w, theta, boot, rs, seed, level, tail),
        c=est(theta[0], boot[:, 0]),
        k=est(theta[1] * x_ref ** theta[2], k_boot),
        alpha=est(theta[2], boot[:, 2]),
        x_ref=x_ref,
    )


# --------------------------------------------------------------------------- sigmoid in log x


class _SigmoidProblem:
    """Variable projection for the sigmoid: (lo, hi) solved exactly for each (slope, mid)."""

    def __init__(
        self,
        t: FloatArray,
        y: FloatArray,
        w: FloatArray,
        lo: float | None,
        hi: float | None,
        s_max: float | None = None,
    ) -> None:
        self.t, self.y, self.w = t, y, w
        self.lo_fixed, self.hi_fixed = lo, hi
        span = float(t.max() - t.min())
        gaps = np.diff(np.unique(t))
        self.span = span
        # Slopes from a transition wider than the data to a step between the closest sizes
        # (or to ``s_max``, which emergence.py uses to allow only wide transitions).
        self.log_s_min = math.log(0.5 / span)
        self.log_s_max = math.log(40.0 / float(gaps.min()) if s_max is None else s_max)
        self.log_s_min = min(self.log_s_min, self.log_s_max - 1.0)
        self.m_min, self.m_max = float(t.min()) - span, float(t.max()) + span
        mids = (np.unique(t)[:-1] + np.unique(t)[1:]) / 2
        self.m_grid = np.unique(
            np.concatenate([np.linspace(t.min() - 0.5 * span, t.max() + 0.5 * span, 33), mids])
        )
        self.s_grid = np.exp(np.linspace(self.log_s_min, self.log_s_max, 16))

    def levels(self, s: FloatArray, m: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Best (lo, hi) and weighted RSS for each pair (s[j], m[j])."""
        t, y, w = self.t, self.y, self.w
        sig = special.expit(s[:, None] * (t[None, :] - m[:, None]))  # (G, n)
        b0, b1 = 1.0 - sig, sig
        if self.lo_fixed is not None and self.hi_fixed is not None:
            lo = np.full(s.shape, self.lo_fixed)
            hi = np.full(s.shape, self.hi_fixed)
        elif self.lo_fixed is not None:
            r = y - self.lo_fixed * b0
            hi = ((b1 * r) @ w) / np.maximum((b1**2) @ w, 1e-300)
            lo = np.full(s.shape, self.lo_fixed)
        elif self.hi_fixed is not None:
            r = y - self.hi_fixed * b1
            lo = ((b0 * r) @ w) / np.maximum((b0**2) @ w, 1e-300)
            hi = np.full(s.shape, self.hi_fixed)
        else:
            # 2x2 normal equations per grid point; a tiny ridge keeps a transition far outside
            # the data (b0 or b1 ~ constant) solvable instead of singular.
            ridge = 1e-10 * float(w.sum())
            a11 = (b0**2) @ w + ridge
            a22 = (b1**2) @ w + ridge
            a12 = (b0 * b1) @ w
            r0, r1 = (b0 * y) @ w, (b1 * y) @ w
            det = a11 * a22 - a12**2
            lo = (a22 * r0 - a12 * r1) / det
            hi = (a11 * r1 - a12 * r0) / det
        fitted = lo[:, None] * b0 + hi[:, None] * b1
        rss = ((y[None, :] - fitted) ** 2) @ w
        return lo, hi, rss

    def residuals(self, p: FloatArray) -> FloatArray:
        """Weighted residuals at (log slope, midpoint), the levels projected out."""
        s, m = np.array([math.exp(p[0])]), np.array([p[1]])
        lo, hi, _ = self.levels(s, m)
        sig = special.expit(s[0] * (self.t - m[0]))
        return np.asarray(np.sqrt(self.w) * (self.y - lo[0] - (hi[0] - lo[0]) * sig))

    def solve(self, start: FloatArray | None = None) -> FloatArray:
        """(lo, hi, slope, log x0): grid over (log slope, midpoint), then bounded least squares."""
        ls, mm = np.meshgrid(np.log(self.s_grid), self.m_grid, indexing="ij")
        ls, mm = ls.ravel(), mm.ravel()
        _, _, rss = self.levels(np.exp(ls), mm)
        j = int(np.argmin(rss))
        p0, f0 = np.array([ls[j], mm[j]]), float(rss[j])
        if start is not None:
            # A bootstrap refit also tries the full-data optimum; keep whichever start is better.
            ps = np.array([math.log(start[2]), start[3]])
            ps = np.clip(ps, [self.log_s_min, self.m_min], [self.log_s_max, self.m_max])
            fs = float(np.sum(self.residuals(ps) ** 2))
            if fs < f0:
                p0, f0 = ps, fs
        res = optimize.least_squares(
            self.residuals,
            p0,
            bounds=([self.log_s_min, self.m_min], [self.log_s_max, self.m_max]),
            x_scale=[1.0, max(self.span, 1e-12) / 4],
            xtol=1e-10,
            ftol=1e-12,
        )
        p = res.x if 2 * float(res.cost) <= f0 else p0
        lo, hi, _ = self.levels(np.array([math.exp(p[0])]), np.array([p[1]]))
        return np.array([lo[0], hi[0], math.exp(p[0]), p[1]])


@single_thread_blas
def fit_sigmoid(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    lo: float | None = None,
    hi: float | None = None,
    level: float = 0.95,
    n_boot: int = 500,
    seed: int = 0,
    resample: Resample = "auto",
) -> SigmoidFit:
    """Fit a logistic in log x: y = lo + (hi - lo) / (1 + exp(-slope (log x - log x0))).

    Args:
        x: scale; > 0.
        y: the metric.
        sigma: optional standard errors of y (weights 1 / sigma^2).
        lo: fix the small-x level (e.g. chance accuracy 0.25) instead of fitting it.
        hi: fix the large-x level (e.g. 1.0) instead of fitting it.
        level: interval coverage.
        n_boot: bootstrap refits (each a small 2-D search, ~15 ms on a busy core).
        seed: resampling seed.
        resample: ``"auto"``, ``"points"`` or ``"within_x"``.

    Returns:
        SigmoidFit with ``lo``, ``hi``, ``slope``, ``x0`` as Estimates (a fixed level is an
        Estimate with zero-width interval and method ``"fixed"``).

    Raises:
        FitInputError: too few distinct x (free parameters + 1), x <= 0, NaN.

    Example:
        >>> import numpy as np
        >>> n = np.geomspace(1e6, 1e10, 12)
        >>> acc = 0.25 + 0.7 / (1 + np.exp(-2.0 * (np.log(n) - np.log(3e8))))
        >>> fit = fit_sigmoid(n, acc, n_boot=50)
        >>> f"{fit.x0.value:.2e}"
        '3.00e+08'
    """
    n_free = 2 + (lo is None) + (hi is None)
    xa, ya, sa = check_xy(x, y, what="sigmoid", n_params=n_free, sigma=sigma)
    for name, v in (("lo", lo), ("hi", hi)):
        if v is not None and not math.isfinite(v):
            raise FitInputError(f"fixed {name} must be a finite number, got {v}")
    t = np.log(xa)
    w = _weights(ya, sa)
    theta = _SigmoidProblem(t, ya, w, lo, hi).solve()
    rs = _setup(xa, ya, level, n_boot, seed, resample, min_distinct=n_free + 1)

    def refit(i: IntArray, yi: FloatArray) -> FloatArray:
        return _SigmoidProblem(t[i], yi, w[i], lo, hi).solve(start=theta)

    boot = bootstrap_params(refit, rs, n_boot, 4)
    fitted = theta[0] + (theta[1] - theta[0]) * special.expit(theta[2] * (t - theta[3]))
    method = method_name(level, rs.scheme)
    tail = expanded_tail(level, xa.size, xa.size - n_free, rs.scheme)

    def est(value: float, samples: FloatArray, fixed: float | None = None) -> Estimate:
        if fixed is not None:
            return Estimate(float(fixed), float(fixed), float(fixed), n=xa.size, method="fixed")
        return percentile_estimate(value, samples, n=xa.size, level=level, method=method, tail=tail)

    return SigmoidFit(
        **_shared_fields(xa, ya, fitted, w, theta, boot, rs, seed, level, tail),
        lo=est(theta[0], boot[:, 0], lo),
        hi=est(theta[1], boot[:, 1], hi),
        slope=est(theta[2], boot[:, 2]),
        x0=est(math.exp(theta[3]), np.exp(boot[:, 3])),
    )
