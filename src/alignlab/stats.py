"""Estimates with intervals: every number alignlab reports carries its uncertainty.

Evals, probes and scaling fits all return an :class:`Estimate`. This is the one module that makes
intervals; which function to use depends on what was sampled:

* :func:`bootstrap` — many items (eval prompts, probe examples): percentile bootstrap of a
  statistic over the items.
* :func:`bootstrap_rows` — the same for a statistic of several columns of the items (a ratio, a
  correlation), resampled as rows.
* :func:`wilson` — one proportion from n trials (Wilson 1927); honest at 0 and n successes.
* :func:`seed_interval` — a handful of seeds (2-5 training runs): Student-t interval of the mean.
* :func:`rate_over_seeds` — a rate per seed, each from many prompts: the t interval over the
  per-seed rates, widened where needed to the pooled Wilson interval.
* :func:`difference` — the difference of two independent Estimates (e.g. a model's clean accuracy
  against its base model's).

Why not bootstrap over seeds: with n values the percentile bootstrap's interval is at most
[min, max], and at 3 seeds it is exactly that, which contains the mean with probability
1 - 2 (1/2)^3 = 0.75 for a symmetric distribution (0.50 at 2 seeds); tests/test_stats_coverage.py
measures it. The t interval is exact for normal seed-to-seed noise and, measured there, covers
>= 0.93 at 2, 3 and 5 seeds for bounded data with |skewness| <= 0.8 (beta(3, 6): 0.942-0.945;
beta(8, 2): 0.931-0.940); it undercovers for strongly skewed values (beta(1, 4), skewness 1.05:
0.91), where no interval from 3 values can do much better without assumptions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Callable[..., Any]

# Cap on resampled elements held in memory at once (~32 MB of float64): large samples are
# bootstrapped in chunks of resamples instead of one (n_boot, n) matrix.
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval.

    Attributes:
        value: the point estimate (the statistic on the full sample).
        lo: lower end of the interval.
        hi: upper end of the interval.
        n: sample size the estimate is based on.
        method: how the interval was made, e.g. ``"bootstrap95"``.

    Example:
        >>> str(Estimate(0.93, 0.88, 0.97, n=200, method="bootstrap95"))
        '0.93 [0.88, 0.97]'
    """

    value: float
    lo: float
    hi: float
    n: int
    method: str

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"Estimate.n must be >= 0, got {self.n}")
        if self.lo > self.hi:  # NaN compares False, so NaN bounds are allowed through
            raise ValueError(f"Estimate interval is reversed: lo={self.lo} > hi={self.hi}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimate:
        """Rebuild an Estimate from :meth:`to_dict` output or a store metrics row.

        Keys other than the five fields are ignored, so a row from ``Store.metrics`` works.

        Raises:
            ValueError: a field is missing or None (e.g. a plain metric without an interval).
        """
        missing = [k for k in ("value", "lo", "hi", "n", "method") if data.get(k) is None]
        if missing:
            raise ValueError(f"not an Estimate: missing {', '.join(missing)} in {dict(data)!r}")
        return cls(
            value=float(data["value"]),
            lo=float(data["lo"]),
            hi=float(data["hi"]),
            n=int(data["n"]),
            method=str(data["method"]),
        )

    def __str__(self) -> str:
        if math.isnan(self.lo) or math.isnan(self.hi):
            # An interval that could not be made (e.g. one seed) says so instead of "[nan, nan]".
            return f"{self.value:.4g} (n/a: {self.method})"
        half_width = (self.hi - self.lo) / 2
        if not (math.isfinite(half_width) and half_width > 0):
            return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"
        # Decimals down to the half-width's leading digit, so the interval shows; at least two.
        decimals = min(10, max(2, -math.floor(math.log10(half_width))))
        return f"{self.value:.{decimals}f} [{self.lo:.{decimals}f}, {self.hi:.{decimals}f}]"


def bootstrap(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Percentile-bootstrap confidence interval of ``statistic`` over a 1-D sample.

    Resampling is vectorised: ``statistic`` is called on a ``(chunk, n)`` matrix with
    ``axis=-1`` when it accepts that (``np.mean``, ``np.median``, ``np.std`` ...), and once per
    resample otherwise.

    Args:
        values: the per-item scores (e.g. 0/1 correctness of each eval item).
        statistic: maps a sample to a number.
        n_boot: number of resamples.
        seed: seed for the resampling; the same seed gives the same interval.
        confidence: interval coverage, in (0, 1).

    Returns:
        ``Estimate(statistic(values), lo, hi, n=len(values), method="bootstrap95")`` (the method
        names the confidence level in percent).

    Raises:
        ValueError: empty or non-1-D input, non-finite values, or bad ``n_boot``/``confidence``.

    Example:
        >>> est = bootstrap([1, 0, 1, 1, 1, 0, 1, 1], n_boot=1000, seed=0)
        >>> est.value, est.n, est.method
        (0.75, 8, 'bootstrap95')
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"bootstrap needs a 1-D sample, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("bootstrap needs at least one value, got an empty sample")
    if not np.isfinite(arr).all():
        raise ValueError("bootstrap values contain NaN or infinity; drop or fix them first")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    n = arr.size
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    stats = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = _apply_rows(statistic, arr[idx])

    alpha = 1.0 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1.0 - alpha / 2])
    return Estimate(
        value=float(statistic(arr)),
        lo=float(lo),
        hi=float(hi),
        n=n,
        method=f"bootstrap{confidence * 100:g}",
    )


