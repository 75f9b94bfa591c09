"""``alignlab report`` (HTML reports, the evidence page) and ``alignlab view`` (the local viewer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignlab.cli._common import StoreOpt
from alignlab.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the top-level ``report`` and ``view`` commands to ``app``."""

    @app.command()
    def report(
        run: Annotated[
            str | None, typer.Argument(help="Study or run id (or a unique prefix).", show_default=False)
        ] = None,
        evidence: Annotated[
            bool, typer.Option("--evidence", help="Write the evidence page for the whole store.")
        ] = False,
        out: Annotated[
            Path | None,
            typer.Option("--out", help="Output HTML file (default: report.html in the run folder)."),
        ] = None,
        store: StoreOpt = None,
    ) -> None:
        """Write a self-contained HTML report (views offline) and print its path."""
        from alignlab.report import write_evidence, write_report
        from alignlab.report.viewer import open_existing

        if evidence == (run is not None):
            raise ConfigError(
                "give either a run id or --evidence (e.g. `alignlab report 1a2b` or `--evidence`)"
            )
        st = open_existing(store)
        path = write_evidence(st, out) if evidence else write_report(st, str(run), out)
        typer.echo(str(path))

    @app.command()
    def view(
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0 = a free one).")] = 0,
        store: StoreOpt = None,
    ) -> None:
        """Serve a read-only viewer of the store's runs, studies and reports on 127.0.0.1."""
        from alignlab.report import serve
        from alignlab.report.viewer import open_existing

        st = open_existing(store)
        serve(st, port, on_ready=lambda url: typer.echo(f"alignlab viewer on {url}  (Ctrl-C to stop)"))
