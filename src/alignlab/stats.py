"""Estimates with intervals: every number alignlab reports carries its uncertainty.

Evals, probes and scaling fits all return an :class:`Estimate`; :func:`bootstrap` turns a sample
of per-item scores into one.
"""

from __future__ import annotations

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
    the Wilson interval stays honest there: 48/48 gives [0.93, 1.0], not certainty.

    Example:
        >>> str(wilson(48, 48))
        '1.00 [0.93, 1.00]'
    """
    from statistics import NormalDist

    if n <= 0:
        raise ValueError(f"wilson needs n > 0 trials, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n successes the bound is exactly 0 or 1; floating point would give 1 - 1e-16.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, lo, hi, n, f"wilson{round(confidence * 100)}")
