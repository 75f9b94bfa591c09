"""The ``alignlab`` command line: one small module per command group, no logic of its own."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alignlab._alloc import tune_allocator
from alignlab.cli import runs as _runs
from alignlab.cli import sample as _sample
from alignlab.cli import train as _train
from alignlab.errors import AlignlabError

app = typer.Typer(
    help="alignlab — an empirical AI-safety workbench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Run store folder for every command (sets ALIGNLAB_STORE)."),
    ] = None,
) -> None:
    if store is not None:
        os.environ["ALIGNLAB_STORE"] = str(store)


_train.register(app)
_runs.register(app)
_sample.register(app)


def _mount_optional() -> None:
    # Command groups owned by other subpackages mount themselves when present.
    import importlib

    groups = (
        ("eval_cmd", "eval"),
        ("interp_cmd", "interp"),
        ("scaling_cmd", "scaling"),
        ("report_cmd", "report"),
        ("attribute_cmd", "attribute"),
    )
    for module, name in groups:
        try:
            sub = importlib.import_module(f"alignlab.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"alignlab.cli.{module}":
                raise
            continue
        if hasattr(sub, "app"):
            app.add_typer(sub.app, name=name)
        if hasattr(sub, "register"):  # top-level commands of the group (e.g. `sweep`)
            sub.register(app)


_mount_optional()


def main() -> None:
    """Entry point: user mistakes print one line (what is wrong, how to fix it), exit code 2."""
    tune_allocator()  # every command that runs a model gains; see alignlab._alloc
    try:
        app()  # standalone: click reports its own usage errors and exits
    except AlignlabError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
