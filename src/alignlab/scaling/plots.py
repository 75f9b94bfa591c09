"""Figures and JSON for scaling fits: log-log plots with the fit and its interval.

matplotlib is imported lazily, inside each function, and only through its object-oriented API
(a ``Figure`` on an Agg canvas): no pyplot global state, no display needed, and importing
:mod:`alignlab.scaling` stays cheap for code that only fits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from alignlab._io import save_figure_atomic, write_json_atomic
from alignlab.scaling._validate import FloatArray, as_1d
from alignlab.scaling.chinchilla import ChinchillaFit
from alignlab.scaling.emergence import EmergenceResult
from alignlab.scaling.fits import CurveFit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS: tuple[str, ...] = ("png", "svg")


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays made plain and NaN/inf made None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return obj


def write_json(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``data`` as strict, indented JSON (NaN and infinities become null)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, jsonable(data), indent=2, allow_nan=False)
    return out


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins rather than a layout engine: constrained layout doubled the save time.
    fig = Figure(figsize=(5.5, 4.0))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.88)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, out_stem: str | Path, formats: Sequence[str]) -> list[Path]:
    stem = Path(out_stem)
    return [
        save_figure_atomic(fig, stem.with_name(f"{stem.name}.{fmt}"), format=fmt, dpi=150) for fmt in formats
    ]


def _grid(x: FloatArray, x_range: tuple[float, float] | None, log: bool) -> FloatArray:
    lo, hi = x_range if x_range is not None else (float(x.min()), float(x.max()))
    lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return np.geomspace(lo, hi, 200) if log else np.linspace(lo, hi, 200)


def _points(ax: Axes, x: FloatArray, y: FloatArray, yerr: ArrayLike | None, label: str) -> None:
    if yerr is None:
        ax.plot(x, y, "o", color="k", ms=4, label=label)
    else:
        ax.errorbar(
            x, y, yerr=np.asarray(yerr, dtype=np.float64), fmt="o", color="k", ms=4, capsize=2, label=label
        )


def plot_fit(
    fit: CurveFit,
    x: ArrayLike,
    y: ArrayLike,
    out_stem: str | Path,
    *,
    yerr: ArrayLike | None = None,
    noise: bool = False,
    x_range: tuple[float, float] | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    title: str | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Points (with error bars), the fitted curve and its bootstrap band, on log axes.

    Power laws are drawn log-log; a sigmoid (or any y <= 0) on log x and linear y.

    Args:
        fit: a result of fit_kaplan, fit_power or fit_sigmoid.
        x, y: the points that were fitted (or any to overlay, e.g. a held-out size).
        out_stem: path without suffix; one file per format is written.
        yerr: optional error bars (symmetric array, or shape (2, n) for lower/upper).
        noise: band is a prediction band (True) or the mean curve's confidence band (False).
        x_range: extend the curve over this x range (e.g. to an extrapolation target).
        xlabel, ylabel, title: labels; the title defaults to the fitted formula.
        formats: file formats, default PNG and SVG.

    Returns:
        The written paths.

    Example:
        >>> plot_fit(fit_kaplan(n, loss), n, loss, "out/loss_vs_n", xlabel="N")  # doctest: +SKIP
        [PosixPath('out/loss_vs_n.png'), PosixPath('out/loss_vs_n.svg')]
    """
    xa, ya = as_1d(x, "x"), as_1d(y, "y")
    grid = _grid(xa, x_range, log=True)
    value, lo, hi = fit.band(grid, noise=noise)
    fig, ax = _figure()
    what = "prediction" if noise else "confidence"
    ax.fill_between(grid, lo, hi, color="C0", alpha=0.25, lw=0, label=f"{fit.level * 100:g}% {what} band")
    params = ", ".join(f"{k}={v.value:.3g}" for k, v in fit.params.items())
    ax.plot(grid, value, color="C0", label=f"{fit.form}: {params}")
    _points(ax, xa, ya, yerr, "data")
    ax.set_xscale("log")
    if fit.form != "sigmoid" and (ya > 0).all() and np.nanmin(lo) > 0:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"{fit.formula}   (R² = {fit.r2:.3f})", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out_stem, formats)


