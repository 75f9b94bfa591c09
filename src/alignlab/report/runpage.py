"""Report pages: one per run (any kind), with the study sections when the run is a study."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from alignlab.report import data, env, plots
from alignlab.report import html as h
from alignlab.report.study import study_body
from alignlab.store import Run, Store
from alignlab.studies.registry import StudyDef, registered_result
from alignlab.studies.result import StudyResult

Linker = Callable[[str], str]
# Eval items shown in a report; the rest stay in items.jsonl.
MAX_ITEMS = 20


def _metrics_section(store: Store, run: Run) -> str:
    finals = data.final_estimates(store, run.id)
    parts = ["<h2>Results</h2>"]
    parts.append(
        h.table(
            ("metric", "estimate [95% CI]", "n", "method"),
            [(h.esc(k), h.estimate(v), h.fmt_number(v["n"]), h.esc(v["method"])) for k, v in finals.items()],
            numeric=(1, 2),
        )
    )
    stepped = data.stepped_metrics(store, run.id)
    if stepped:
        # One plot of the loss curves; other stepped metrics are in the table (plots cost ~0.3 s each).
        series = {
            name: [(float(r["step"]), r["value"], r["lo"], r["hi"]) for r in rows]
            for name, rows in stepped.items()
            if len(rows) > 1 and "loss" in name
        }
        if series and not (run.dir / "dose_response.json").exists():
            parts.append(
                h.figure(plots.lines_with_bands(series, xlabel="step", ylabel="loss"), "training curves")
            )
        latest = store.latest_metrics(run.id)
        parts.append("<h3>Latest values</h3>")
        parts.append(
            h.table(
                ("metric", "value"), [(h.esc(k), h.fmt_number(v)) for k, v in latest.items()], numeric=(1,)
            )
        )
    return "".join(parts)


def _eval_section(run: Run) -> str:
    result = data.load_json(run.dir / "result.json")
    if not isinstance(result, dict):
        return ""
    parts = [f"<h2>Eval: {h.esc(result.get('task'))}</h2>"]
    parts.append(h.kv_table({k: result.get(k) for k in ("task", "mode", "model", "n_items")}))
    metrics = result.get("metrics") or {}
    parts.append(
        h.table(("metric", "estimate [95% CI]"), [(h.esc(k), h.estimate(v)) for k, v in metrics.items()])
    )
    items: list[dict[str, Any]] = []
    try:
        with open(run.dir / "items.jsonl", encoding="utf-8") as f:
            for line in f:
                if len(items) >= MAX_ITEMS:
                    break
                items.append(json.loads(line))
    except (OSError, ValueError):
        items = []
    if items:
        parts.append(f"<h3>First {len(items)} items</h3>")
        rows = [
            (
                h.esc(it.get("id")),
                h.esc(json.dumps(it.get("scores"))),
                "<br>".join(h.esc(o) for o in it.get("outputs") or []) or h.esc(it.get("choice")),
            )
            for it in items
        ]
        parts.append(h.table(("item", "scores", "output / choice"), rows))
    parts.append("<h3>How it was run</h3>" + h.pre_json(result.get("info")))
    return "".join(parts)


def _safety_section(run: Run) -> str:
    rows = data.load_json(run.dir / "dose_response.json")
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return ""
    parts = ["<h2>Dose-response</h2>"]
    metrics = [k for k, v in rows[0].items() if isinstance(v, dict)]
    for m in metrics:
        pts = [(float(r["steps"]), r[m]["value"], r[m].get("lo"), r[m].get("hi")) for r in rows]
        parts.append(h.figure(plots.lines_with_bands({m: pts}, xlabel="dose (steps)", ylabel=m), m))
    return "".join(parts)


def interp_section(run: Run) -> str:
    """Probe AUROC per layer and head-score heatmaps stored by ``alignlab interp``."""
    found = data.interp_artifacts(run)
    if not found:
        return ""
    parts = ["<h2>Interpretability</h2>"]
    probe = found.get("probe.json")
    if probe:
        series: dict[str, list[plots.Point]] = {}
        layers: list[str] = []
        for family, res in probe.items():
            if not isinstance(res, dict):
                continue
            for part in ("floor", "ceiling"):
                by_hook = res.get(part) or {}
                layers = layers or list(by_hook)
                series[f"{part} ({family})"] = [
                    (float(i), e["value"], e.get("lo"), e.get("hi")) for i, e in enumerate(by_hook.values())
                ]
        parts.append("<h3>Defection probe AUROC per layer</h3>")
        svg = plots.lines_with_bands(
            series, xlabel="layer", ylabel="AUROC", xticklabels=layers, hline=0.5, ylim=(0.0, 1.02)
        )
        parts.append(h.figure(svg, "band: 95% CI; dashed: chance"))
        best = best_probe(probe)
        if best:
            parts.append(f"<p>best floor AUROC: {h.estimate(best[1])} at {h.esc(best[0])}</p>")
    heads = found.get("heads.json")
    if heads:
        parts.append("<h3>Head scores</h3>")
        for key in ("prefix_matching", "previous_token", "duplicate_token", "copying"):
            if isinstance(heads.get(key), list):
                parts.append(
                    h.figure(plots.heatmap(heads[key], xlabel="head", ylabel="layer", title=key), key)
                )
    return "".join(parts)


def best_probe(probe: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The (hook, Estimate dict) with the highest trigger-free ("floor") AUROC across probe families."""
    best: tuple[str, dict[str, Any]] | None = None
    for family, res in probe.items():
        if not isinstance(res, dict):
            continue
        for hook, est in (res.get("floor") or {}).items():
            if isinstance(est, dict) and (best is None or est.get("value", 0) > best[1].get("value", 0)):
                best = (f"{hook} ({family})", est)
    return best


