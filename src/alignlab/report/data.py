"""Reading what the store holds for reports: JSON artifacts, final Estimates, scaling fits.

Every reader tolerates absence and corruption (returns None / empty), because a report shows
"not measured yet" for what is missing instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignlab.store import Run, Store

if TYPE_CHECKING:
    from alignlab.studies.result import StudyResult

# Artifacts other commands write into a run folder, by the name reports know them by.
INTERP_FILES = ("probe.json", "heads.json")


def load_json(path: Path) -> Any | None:
    """The decoded JSON at ``path``, or None if it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def study_of(run: Run) -> StudyResult | None:
    """The run's ``study.json`` as a `StudyResult` (None when it has none, or one this version of
    alignlab cannot read: a report shows "not measured" rather than misreading an old schema)."""
    from alignlab.errors import AlignlabError
    from alignlab.studies.result import load_result

    if not (run.dir / "study.json").exists():
        return None
    try:
        return load_result(run.dir / "study.json")
    except (AlignlabError, KeyError, TypeError, ValueError):
        return None


def interp_artifacts(run: Run) -> dict[str, Any]:
    """Interpretability results stored under ``run.dir/"interp"`` (see ``alignlab interp``), by file name."""
    out = {}
    for name in INTERP_FILES:
        data = load_json(run.dir / "interp" / name)
        if isinstance(data, dict):
            out[name] = data
    return out


def final_estimates(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """A run's final results that carry an interval (step-less Estimate rows), by metric name."""
    return {
        row["name"]: row for row in store.metrics(run_id) if row["step"] is None and row["method"] is not None
    }


def stepped_metrics(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's metrics logged at steps (training curves, dose-response rows), by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.metrics(run_id):
        if row["step"] is not None:
            out.setdefault(row["name"], []).append(row)
    return out


def scaling_fits(store: Store) -> dict[str, dict[str, Any]]:
    """Stored scaling fits (``root/scaling/<name>/fit.json``), by name."""
    base = store.root / "scaling"
    out: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return out
    for path in sorted(base.glob("*/fit.json")):
        data = load_json(path)
        if isinstance(data, dict):
            out[path.parent.name] = data
    return out
