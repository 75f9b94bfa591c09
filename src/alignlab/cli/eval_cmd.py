"""``alignlab eval``: list the eval tasks, run them on models, export them to lm-eval.

Mounted by `alignlab.cli` as ``alignlab eval``::

    alignlab eval list
    alignlab eval --model RUN_OR_DIR --task NAME [--limit N] [--json]
    alignlab eval --model A --model B --task 'persona/*'       # a family: metric vs parameters
    alignlab eval export-lm-eval DIR                            # lm-eval YAML tasks
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from alignlab.cli._common import JsonOpt, StoreOpt, group
from alignlab.errors import ConfigError

app = group(
    "Evaluate models on safety evals (model-written evals, BBQ, HH-RLHF, chat tasks).",
    # `alignlab eval --model M --task T` runs without a subcommand (the callback below).
    invoke_without_command=True,
    no_args_is_help=False,
)

ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="Model directory, run folder or run id (repeat for a family)."),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", "-t", help="Task name or glob, e.g. 'persona/*' (see `eval list`)."),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", help="Evaluate only the first N items.")]
FormatOpt = Annotated[
    str, typer.Option("--format", help="Prompt format: 'hh' (Human/Assistant) or 'chat' (alignlab).")
]
NoStore = Annotated[bool, typer.Option("--no-store", help="Do not record results in the store.")]
JudgeOpt = Annotated[
    str | None,
    typer.Option("--judge", help="Judge model (directory or run id) for model-graded tasks."),
]
TempOpt = Annotated[
    float | None, typer.Option("--temperature", help="Sampling temperature for generate tasks.")
]
SamplesOpt = Annotated[
    int | None, typer.Option("--samples", help="Samples per item (with --temperature > 0).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Sampling seed.")]


def register(root: typer.Typer) -> None:
    """Mount the ``eval`` group on the ``alignlab`` app."""
    root.add_typer(app, name="eval")


@app.callback()
def main(
    ctx: typer.Context,
    model: ModelOpt = None,
    task: TaskOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = "hh",
    json_: JsonOpt = False,
    store: StoreOpt = None,
    no_store: NoStore = False,
    judge: JudgeOpt = None,
    temperature: TempOpt = None,
    samples: SamplesOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Run --task on --model (or use a subcommand: list, run, export-lm-eval)."""
    if ctx.invoked_subcommand is not None:
        return
    if not model and not task:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    _run(model, task, limit, fmt, json_, store, no_store, judge, temperature, samples, seed)


@app.command("run")
def run_cmd(
    model: ModelOpt = None,
    task: TaskOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = "hh",
    json_: JsonOpt = False,
    store: StoreOpt = None,
    no_store: NoStore = False,
    judge: JudgeOpt = None,
    temperature: TempOpt = None,
    samples: SamplesOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Run a task (or a glob of tasks) on one model or a family of models."""
    _run(model, task, limit, fmt, json_, store, no_store, judge, temperature, samples, seed)


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List the eval tasks with their mode and item count."""
    from alignlab.evals import list_eval_tasks

    tasks = list_eval_tasks()
    rows: list[dict[str, Any]] = [
        {"task": t.name, "mode": t.mode, "items": t.n_items, "description": t.description} for t in tasks
    ]
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("task", "mode", "items", "description")
    for r in rows:
        table.add_row(r["task"], r["mode"], "" if r["items"] is None else str(r["items"]), r["description"])
    Console().print(table)


@app.command("export-lm-eval")
def export_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the YAML task files.")],
    fmt: FormatOpt = "hh",
) -> None:
    """Write lm-eval YAML tasks for the vendored data (use with lm_eval --include_path)."""
    from alignlab.evals.lmeval import write_lm_eval_tasks

    names = write_lm_eval_tasks(out_dir, fmt=fmt)
    typer.echo(f"wrote {len(names)} lm-eval tasks to {out_dir} (e.g. {names[0]})")


def _run(
    models: list[str] | None,
    task: str | None,
    limit: int | None,
    fmt: str,
    json_: bool,
    store: Path | None,
    no_store: bool,
    judge: str | None,
    temperature: float | None,
    samples: int | None,
    seed: int,
) -> None:
    if not models:
        raise ConfigError("--model is required (a model directory, run folder or run id)")
    if not task:
        raise ConfigError("--task is required (see `alignlab eval list`)")
    results = _evaluate_all(
        models, task, limit, fmt, json_, store, no_store, judge, temperature, samples, seed
    )
    if json_:
        typer.echo(json.dumps(results, indent=2))
    else:
        _print_table(results)


def _evaluate_all(
    models: list[str],
    task: str,
    limit: int | None,
    fmt: str,
    quiet: bool,
    store_path: Path | None,
    no_store: bool,
    judge_spec: str | None,
    temperature: float | None,
    samples: int | None,
    seed: int,
) -> list[dict[str, Any]]:
    import alignlab
    from alignlab.evals import ModelJudge, evaluate, log_result, make_scorer, match_tasks
    from alignlab.evals.registry import format_question
    from alignlab.evals.storage import resolve_model, weights_digest
    from alignlab.store import Store

    tasks = match_tasks(task)
    format_question("", fmt)  # validate before any model is loaded
    st = None if no_store else Store(store_path)
    # Resolve every model first: a typo in the last --model fails before any work is done.
    resolved = [resolve_model(m, st) for m in models]
    judge = None
    if judge_spec is not None:
        jdir, jlabel = resolve_model(judge_spec, st)
        judge = ModelJudge(make_scorer(alignlab.load(jdir)), name=f"model:{jlabel}")
    out: list[dict[str, Any]] = []
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    ) as bar:
        for model_dir, label in resolved:
            model = alignlab.load(model_dir)
            for t in tasks:
                pid = bar.add_task(f"{t.name} on {Path(label).name}", total=None)

                def progress(done: int, total: int, pid: Any = pid) -> None:
                    bar.update(pid, completed=done, total=total)

                res = evaluate(
                    model,
                    t,
                    fmt=fmt,
                    limit=limit,
                    judge=judge,
                    temperature=temperature,
                    n_samples=samples,
                    seed=seed,
                    progress=progress,
                    model_name=label,
                )
                bar.remove_task(pid)
                row = res.to_dict()
                if st is not None:
                    run = log_result(res, st, {"weights": weights_digest(model_dir)})
                    row["run_id"] = run.id
                    row["items_file"] = str(run.dir / "items.jsonl")
                out.append(row)
    return out


def _short(label: str) -> str:
    """``run:<id>`` stays; a path shows its last folder (the run folder for ``.../<run>/model``)."""
    if label.startswith("run:"):
        return label
    p = Path(label)
    return p.parent.name if p.name == "model" and p.parent.name else p.name


def _print_table(results: list[dict[str, Any]]) -> None:
    console = Console()
    from alignlab.stats import Estimate

    table = Table("task", "model", "params", "metric")
    table.add_column("value [95% CI]", no_wrap=True)
    table.add_column("n", justify="right")

    for r in results:
        params = r["info"].get("params")
        for i, (name, est) in enumerate(r["metrics"].items()):
            e = Estimate.from_dict(est) if not math.isnan(est["lo"]) else None
            value = str(e) if e is not None else f"{est['value']:.4g}"
            table.add_row(
                r["task"] if i == 0 else "",
                _short(r["model"]) if i == 0 else "",
                f"{params:,}" if params and i == 0 else "",
                name,
                value,
                str(est["n"]),
            )
    console.print(table)
    stored = [r["run_id"] for r in results if "run_id" in r]
    if stored:
        console.print(f"stored as eval run(s) {', '.join(stored)} (per-item results in items.jsonl)")