def plot_chinchilla(
    fit: ChinchillaFit,
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    out_stem: str | Path,
    *,
    title: str | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Loss against N, one colour per data budget D, with the fitted L(N, D) and its band."""
    na, da, la = as_1d(n_params, "n_params"), as_1d(n_tokens, "n_tokens"), as_1d(loss, "loss")
    fig, ax = _figure()
    grid = np.geomspace(na.min(), na.max(), 60)
    for i, d in enumerate(np.unique(da)):
        colour = f"C{i % 10}"
        sel = da == d
        ests = [fit.predict(float(n), float(d)) for n in grid]
        ax.fill_between(grid, [e.lo for e in ests], [e.hi for e in ests], color=colour, alpha=0.2, lw=0)
        ax.plot(grid, [e.value for e in ests], color=colour, label=f"D = {d:.3g}")
        ax.plot(na[sel], la[sel], "o", color=colour, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    params = ", ".join(f"{k}={v.value:.3g}" for k, v in fit.params.items())
    ax.set_title(title if title is not None else f"{fit.formula}\n{params}", fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, out_stem, formats)


def plot_emergence(
    result: EmergenceResult,
    x: ArrayLike,
    y: ArrayLike,
    out_stem: str | Path,
    *,
    yerr: ArrayLike | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    title: str | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Points, the best smooth and abrupt fits, and the breakpoint with its interval."""
    xa, ya = as_1d(x, "x"), as_1d(y, "y")
    log = result.scale == "log"
    grid = _grid(xa, None, log=log)
    fig, ax = _figure()
    bp = result.breakpoint
    if math.isfinite(bp.lo) and math.isfinite(bp.hi):
        ax.axvspan(bp.lo, bp.hi, color="C3", alpha=0.15, lw=0, label="breakpoint interval")
    ax.axvline(bp.value, color="C3", lw=1, ls=":")
    ax.plot(grid, result.curve("smooth", grid), color="C0", label=f"smooth: {result.smooth_model}")
    ax.plot(grid, result.curve("abrupt", grid), color="C3", label=f"abrupt: {result.abrupt_model}")
    _points(ax, xa, ya, yerr, "data")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    verdict = "emergent" if result.emergent else "no abrupt change"
    ax.set_title(title if title is not None else f"{verdict}: ΔBIC = {result.delta_bic:.1f}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out_stem, formats)


def save_fit(
    fit: CurveFit,
    x: ArrayLike,
    y: ArrayLike,
    out_dir: str | Path,
    name: str,
    *,
    yerr: ArrayLike | None = None,
    x_range: tuple[float, float] | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``name.png``, ``name.svg`` and ``name.json`` (every number) into ``out_dir``.

    The JSON holds the fit (:meth:`CurveFit.to_dict`), the data points, the curve with its
    confidence and prediction bands on the plotted grid, and ``extra`` (e.g. a held-out
    prediction or a trend test).

    Example:
        >>> save_fit(fit, n, loss, store_dir / "scaling", "loss_vs_n")  # doctest: +SKIP
        {'png': ..., 'svg': ..., 'json': ...}
    """
    out = Path(out_dir)
    xa, ya = as_1d(x, "x"), as_1d(y, "y")
    png, svg = plot_fit(fit, xa, ya, out / name, yerr=yerr, x_range=x_range, xlabel=xlabel, ylabel=ylabel)
    grid = _grid(xa, x_range, log=True)
    value, c_lo, c_hi = fit.band(grid)
    _, p_lo, p_hi = fit.band(grid, noise=True)
    data: dict[str, Any] = {
        "fit": fit.to_dict(),
        "data": {"x": xa, "y": ya, "yerr": None if yerr is None else np.asarray(yerr)},
        "curve": {
            "x": grid,
            "y": value,
            "confidence_lo": c_lo,
            "confidence_hi": c_hi,
            "prediction_lo": p_lo,
            "prediction_hi": p_hi,
        },
        "labels": {"x": xlabel, "y": ylabel},
    }
    if extra is not None:
        data["extra"] = dict(extra)
    js = write_json(data, out / f"{name}.json")
    return {"png": png, "svg": svg, "json": js}


def save_emergence(
    result: EmergenceResult,
    x: ArrayLike,
    y: ArrayLike,
    out_dir: str | Path,
    name: str,
    *,
    yerr: ArrayLike | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``name.png``, ``name.svg`` and ``name.json`` for an emergence test.

    The JSON holds :meth:`EmergenceResult.to_dict`, the data points and both fitted curves on
    the plotted grid.
    """
    out = Path(out_dir)
    xa, ya = as_1d(x, "x"), as_1d(y, "y")
    png, svg = plot_emergence(result, xa, ya, out / name, yerr=yerr, xlabel=xlabel, ylabel=ylabel)
    grid = _grid(xa, None, log=result.scale == "log")
    data: dict[str, Any] = {
        "emergence": result.to_dict(),
        "data": {"x": xa, "y": ya, "yerr": None if yerr is None else np.asarray(yerr)},
        "curve": {
            "x": grid,
            "smooth": result.curve("smooth", grid),
            "abrupt": result.curve("abrupt", grid),
        },
        "labels": {"x": xlabel, "y": ylabel},
    }
    if extra is not None:
        data["extra"] = dict(extra)
    js = write_json(data, out / f"{name}.json")
    return {"png": png, "svg": svg, "json": js}
