"""Static SVG plots as strings, for inlining into self-contained reports.

Figures are built with matplotlib's object API (no pyplot state), so the viewer can render from
several threads at once. Text is drawn as paths, and the SVG prologue is dropped so the markup can
sit inside an HTML page.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

# (x, value, lo, hi); lo/hi None for a plain metric without an interval.
Point = tuple[float, float, float | None, float | None]

_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def _figure(width: float = 6.0, height: float = 3.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasSVG(fig)
    return fig, fig.add_subplot()


def to_svg(fig: Figure) -> str:
    """Render ``fig`` to an inline-ready ``<svg>`` string (no XML prologue, no comments)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = _PROLOGUE.sub("", buf.getvalue(), count=1)
    # Matplotlib writes every label as a comment beside its glyph paths; drop them so stored text
    # never reaches the page through a plot.
    return _METADATA.sub("", _COMMENT.sub("", text))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def lines_with_bands(
    series: Mapping[str, Sequence[Point]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    xticklabels: Sequence[str] | None = None,
    hline: float | None = None,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    """One line per series with a shaded interval band (or error bars when a series has 1 point).

    Args:
        series: label -> points ``(x, value, lo, hi)``.
        xlabel: x axis label.
        ylabel: y axis label.
        title: plot title.
        logx: log-scale x axis (e.g. parameters).
        xticklabels: labels for x = 0, 1, 2, ... (e.g. layer names).
        hline: a dashed reference line (e.g. chance AUROC 0.5).
        ylim: fixed y range.

    Returns:
        The SVG markup, or None when there is no finite point to draw.
    """
    if not any(_finite(p[1]) for pts in series.values() for p in pts):
        return None
    fig, ax = _figure()
    for label, pts in series.items():
        pts = sorted(p for p in pts if _finite(p[1]))
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        (line,) = ax.plot(xs, ys, marker="o", ms=4, label=label)
        if all(_finite(p[2]) and _finite(p[3]) for p in pts):
            lo = [float(p[2]) for p in pts]  # type: ignore[arg-type]
            hi = [float(p[3]) for p in pts]  # type: ignore[arg-type]
            if len(pts) == 1:
                ax.errorbar(
                    xs, ys, yerr=[[ys[0] - lo[0]], [hi[0] - ys[0]]], color=line.get_color(), capsize=3
                )
            else:
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=0.8)
    if logx:
        ax.set_xscale("log")
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), list(xticklabels), rotation=30, ha="right", fontsize=7)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_svg(fig)


def heatmap(matrix: Sequence[Sequence[float]], *, xlabel: str, ylabel: str, title: str = "") -> str | None:
    """A matrix (e.g. layer x head scores) as an annotated heatmap; None when empty."""
    rows = [[float(v) for v in row] for row in matrix]
    if not rows or not rows[0]:
        return None
    fig, ax = _figure(1.2 + 0.55 * len(rows[0]), 1.0 + 0.45 * len(rows))
    im = ax.imshow(rows, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax)
    if len(rows) * len(rows[0]) <= 64:
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    return to_svg(fig)


def scaling_fit(data: Mapping[str, Any]) -> str | None:
    """A stored scaling fit (``fit.json`` from :func:`alignlab.scaling.save_fit`) with its bands."""
    curve, points = data.get("curve"), data.get("data")
    if not isinstance(curve, Mapping) or not isinstance(points, Mapping):
        return None
    labels = data.get("labels") or {}
    fig, ax = _figure()
    cx = [float(v) for v in curve.get("x", [])]
    if cx:
        ax.fill_between(
            cx,
            curve["prediction_lo"],
            curve["prediction_hi"],
            color="C0",
            alpha=0.1,
            lw=0,
            label="prediction",
        )
        ax.fill_between(
            cx, curve["confidence_lo"], curve["confidence_hi"], color="C0", alpha=0.3, lw=0, label="95% CI"
        )
        ax.plot(cx, curve["y"], color="C0", label="fit")
    ax.plot(points.get("x", []), points.get("y", []), "o", color="k", ms=4, label="runs")
    ax.set_xscale("log")
    ax.set_xlabel(str(labels.get("x", "x")))
    ax.set_ylabel(str(labels.get("y", "y")))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_svg(fig)