def bootstrap_rows(
    n: int, statistic: Callable[[NDArray[np.intp]], float], n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Percentile-bootstrap 95% interval of a statistic of rows (a ratio, a correlation...).

    For statistics that need several columns of the same rows, which :func:`bootstrap` (one 1-D
    sample) cannot resample together: ``statistic`` receives an array of row indices (a resample
    of ``range(n)``) and computes the statistic over those rows. Resamples where it is undefined
    (NaN) are dropped; if it is undefined on the full sample, or on every resample, the bounds are
    NaN.
    """
    value = float(statistic(np.arange(n)))
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)])
    stats = stats[np.isfinite(stats)]
    if not math.isfinite(value) or stats.size == 0:
        return Estimate(value, math.nan, math.nan, n, "bootstrap95")
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return Estimate(value, float(lo), float(hi), n, "bootstrap95")


def _apply_rows(statistic: Statistic, samples: NDArray[np.float64]) -> NDArray[np.float64]:
    """``statistic`` of each row, vectorised when the statistic takes an ``axis`` argument."""
    try:
        out = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
    except TypeError:
        out = None
    if out is None or out.shape != (samples.shape[0],):
        out = np.array([statistic(row) for row in samples], dtype=np.float64)
    return out


def wilson(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """A proportion with its Wilson score interval (Wilson 1927).

    Rates near 0 or 1 (attack success of an installed backdoor, false triggers of a clean model)
    are exactly where the percentile bootstrap collapses to a zero-width interval such as [1, 1];
    the Wilson interval stays honest there: 48/48 gives [0.93, 1.0], not certainty. Same bounds
    as ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` (a test checks), computed
    here in closed form so that :func:`rate_over_seeds` can vectorise it.

    Example:
        >>> str(wilson(48, 48))
        '1.00 [0.93, 1.00]'
    """
    if n <= 0:
        raise ValueError(f"wilson needs n > 0 trials, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    _check_confidence(confidence)
    lo, hi = _wilson_bounds(np.float64(successes), np.float64(n), confidence)
    return Estimate(successes / n, float(lo), float(hi), n, f"wilson{round(confidence * 100)}")


def seed_interval(
    values: ArrayLike,
    confidence: float = 0.95,
    *,
    bounds: tuple[float, float] | None = None,
) -> Estimate:
    """Mean over seeds with its Student-t interval (``mean ± t_{n-1} s / sqrt(n)``).

    For a handful of training runs (2-5 seeds) of one configuration. The t interval is exact for
    normal seed-to-seed noise and holds up for moderately skewed bounded values (module docs;
    measured in tests/test_stats_coverage.py). If each seed's value is itself an average over
    items (a rate over n prompts, a mean log-probability), the spread of the per-seed values
    already contains the items' sampling noise, so this interval covers both; for rates prefer
    :func:`rate_over_seeds`, which also stays honest when every seed sits at 0 or 1.

    Args:
        values: one value per seed.
        confidence: interval coverage, in (0, 1).
        bounds: the variable's natural range, e.g. ``(0, 1)`` for a rate; the interval is clipped
            to it (the t interval is symmetric and would otherwise run past 1 at the ceiling).

    Returns:
        ``Estimate(mean, lo, hi, n=len(values), method="t95 over seeds")``. One seed gives NaN
        bounds with method ``"single seed"`` (printed as ``0.83 (n/a: single seed)``): a single
        run says nothing about seed-to-seed variation. Identical values give a zero-width
        interval.

    Raises:
        ValueError: empty or non-1-D input, NaN or infinity, values outside ``bounds``, or a bad
            ``confidence``.

    Example:
        >>> str(seed_interval([0.62, 0.70, 0.66]))
        '0.66 [0.56, 0.76]'
        >>> str(seed_interval([0.91, 0.99, 0.97], bounds=(0, 1)))
        '0.96 [0.85, 1.00]'
    """
    arr = _check_sample(values, "seed_interval")
    _check_confidence(confidence)
    if bounds is not None:
        b_lo, b_hi = float(bounds[0]), float(bounds[1])
        if not b_lo < b_hi:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        if arr.min() < b_lo or arr.max() > b_hi:
            raise ValueError(f"seed_interval values must lie within bounds {bounds}, got {arr.tolist()}")
    if arr.size == 1:
        return Estimate(float(arr[0]), math.nan, math.nan, 1, SINGLE_SEED)
    mean, lo, hi = _t_bounds(arr, confidence)
    if bounds is not None:
        lo, hi = np.clip(lo, b_lo, b_hi), np.clip(hi, b_lo, b_hi)
    return Estimate(float(mean), float(lo), float(hi), arr.size, f"t{confidence * 100:g} over seeds")


def rate_over_seeds(
    successes: ArrayLike,
    trials: ArrayLike,
    confidence: float = 0.95,
) -> Estimate:
    """A rate measured on several seeds (each seed: ``successes`` of ``trials`` prompts).

    The estimate is the mean of the per-seed rates. The interval is the t interval over the
    per-seed rates (:func:`seed_interval`, clipped to [0, 1]: it carries seed-to-seed variation
    and, through it, the prompts' sampling noise), widened where needed to contain the Wilson
    interval of the pooled counts. The widening matters at the ceiling and floor: when every
    seed scores 50/50 the t interval is [1, 1], but 150 prompts cannot rule out a rate of 0.98;
    the pooled Wilson interval is what one would report if the seeds did not differ at all, so
    no honest interval is narrower. Measured in tests/test_stats_coverage.py: plain t covers
    the rate 0.995 only ~52% of the time at 3 seeds of 50 prompts, this ~99%, and away from the
    bounds the widening changes the mean width by < 5%.

    Args:
        successes: successes per seed.
        trials: prompts per seed (one number for all seeds, or one per seed).
        confidence: interval coverage, in (0, 1).

    Returns:
        ``Estimate(mean rate, lo, hi, n=seeds, method="t95 over seeds, pooled wilson95 floor")``.
        With one seed, that seed's Wilson interval, with a method saying it has no seed-to-seed
        variation in it.

    Raises:
        ValueError: empty input, trials <= 0, successes outside [0, trials], non-integer counts,
            or a bad ``confidence``.

    Example:
        >>> str(rate_over_seeds([50, 50, 50], 50))
        '1.00 [0.98, 1.00]'
    """
    k = _check_sample(successes, "rate_over_seeds")
    m = np.broadcast_to(np.asarray(trials, dtype=np.float64), k.shape)
    _check_confidence(confidence)
    if not (np.isfinite(m).all() and (m > 0).all()):
        raise ValueError(f"trials must be positive, got {np.asarray(trials).tolist()}")
    if (k != np.round(k)).any() or (m != np.round(m)).any():
        raise ValueError("successes and trials must be whole numbers of prompts")
    if (k < 0).any() or (k > m).any():
        raise ValueError(f"successes must be in [0, trials], got {k.tolist()} of {m.tolist()}")
    if k.size == 1:
        single = wilson(int(k[0]), int(m[0]), confidence)
        return dataclasses.replace(single, method=f"{single.method} within a single seed")
    mean, lo, hi = _rate_bounds(k, m, confidence)
    c = f"{confidence * 100:g}"
    return Estimate(float(mean), float(lo), float(hi), k.size, f"t{c} over seeds, pooled wilson{c} floor")


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` for two independent Estimates, their interval half-widths added in quadrature.

    The normal approximation to the interval of a difference (for two Wilson intervals, in the
    spirit of Newcombe 1998); ``n`` is the smaller sample. NaN bounds on either side (a one-seed
    Estimate) give NaN bounds.

    Example:
        >>> str(difference(wilson(190, 200), wilson(150, 200)))
        '0.20 [0.13, 0.27]'
    """
    half = math.hypot((a.hi - a.lo) / 2, (b.hi - b.lo) / 2)
    d = a.value - b.value
    return Estimate(d, d - half, d + half, min(a.n, b.n), "difference (quadrature of 95% half-widths)")


# The method of a one-seed Estimate from seed_interval (its bounds are NaN).
SINGLE_SEED = "single seed"


def holm(p_values: ArrayLike) -> list[float]:
    """Holm (1979) step-down adjusted p-values: reject where the adjusted value is below alpha and
    the chance of any false rejection among the tests stays at most alpha, whatever their
    dependence. A study that runs several trend tests reports these beside the raw p-values.

    Hand-written (six lines) rather than adding statsmodels for ``multipletests``.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = _check_sample(p_values, "p_values")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = np.empty_like(p)
    running, m = 0.0, len(p)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, float((m - rank) * p[i])))
        out[i] = running
    return [float(v) for v in out]


