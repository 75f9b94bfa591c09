"""Options shared by command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


def resolve_model_dir(spec: str, store_path: Path | None = None) -> Path:
    """A model directory from a path, or from a run id (prefix) in the store."""
    from alignlab.errors import ModelLoadError

    path = Path(spec).expanduser()
    if path.exists():
        return path
    if "/" in spec or spec.startswith("."):
        raise ModelLoadError(f"model directory {spec!r} not found")
    run = open_store(store_path).get(spec)
    model_dir = run.dir / "model"
    if not model_dir.exists():
        raise ModelLoadError(f"run {run.id} has no model yet (status: {run.status})")
    return model_dir


def run_organism(spec: str, store_path: Path | None = None) -> Any:
    """The organism a store run installed (its recipe records name and config), or None for a
    model directory or a run that installed none."""
    from alignlab.organisms import get_organism

    if Path(spec).expanduser().exists():
        return None  # a model directory: no recipe to read
    recipe = open_store(store_path).get(spec).recipe or {}
    if "organism" not in recipe:
        return None
    return get_organism(recipe["organism"], **recipe.get("organism_config", {}))
