"""Options shared by command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignlab.store import Store

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Run store folder (default: $ALIGNLAB_STORE or ./alignlab-runs).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: key=value (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def open_store(path: Path | None) -> Store:
    return Store(path)
