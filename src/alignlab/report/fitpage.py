"""A report page for one stored scaling fit (``root/scaling/<name>/fit.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignlab.report import html as h
from alignlab.report import plots


def fit_report(name: str, fit: dict[str, Any], nav: Sequence[tuple[str, str]] = ()) -> str:
    """The HTML page for the fit ``name``: plot with bands, parameters with CIs, trend and runs."""
    params = (fit.get("fit") or {}).get("params") or {}
    extra = fit.get("extra") or {}
    trend = extra.get("trend") or {}
    parts = [
        h.figure(plots.scaling_fit(fit), "dark band: 95% confidence; light band: 95% prediction"),
        f"<p>{h.esc((fit.get('fit') or {}).get('formula', ''))}</p>",
        h.table(("parameter", "estimate [95% CI]"), [(h.esc(k), h.estimate(v)) for k, v in params.items()]),
        "<h2>Trend test</h2>",
        f"<p class='claim'>{h.esc(trend.get('statement') or h.NOT_MEASURED)}</p>",
        h.kv_table({k: trend.get(k) for k in ("verdict", "p_value", "n", "n_x", "test") if k in trend}),
        "<h2>Runs</h2>" + h.pre_json(extra.get("runs")),
        # Runs the fit left out (failed, diverged, non-finite value), by id with the reason.
        "<h2>Runs left out</h2>" + h.pre_json(extra.get("excluded") or {}),
        "<h2>Fit details</h2>"
        + h.pre_json({k: v for k, v in (fit.get("fit") or {}).items() if k != "params"}),
    ]
    return h.page(f"Scaling fit: {name}", "".join(parts), nav)
