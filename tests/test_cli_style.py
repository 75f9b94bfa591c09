"""One CLI style (issue 15): every command module registers the same way, the shared options are
declared once, and one function prints every user error."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
import typer

import alignlab.cli
from alignlab.cli import _common
from alignlab.errors import ConfigError

from conftest import cli


def _commands(cmd: Any, path: str = "alignlab") -> dict[str, Any]:
    """Every command of the click tree under ``cmd``, by its full path."""
    out = {path: cmd}
    for name, sub in getattr(cmd, "commands", {}).items():
        out |= _commands(sub, f"{path} {name}")
    return out


def test_every_command_module_registers_the_same_way() -> None:
    modules = [m.name for m in pkgutil.iter_modules(alignlab.cli.__path__) if not m.name.startswith("_")]
    assert len(modules) >= 8
    for name in modules:
        module = importlib.import_module(f"alignlab.cli.{name}")
        assert callable(getattr(module, "register", None)), f"alignlab.cli.{name} has no register(app)"
        # Registering on a bare app adds commands or groups, and nothing else is needed to mount it.
        bare = typer.Typer()
        module.register(bare)
        assert bare.registered_commands or bare.registered_groups, name
    tree = _commands(typer.main.get_command(alignlab.cli.app))
    for path in ("alignlab eval", "alignlab interp", "alignlab scaling", "alignlab sweep", "alignlab run"):
        assert path in tree, path


def test_shared_options_are_declared_once() -> None:
    tree = _commands(typer.main.get_command(alignlab.cli.app))
    declared: dict[str, set[tuple[str, ...]]] = {"--store": set(), "--json": set()}
    users: dict[str, int] = {"--store": 0, "--json": 0}
    for cmd in tree.values():
        for param in cmd.params:
            for flag in declared:
                if flag in param.opts:
                    users[flag] += 1
                    declared[flag].add((*param.opts, str(param.help), str(param.show_default)))
    # Many commands take them, all with the one declaration in alignlab.cli._common.
    assert users["--store"] >= 15 and users["--json"] >= 8, users
    assert len(declared["--store"]) == 1 and len(declared["--json"]) == 1, declared


def test_the_error_printer_prints_one_literal_line(capsys: pytest.CaptureFixture[str]) -> None:
    message = "needs Ray: pip install 'alignlab[ray]'\n  and a [bold]value[/bold]"
    with pytest.raises(SystemExit) as exit_:
        _common.fail(ConfigError(message))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    # Rich markup is not interpreted: the brackets the user must type survive.
    assert err == "error: needs Ray: pip install 'alignlab[ray]' and a [bold]value[/bold]\n"


def test_a_ray_wrapped_error_prints_the_workers_message(capsys: pytest.CaptureFixture[str]) -> None:
    class TaskError(Exception):  # how Ray re-raises a task's exception: a wrapper with .cause
        def __init__(self, cause: BaseException) -> None:
            super().__init__("ray::_worker() (pid=1)\nTraceback (most recent call last): ...")
            self.cause = cause

    with pytest.raises(SystemExit):
        _common.fail(TaskError(ConfigError("lr must be finite, got nan")))
    assert capsys.readouterr().err == "error: lr must be finite, got nan\n"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval", "--task", "persona/no-shut-down"], "--model is required"),
        (["interp", "patch", "./no/such/model"], "not found"),
        (["scaling", "fit", "--form", "cubic"], "unknown fit form 'cubic'"),
        (["sweep", "--backend", "slurm"], "unknown backend 'slurm'"),
        (["report"], "give either a run id or --evidence"),
    ],
)
def test_every_group_reports_through_the_one_printer(
    args: list[str], words: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(["--store", str(tmp_path / "s"), *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, err
