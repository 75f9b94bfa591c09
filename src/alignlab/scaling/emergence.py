"""Emergence: does a metric change *suddenly* across scale or training steps?

The test (stated once, used everywhere; :data:`TEST`):

1. Fit a family of **smooth** curves to y against t (t = log x across scale, or t = x across
   training steps): a line, a quadratic, a power law with offset y = c + k x^-alpha, and a
   logistic whose 10%-90% transition is at least ``min_width`` of the t-range (a "wide"
   sigmoid). The best of them by BIC is the smooth model.
2. Fit two **abrupt** (piecewise) models with a breakpoint tau searched over the gaps of the
   data: a *step* y = a + b t + J [t > tau] (a jump, e.g. the induction-head phase change of
   Olsson et al. 2022) and a *broken stick* y = a + b1 t + b2 (t - tau)+ (a kink, e.g. a task
   accuracy flat at chance that starts to climb, Wei et al. 2022). The breakpoint counts as a
   parameter. The better by BIC is the abrupt model.
3. Emergent iff ΔBIC = BIC(smooth) - BIC(abrupt) >= ``threshold`` (default 10, "very strong"
   evidence on the scale of Kass & Raftery 1995). BIC = n log(RSS/n) + k log n (Gaussian noise
   with its variance profiled out).

BIC rather than a chi-square likelihood-ratio test: under "no change" the breakpoint is not
identified, so the LR statistic is not chi-square distributed (Davies 1987) and a nominal
p-value would be wrong. The LR statistic n log(RSS_smooth / RSS_abrupt) is reported anyway.
In simulation it flagged none of 300 pure-noise data sets of 50 steps or of 10 sizes x 3
seeds, and 1.7% at 12 single sizes; it flagged every one of 100 noisy induction-like steps.

Breakpoint interval: residual bootstrap (Efron & Tibshirani 1993, ch. 9) of the abrupt fit
— new data ŷ + resampled residuals (rescaled by sqrt(n / (n - k))), breakpoint refitted on the
same candidate grid — and the percentile interval of the refitted breakpoints. A breakpoint
is only located to within the gap between two measured x, so each candidate stands for its
whole gap ("cell"), and the interval runs from the low end of the lowest cell to the high end
of the highest: the interval never claims more resolution than the sampling has.

"Predictability and surprise" (Ganguli et al. 2022): :func:`predictability_and_surprise`
reports when the loss follows a smooth power law while a task metric at the same sizes is
abrupt — scale is predictable in aggregate, specific capabilities are not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from alignlab.scaling._threads import single_thread_blas
from alignlab.scaling._validate import (
    FitInputError,
    FloatArray,
    check_level,
    check_n_boot,
    check_xy,
)
from alignlab.scaling.fits import OffsetPowerFit, _SigmoidProblem, _solve_power, fit_power
from alignlab.stats import Estimate

Scale = Literal["log", "linear"]
Curve = Callable[[FloatArray], FloatArray]

TEST = (
    "BIC of the best abrupt model (step with jump, or broken stick; breakpoint counted as a "
    "parameter) vs the best smooth model (line, quadratic, power law with offset, sigmoid with "
    "10-90% width >= min_width of the range); emergent iff dBIC >= threshold"
)


@dataclass(frozen=True)
class _Fitted:
    """One model fitted to the data: its name, size and residual sum of squares."""

    name: str
    k: int
    rss: float
    curve: Curve = field(repr=False)
    breakpoint_index: int = -1
    change: float = float("nan")


@dataclass(frozen=True, eq=False)
class EmergenceResult:
    """Outcome of :func:`detect_emergence`.

    Attributes:
        emergent: True iff the abrupt model beats the smooth one by ``threshold`` in BIC.
        breakpoint: where the abrupt model puts the change, in units of x, with its bootstrap
            interval (meaningful when ``emergent``; always reported).
        delta_bic: BIC(best smooth) - BIC(best abrupt); > 0 favours a sudden change.
        lr_stat: n log(RSS_smooth / RSS_abrupt) (not chi-square; see module docs).
        threshold: the ΔBIC needed to call a change emergent.
        smooth_model: name of the best smooth model.
        abrupt_model: ``"step"`` or ``"broken_stick"``.
        change: size of the jump (step) or change of slope per unit t (broken stick).
        bic: BIC of every model fitted.
        scale: ``"log"`` (t = log x) or ``"linear"`` (t = x).
        n: number of points.
        test: the test, in words (:data:`TEST`).
    """

    emergent: bool
    breakpoint: Estimate
    delta_bic: float
    lr_stat: float
    threshold: float
    smooth_model: str
    abrupt_model: str
    change: float
    bic: dict[str, float]
    scale: str
    n: int
    test: str
    smooth_curve: Curve = field(repr=False)
    abrupt_curve: Curve = field(repr=False)

    def curve(self, which: Literal["smooth", "abrupt"], x: ArrayLike) -> FloatArray:
        """The fitted smooth or abrupt model at ``x`` (for plots)."""
        xa = np.asarray(x, dtype=np.float64)
        return self.smooth_curve(xa) if which == "smooth" else self.abrupt_curve(xa)

    def to_dict(self) -> dict[str, Any]:
        """All numbers as a JSON-ready dict."""
        return {
            "emergent": self.emergent,
            "breakpoint": self.breakpoint.to_dict(),
            "delta_bic": self.delta_bic,
            "lr_stat": self.lr_stat,
            "threshold": self.threshold,
            "smooth_model": self.smooth_model,
            "abrupt_model": self.abrupt_model,
            "change": self.change,
            "change_kind": "jump" if self.abrupt_model == "step" else "slope change per unit t",
            "bic": dict(self.bic),
            "scale": self.scale,
            "n": self.n,
            "test": self.test,
        }


# --------------------------------------------------------------------------- models


class _Data:
    """The points in both coordinates, and the shared BIC bookkeeping."""

    def __init__(self, x: FloatArray, y: FloatArray, scale: Scale) -> None:
        self.x, self.y, self.scale = x, y, scale
        self.t = self.to_t(x)
        self.n = y.size
        self.ut = np.unique(self.t)
        # Floor for RSS: noise-free data must not give log(0).
        self.rss_floor = 1e-12 * float(np.sum((y - y.mean()) ** 2)) + 1e-300
        # The power law needs x > 0; on a linear axis starting at step 0, shift by one gap.
        gaps = np.diff(np.unique(x))
        self.x_shift = 0.0 if x.min() > 0 else float(np.median(gaps)) - float(x.min())

    def to_t(self, x: FloatArray) -> FloatArray:
        return np.log(x) if self.scale == "log" else x

    def from_t(self, t: float) -> float:
        return math.exp(t) if self.scale == "log" else t

    def bic(self, rss: float, k: int) -> float:
        return self.n * math.log(max(rss, self.rss_floor) / self.n) + k * math.log(self.n)


def _polynomial(d: _Data, degree: int) -> _Fitted:
    mu, sd = float(d.t.mean()), float(d.t.std()) or 1.0
    coef = np.polynomial.polynomial.polyfit((d.t - mu) / sd, d.y, degree)

    def curve(x: FloatArray) -> FloatArray:
        return np.asarray(np.polynomial.polynomial.polyval((d.to_t(x) - mu) / sd, coef))

    rss = float(np.sum((d.y - curve(d.x)) ** 2))
    return _Fitted("linear" if degree == 1 else "quadratic", degree + 1, rss, curve)


def _offset_power(d: _Data) -> _Fitted:
    xs = d.x + d.x_shift
    x_ref = float(np.exp(np.mean(np.log(xs))))
    c, k, a = _solve_power(np.log(xs / x_ref), d.y, np.ones_like(d.y))

    def curve(x: FloatArray) -> FloatArray:
        return np.asarray(c + k * ((x + d.x_shift) / x_ref) ** -a)

    return _Fitted("offset_power", 3, float(np.sum((d.y - curve(d.x)) ** 2)), curve)


def _wide_sigmoid(d: _Data, min_width: float) -> _Fitted:
    span = float(d.t.max() - d.t.min())
    # 10%-90% width of a logistic with slope s is 2 ln 9 / s.
    s_max = 2 * math.log(9.0) / (min_width * span)
    lo, hi, s, m = _SigmoidProblem(d.t, d.y, np.ones_like(d.y), None, None, s_max=s_max).solve()

    def curve(x: FloatArray) -> FloatArray:
        return np.asarray(lo + (hi - lo) * special.expit(s * (d.to_t(x) - m)))

    return _Fitted("wide_sigmoid", 4, float(np.sum((d.y - curve(d.x)) ** 2)), curve)


class _Piecewise:
    """Step or broken-stick regression over a grid of breakpoints, with projections cached.

    For a fixed breakpoint both models are linear in their 3 coefficients, so the RSS of any
    response vector is |y|^2 - |Q^T y|^2 with Q an orthonormal basis of the design: one batched
    product scores every breakpoint for every bootstrap replicate at once.
    """

    def __init__(self, d: _Data, kind: Literal["step", "broken_stick"], min_segment: int) -> None:
        self.d, self.kind = d, kind
        ut = d.ut
        if kind == "step":
            # Between consecutive distinct t, min_segment distinct t on each side.
            ks = range(min_segment - 1, ut.size - min_segment)
            self.taus = np.array([(ut[k] + ut[k + 1]) / 2 for k in ks])
            self.cells = np.array([(ut[k], ut[k + 1]) for k in ks])
        else:
            cand = np.unique(np.concatenate([ut, (ut[:-1] + ut[1:]) / 2]))
            left = (ut[None, :] < cand[:, None]).sum(axis=1)
            right = (ut[None, :] > cand[:, None]).sum(axis=1)
            self.taus = cand[(left >= min_segment) & (right >= min_segment)]
            edges = (
                np.concatenate([[self.taus[0]], (self.taus[:-1] + self.taus[1:]) / 2, [self.taus[-1]]])
                if self.taus.size
                else np.empty(0)
            )
            self.cells = np.column_stack([edges[:-1], edges[1:]]) if self.taus.size else edges
        if self.taus.size == 0:
            raise FitInputError(f"too few distinct x for a {kind} fit with {min_segment} sizes on each side")
        mu, sd = float(d.t.mean()), float(d.t.std()) or 1.0
        self.mu, self.sd = mu, sd
        designs = np.stack([self._design(d.t, tau) for tau in self.taus])  # (G, n, 3)
        self.q = np.linalg.qr(designs)[0]  # (G, n, 3), orthonormal columns

    def _design(self, t: FloatArray, tau: float) -> FloatArray:
        z = (t - self.mu) / self.sd
        # A jump at tau, or a change of slope at tau (in the same scaled units as z).
        step = self.kind == "step"
        extra = (t > tau).astype(np.float64) if step else np.maximum(t - tau, 0.0) / self.sd
        return np.column_stack([np.ones_like(t), z, extra])

    def rss(self, ys: FloatArray) -> FloatArray:
        """RSS of every breakpoint for each row of ``ys`` (B, n) -> (B, G)."""
        proj = np.einsum("gnk,bn->bgk", self.q, ys)
        return np.asarray((ys**2).sum(axis=1)[:, None] - (proj**2).sum(axis=2))

    def fit(self) -> _Fitted:
        j = int(np.argmin(self.rss(self.d.y[None, :])[0]))
        tau = float(self.taus[j])
        coef = np.linalg.lstsq(self._design(self.d.t, tau), self.d.y, rcond=None)[0]

        def curve(x: FloatArray) -> FloatArray:
            return np.asarray(self._design(self.d.to_t(np.atleast_1d(x)), tau) @ coef)

        rss = float(np.sum((self.d.y - curve(self.d.x)) ** 2))
        change = float(coef[2]) if self.kind == "step" else float(coef[2]) / self.sd
        return _Fitted(self.kind, 4, rss, curve, breakpoint_index=j, change=change)


# --------------------------------------------------------------------------- the test


@single_thread_blas
def detect_emergence(
    x: ArrayLike,
    y: ArrayLike,
    *,
    scale: Scale = "log",
    threshold: float = 10.0,
    min_width: float = 0.25,
    min_segment: int = 2,
    level: float = 0.95,
    n_boot: int = 500,
    seed: int = 0,
) -> EmergenceResult:
    """Test whether ``y`` changes suddenly along ``x`` (model size, data, compute or step).

    See the module docstring (and :data:`TEST`) for the test. Replicate seeds are simply
    several points at the same x.

    Args:
        x: scale or training step of each point (> 0 when ``scale="log"``).
        y: the metric.
        scale: ``"log"`` to look for changes in log x (across model sizes), ``"linear"`` for
            changes in x itself (across training steps).
        threshold: ΔBIC needed to call the change emergent.
        min_width: the narrowest 10%-90% transition, as a fraction of the t-range, that still
            counts as smooth (a sigmoid at least this wide is in the smooth family).
        min_segment: distinct x values required on each side of a breakpoint.
        level: coverage of the breakpoint interval.
        n_boot: residual-bootstrap replicates for the breakpoint interval.
        seed: bootstrap seed.

    Returns:
        EmergenceResult (``emergent``, ``breakpoint`` Estimate in x units, ``delta_bic`` ...).

    Raises:
        FitInputError: fewer than 6 points or too few distinct x, NaN, x <= 0 on a log scale.

    Example:
        >>> import numpy as np
        >>> steps = np.arange(0, 1000, 20.0)
        >>> icl = 0.1 + 0.6 * (steps > 300) + np.random.default_rng(0).normal(0, 0.03, 50)
        >>> res = detect_emergence(steps, icl, scale="linear", n_boot=200)
        >>> res.emergent, res.breakpoint.lo <= 300 <= res.breakpoint.hi
        (True, True)
    """
    if min_segment < 2:
        raise FitInputError(f"min_segment must be >= 2, got {min_segment}")
    need = max(2 * min_segment, 5)
    xa, ya, _ = check_xy(x, y, what="emergence", n_params=4, x_positive=scale == "log", min_distinct=need)
    if scale not in ("log", "linear"):
        raise FitInputError(f"scale must be 'log' or 'linear', got {scale!r}")
    if ya.size < 6:
        raise FitInputError(f"emergence detection needs at least 6 points, got {ya.size}")
    if not 0.0 < min_width <= 1.0:
        raise FitInputError(f"min_width must be in (0, 1], got {min_width}")
    check_level(level)
    check_n_boot(n_boot)

    d = _Data(xa, ya, scale)
    smooth = [_polynomial(d, 1), _polynomial(d, 2), _offset_power(d), _wide_sigmoid(d, min_width)]
    pieces = {kind: _Piecewise(d, kind, min_segment) for kind in ("step", "broken_stick")}
    abrupt = [p.fit() for p in pieces.values()]
    bic = {m.name: d.bic(m.rss, m.k) for m in smooth + abrupt}
    best_s = min(smooth, key=lambda m: bic[m.name])
    best_a = min(abrupt, key=lambda m: bic[m.name])
    delta = bic[best_s.name] - bic[best_a.name]
    lr = d.n * math.log(max(best_s.rss, d.rss_floor) / max(best_a.rss, d.rss_floor))

    breakpoint = _breakpoint_interval(d, pieces[best_a.name], best_a, level, n_boot, seed)
    return EmergenceResult(
        emergent=bool(delta >= threshold),
        breakpoint=breakpoint,
        delta_bic=float(delta),
        lr_stat=float(lr),
        threshold=threshold,
        smooth_model=best_s.name,
        abrupt_model=best_a.name,
        change=best_a.change,
        bic=bic,
        scale=scale,
        n=d.n,
        test=TEST,
        smooth_curve=best_s.curve,
        abrupt_curve=best_a.curve,
    )


def _breakpoint_interval(
    d: _Data, piece: _Piecewise, fitted: _Fitted, level: float, n_boot: int, seed: int
) -> Estimate:
    """Residual-bootstrap percentile interval of the breakpoint, widened to whole cells."""
    rng = np.random.default_rng(seed)
    fit_y = fitted.curve(d.x)
    resid = (d.y - fit_y) * math.sqrt(d.n / max(d.n - fitted.k, 1))
    ys = fit_y[None, :] + resid[rng.integers(0, d.n, size=(n_boot, d.n))]
    j_boot = np.argmin(piece.rss(ys), axis=1)
    tail = (1.0 - level) / 2.0
    j_lo = int(np.quantile(j_boot, tail, method="lower"))
    j_hi = int(np.quantile(j_boot, 1.0 - tail, method="higher"))
    tau = float(piece.taus[fitted.breakpoint_index])
    lo_t = float(min(piece.cells[j_lo][0], tau))
    hi_t = float(max(piece.cells[j_hi][1], tau))
    return Estimate(
        d.from_t(tau),
        d.from_t(lo_t),
        d.from_t(hi_t),
        n=d.n,
        method=f"residual-bootstrap{level * 100:g}-cells",
    )


# --------------------------------------------------------------------------- Ganguli et al.


@dataclass(frozen=True, eq=False)
class SurpriseResult:
    """Ganguli et al. 2022's "predictability and surprise" at one set of model sizes.

    Attributes:
        loss_fit: offset power law of loss against size.
        loss_emergence: emergence test on the loss.
        metric_emergence: emergence test on the task metric.
        loss_smooth: loss fits a power law (R^2 >= r2_min) and shows no emergence.
        metric_abrupt: the task metric is emergent.
        surprise: both — the loss is predictable, the capability is not.
        statement: one sentence for reports.
    """

    loss_fit: OffsetPowerFit
    loss_emergence: EmergenceResult
    metric_emergence: EmergenceResult
    loss_smooth: bool
    metric_abrupt: bool
    surprise: bool
    r2_min: float
    statement: str

    def to_dict(self) -> dict[str, Any]:
        """All numbers as a JSON-ready dict."""
        return {
            "loss_fit": self.loss_fit.to_dict(),
            "loss_emergence": self.loss_emergence.to_dict(),
            "metric_emergence": self.metric_emergence.to_dict(),
            "loss_smooth": self.loss_smooth,
            "metric_abrupt": self.metric_abrupt,
            "surprise": self.surprise,
            "r2_min": self.r2_min,
            "statement": self.statement,
        }


def predictability_and_surprise(
    sizes: ArrayLike,
    loss: ArrayLike,
    metric: ArrayLike,
    *,
    metric_name: str = "task metric",
    r2_min: float = 0.95,
    threshold: float = 10.0,
    n_boot: int = 300,
    seed: int = 0,
) -> SurpriseResult:
    """Is the loss smooth in scale while a task metric jumps? (Ganguli et al. 2022)

    The loss is "smooth" when an offset power law explains it (R^2 >= ``r2_min``) and the
    emergence test does not flag it; the metric is "abrupt" when the emergence test (log
    scale) flags it. Both at once is the paper's central observation: aggregate loss is
    predictable from scale, specific capabilities appear suddenly.

    Args:
        sizes: model size of each point (> 0; replicate seeds repeat a size).
        loss: loss of each point.
        metric: the task metric of each point.
        metric_name: used in the statement.
        r2_min: R^2 the power law must reach for the loss to count as smooth.
        threshold: ΔBIC threshold of the emergence tests.
        n_boot: bootstrap replicates for the fits.
        seed: bootstrap seed.

    Example:
        >>> res = predictability_and_surprise(n, loss, acc)  # doctest: +SKIP
        >>> res.statement  # doctest: +SKIP
        'loss follows a power law in size (R^2 = 0.998) while task metric jumps near 3.2e+07 ...'
    """
    loss_fit = fit_power(sizes, loss, n_boot=n_boot, seed=seed)
    loss_em = detect_emergence(sizes, loss, threshold=threshold, n_boot=n_boot, seed=seed)
    metric_em = detect_emergence(sizes, metric, threshold=threshold, n_boot=n_boot, seed=seed)
    smooth = bool(loss_fit.r2 >= r2_min and not loss_em.emergent)
    abrupt = metric_em.emergent
    bp = metric_em.breakpoint
    loss_part = (
        f"loss follows a power law in size (R^2 = {loss_fit.r2:.3f})"
        if smooth
        else f"loss is not a smooth power law in size (R^2 = {loss_fit.r2:.3f}, emergent: {loss_em.emergent})"
    )
    metric_part = (
        f"{metric_name} changes abruptly near {bp.value:.3g} (interval {bp.lo:.3g} to "
        f"{bp.hi:.3g}; dBIC = {metric_em.delta_bic:.1f})"
        if abrupt
        else f"{metric_name} shows no abrupt change (dBIC = {metric_em.delta_bic:.1f})"
    )
    return SurpriseResult(
        loss_fit=loss_fit,
        loss_emergence=loss_em,
        metric_emergence=metric_em,
        loss_smooth=smooth,
        metric_abrupt=abrupt,
        surprise=smooth and abrupt,
        r2_min=r2_min,
        statement=f"{loss_part}, while {metric_part}",
    )