def _check_sample(values: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} needs a 1-D sequence (one value per seed), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} needs at least one value, got an empty sample")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} values contain NaN or infinity; drop or fix them first")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _t_bounds(
    samples: NDArray[np.float64], confidence: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean and Student-t interval of each sample along the last axis (at least 2 values)."""
    from scipy import stats

    n = samples.shape[-1]
    mean = samples.mean(axis=-1)
    sem = samples.std(axis=-1, ddof=1) / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    return mean, mean - q * sem, mean + q * sem


def _wilson_bounds(
    k: NDArray[np.float64], n: NDArray[np.float64], confidence: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Wilson score bounds for ``k`` successes of ``n`` (broadcasting arrays)."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n successes the bound is exactly 0 or 1; floating point would give 1 - 1e-16.
    lo = np.where(k == 0, 0.0, np.maximum(0.0, centre - half))
    hi = np.where(k == n, 1.0, np.minimum(1.0, centre + half))
    return lo, hi


def _rate_bounds(
    k: NDArray[np.float64], m: NDArray[np.float64], confidence: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """:func:`rate_over_seeds` for each row of ``k`` (..., seeds) successes of ``m`` trials."""
    rates = k / m
    mean, lo, hi = _t_bounds(rates, confidence)
    w_lo, w_hi = _wilson_bounds(k.sum(axis=-1), np.broadcast_to(m, k.shape).sum(axis=-1), confidence)
    return mean, np.minimum(np.clip(lo, 0.0, 1.0), w_lo), np.maximum(np.clip(hi, 0.0, 1.0), w_hi)
