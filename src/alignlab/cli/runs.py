"""``alignlab runs`` and ``alignlab show``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from alignlab.cli._common import JsonOpt, StoreOpt, open_store
from alignlab.store import Run
from alignlab.train.run import run_summary


def _row(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "created": run.created,
        "dir": str(run.dir),
    }


def register(app: typer.Typer) -> None:
    @app.command()
    def runs(store: StoreOpt = None, json_: JsonOpt = False) -> None:
        """List runs in the store, newest first."""
        st = open_store(store)
        all_runs = st.runs()
        if json_:
            typer.echo(json.dumps([_row(r) for r in all_runs], indent=2))
            return
        table = Table("id", "kind", "status", "task", "params", "steps", "created")
        for r in all_runs:
            model = r.config.get("model", {})
            params = ""
            if isinstance(model, dict) and model:
                from alignlab.model import ModelConfig

                params = f"{ModelConfig.from_dict(model).param_counts()['total']:,}"
            table.add_row(
                r.id,
                r.kind,
                r.status,
                str(r.config.get("task", "")),
                params,
                str(r.config.get("steps", "")),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            )
        Console().print(table)

    @app.command()
    def show(
        run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix of it.")],
        store: StoreOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Show one run: config, status, latest metrics and where its files are."""
        st = open_store(store)
        run = st.get(run_id)
        data = {
            **_row(run),
            "config": run.config,
            "latest_metrics": st.latest_metrics(run.id),
            "summary": run_summary(run),
        }
        if json_:
            typer.echo(json.dumps(data, indent=2))
            return
        console = Console()
        console.print(f"[bold]run[/] {run.id}  [bold]kind[/] {run.kind}  [bold]status[/] {run.status}")
        console.print(f"[bold]dir[/] {run.dir}")
        console.print_json(json.dumps(run.config))
        table = Table("metric", "value")
        for name, value in sorted(data["latest_metrics"].items()):
            table.add_row(name, f"{value:.6g}")
        console.print(table)
