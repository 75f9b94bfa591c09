"""Writing reports to disk with relative links between them, so a folder of reports views offline."""

from __future__ import annotations

import os
from pathlib import Path

from alignlab._io import write_text_atomic
from alignlab.report import data
from alignlab.report.evidence import evidence_html
from alignlab.report.fitpage import fit_report
from alignlab.report.runpage import Linker, run_report
from alignlab.store import Store

REPORT_NAME = "report.html"
EVIDENCE_NAME = "evidence.html"
_FIT_PREFIX = "scaling/"


def report_path(store: Store, target: str) -> Path:
    """Where the report of a run id, or of ``"scaling/<fit>"``, is written by default."""
    if target.startswith(_FIT_PREFIX):
        return store.root / "scaling" / target[len(_FIT_PREFIX) :] / REPORT_NAME
    return store.root / "runs" / target / REPORT_NAME


def fit_names(store: Store) -> list[str]:
    """Names of the stored scaling fits."""
    return list(data.scaling_fits(store))


def _linker(store: Store, page: Path) -> Linker:
    def link(target: str) -> str:
        return Path(os.path.relpath(report_path(store, target), page.parent)).as_posix()

    return link


def _write_run(store: Store, run_id: str, out: Path | None = None) -> Path:
    run = store.get(run_id)
    path = (out or report_path(store, run.id)).absolute()
    return write_text_atomic(path, run_report(store, run, _linker(store, path)))


def write_report(store: Store, run_id: str, out: Path | None = None, *, linked: bool = True) -> Path:
    """Write the report of a run (a study's or any other) and return its path.

    Args:
        store: the run store.
        run_id: run id or unique prefix.
        out: output file; default ``<run dir>/report.html``.
        linked: also write the reports of the runs a study links to, so its links open offline.

    Raises:
        StoreError: no run (or several) match ``run_id``.
    """
    run = store.get(run_id)
    path = _write_run(store, run.id, out)
    study = data.study_of(run)
    if linked and study:
        linked_ids: set[str] = set()
        for cell in study.cells:
            linked_ids.update((cell.base_run, cell.install_run))
            linked_ids.update(iv.run_id for iv in cell.interventions.values())
        for rid in sorted(i for i in linked_ids if isinstance(i, str) and i):
            linked_run = store.get(rid)
            existing = report_path(store, linked_run.id)
            # A finished run does not change, so a report written after its last update is
            # current; skipping it keeps a rerun of a stored study within seconds.
            current = existing.exists() and existing.stat().st_mtime >= linked_run.updated
            if linked_run.status == "done" and current:
                continue
            _write_run(store, rid)
    return path


def write_evidence(store: Store, out: Path | None = None) -> Path:
    """Write the evidence page (default ``<store>/evidence.html``) and every report it links to."""
    path = (out or store.root / EVIDENCE_NAME).absolute()
    for run in store.runs(status="done"):
        _write_run(store, run.id)
    for name, fit in data.scaling_fits(store).items():
        write_text_atomic(report_path(store, _FIT_PREFIX + name), fit_report(name, fit))
    return write_text_atomic(path, evidence_html(store, _linker(store, path)))