def _env_section(run: Run, study: StudyResult | None) -> str:
    summary = data.load_json(run.dir / "summary.json")
    recorded: dict[str, Any] = env.recorded(summary) if isinstance(summary, dict) else {}
    recorded["alignlab (run id computed with)"] = run.version
    if study:
        recorded.update({k: round(v) for k, v in study.timing.items()})
    parts = ["<h2>Environment</h2><h3>Recorded by the run</h3>", h.kv_table(recorded)]
    parts.append("<h3>Report generated with</h3>" + h.kv_table(env.current()))
    return "".join(parts)


def _registered_body(defn: StudyDef, result: dict[str, Any]) -> str:
    # Answer first, in the study's own words; its own section follows (gates, intervals, tables).
    head = f"<h1>{h.esc(defn.name)}: {h.esc(defn.question)}</h1>"
    answer = f"<p class='answer'><strong>Answer:</strong> {h.esc(result.get('answer', ''))}</p>"
    return head + answer + defn.report(result)


def run_report(store: Store, run: Run, link: Linker, nav: Sequence[tuple[str, str]] = ()) -> str:
    """The complete HTML report for ``run``.

    Args:
        store: the store the run lives in.
        run: the run.
        link: maps a run id to the href of its report (relative file path or viewer URL).
        nav: (href, text) links shown above the title.
    """
    study = data.study_of(run)
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
    # A study's page leads with its answer; run metadata comes after.
    parts = [study_body(study, link)] if study else []
    registered = None if study else registered_result(run)
    if registered:
        defn, result = registered
        parts.append(_registered_body(defn, result))
    parts.append(
        h.kv_table(
            {
                "run id": run.id,
                "kind": run.kind,
                "status": run.status,
                "name": run.name or "",
                "created": created,
            }
        )
    )
    parts.append(_metrics_section(store, run))
    parts.append(_eval_section(run))
    parts.append(_safety_section(run))
    parts.append(interp_section(run))
    summary = data.load_json(run.dir / "summary.json")
    if isinstance(summary, dict) and summary.get("final"):
        parts.append("<h2>Training summary</h2>" + h.kv_table(summary["final"]))
    parts.append("<h2>Config</h2>" + h.pre_json(run.config))
    if run.recipe:
        parts.append("<h3>Recipe</h3>" + h.pre_json(run.recipe))
    parts.append(_env_section(run, study))
    title = f"{'Study' if study or registered else run.kind.capitalize()} report: {run.id}"
    return h.page(title, "".join(parts), nav)
