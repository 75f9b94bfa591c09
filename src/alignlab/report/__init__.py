"""Readable results: self-contained HTML reports, the evidence page, and a local read-only viewer.

Reports are single HTML files (inline CSS and SVG, no scripts, nothing fetched), so they open
offline. Everything taken from the store is HTML-escaped.

Example:
    >>> from alignlab.store import Store
    >>> from alignlab.report import write_report, write_evidence
    >>> write_report(Store(), "a854")          # -> runs/a854.../report.html
    >>> write_evidence(Store())                # -> evidence.html at the store root
"""

from alignlab.report.evidence import evidence_html
from alignlab.report.files import fit_names, report_path, write_evidence, write_report
from alignlab.report.fitpage import fit_report
from alignlab.report.runpage import run_report
from alignlab.report.viewer import ViewerServer, make_server, serve

__all__ = [
    "ViewerServer",
    "evidence_html",
    "fit_names",
    "fit_report",
    "make_server",
    "report_path",
    "run_report",
    "serve",
    "write_evidence",
    "write_report",
]
