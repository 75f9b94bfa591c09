"""Input checks at the boundary of every fit: clear errors instead of silent nonsense."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alignlab.errors import AlignlabError

FloatArray = NDArray[np.float64]


class FitInputError(AlignlabError, ValueError):
    """Data that cannot support the requested fit (too few sizes, non-positive x, NaN y ...).

    A ``ValueError``, so callers that catch ``ValueError`` keep working; an ``AlignlabError``, so
    the CLI prints it as one line.
    """


def as_1d(values: ArrayLike, name: str) -> FloatArray:
    """``values`` as a finite 1-D float array, or a FitInputError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FitInputError(f"{name} must be numbers: {exc}") from exc
    if arr.ndim != 1:
        raise FitInputError(f"{name} must be a 1-D sequence, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise FitInputError(
            f"{name} contains NaN or infinity (first at index {bad}); drop or fix those points"
        )
    return arr


def check_xy(
    x: ArrayLike,
    y: ArrayLike,
    *,
    what: str,
    n_params: int,
    sigma: ArrayLike | None = None,
    x_positive: bool = True,
    y_positive: bool = False,
    min_distinct: int | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Validate the points of a curve fit and return them as float arrays.

    Args:
        x: the scale variable (parameters, tokens, FLOPs, steps).
        y: the metric at each x.
        what: the fit's name, used in error messages.
        n_params: free parameters of the fit.
        sigma: optional standard errors of y (positive, one per point).
        x_positive: whether x must be > 0 (any power law or log-x fit).
        y_positive: whether y must be > 0 (fits in log-y).
        min_distinct: distinct x values needed; default ``n_params + 1`` so that a fit always
            has at least one degree of freedom left to estimate its error.

    Raises:
        FitInputError: any violated condition, with what to do about it.
    """
    xa = as_1d(x, "x")
    ya = as_1d(y, "y")
    if xa.shape != ya.shape:
        raise FitInputError(f"x and y differ in length: {xa.size} x values, {ya.size} y values")
    if x_positive and (xa <= 0).any():
        raise FitInputError(f"a {what} fit needs x > 0 (it works in log x); got min x = {xa.min():g}")
    if y_positive and (ya <= 0).any():
        raise FitInputError(f"a {what} fit needs y > 0 (it works in log y); got min y = {ya.min():g}")
    need = n_params + 1 if min_distinct is None else min_distinct
    n_distinct = np.unique(xa).size
    if n_distinct < need:
        raise FitInputError(
            f"a {what} fit has {n_params} parameters and needs at least {need} distinct x "
            f"values; got {n_distinct}"
        )
    sa = None
    if sigma is not None:
        sa = as_1d(sigma, "sigma")
        if sa.shape != ya.shape:
            raise FitInputError(f"sigma has {sa.size} values but there are {ya.size} points")
        if (sa <= 0).any():
            raise FitInputError("sigma (standard errors of y) must all be > 0")
    return xa, ya, sa


def check_level(level: float) -> None:
    """Interval coverage must lie strictly between 0 and 1."""
    if not 0.0 < level < 1.0:
        raise FitInputError(f"level (interval coverage) must be in (0, 1), got {level}")


def check_n_boot(n_boot: int) -> None:
    """At least a handful of bootstrap replicates, or the percentiles mean nothing."""
    if n_boot < 10:
        raise FitInputError(f"n_boot must be >= 10 for a percentile interval, got {n_boot}")
