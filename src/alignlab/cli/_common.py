"""What every command module shares: how it builds a command group, the options that mean the
same everywhere (declared once, here), and the one way a user mistake is reported (`fail`).

Every module in this package registers itself the same way, with ``register(app)``: a command
group (``eval``, ``interp``, ``scaling``) is a `group` that its module's ``register`` mounts, and
top-level commands are defined inside ``register``. Commands raise `alignlab.errors.AlignlabError` for
mistakes the user can fix; `alignlab.cli.main` hands every one of them to `fail`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from alignlab.errors import AlignlabError
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


def group(help: str, **settings: Any) -> typer.Typer:
    """A command group with the settings every group shares (help when called bare, no shell
    completion, plain tracebacks for bugs); ``settings`` override them."""
    return typer.Typer(
        **{
            "help": help,
            "no_args_is_help": True,
            "add_completion": False,
            "pretty_exceptions_enable": False,
            **settings,
        }
    )


def fail(error: BaseException | str) -> NoReturn:
    """Print ``error: MESSAGE`` to stderr on one line and exit with status 2.

    The one error printer of the CLI. The message is printed as text, never as rich markup
    (``alignlab[ray]`` or a user's ``[value]`` would otherwise vanish), and on one line.
    """
    cause = getattr(error, "cause", None)  # a Ray task's error wraps the worker's own
    if isinstance(cause, AlignlabError):
        error = cause
    message = " ".join(str(error).split())
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(2)


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
