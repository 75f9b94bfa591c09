"""``alignlab study NAME`` and ``alignlab studies``: every registered study, one generic command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from alignlab._overrides import apply_overrides, settable_keys
from alignlab.cli._common import JsonOpt, SetOpt, StoreOpt, open_store


def register(app: typer.Typer) -> None:
    @app.command()
    def studies(json_: JsonOpt = False) -> None:
        """List the registered studies (besides the flagship `alignlab run`), their presets and keys."""
        from alignlab.studies.registry import studies as table

        rows: list[dict[str, Any]] = []
        for name, defn in sorted(table().items()):
            presets = {p: desc for p, (_, desc) in defn.presets().items()}
            keys = settable_keys(defn.preset("default"))
            rows.append({"study": name, "question": defn.question, "presets": presets, "keys": keys})
        if json_:
            typer.echo(json.dumps(rows, indent=1))
            return
        for r in rows:
            typer.echo(f"{r['study']}: {r['question']}")
            for p, desc in r["presets"].items():
                typer.echo(f"  --preset {p}: {desc}")
            typer.echo(f"  --set keys: {', '.join(r['keys'])}")

    @app.command()
    def study(
        name: Annotated[str, typer.Argument(help="Study name (see `alignlab studies`).")],
        store: StoreOpt = None,
        json_: JsonOpt = False,
        preset: Annotated[str, typer.Option(help="Study preset (quick, default, ...).")] = "default",
        set_: SetOpt = None,
        base_model: Annotated[
            list[Path] | None,
            typer.Option(
                "--base-model",
                help="A Hugging Face GPT-NeoX/Llama directory (its own tokenizer) as the study's base "
                "model, for studies that take one (repeatable); others say so. The flagship takes "
                "it as `alignlab run --base-model DIR`.",
            ),
        ] = None,
    ) -> None:
        """Run a registered study: writes study.json into a study run and its HTML report. A study
        already finished with the same spec is read back, not rerun."""
        from alignlab.report import write_report
        from alignlab.studies.registry import get_study, run_registered, with_base_models

        defn = get_study(name)
        spec = with_base_models(defn, defn.preset(preset), [str(p) for p in base_model or []])
        spec = apply_overrides(spec, set_ or [])
        st = open_store(store)
        run, result = run_registered(st, name, spec)
        report = write_report(st, run.id)
        path = run.dir / "study.json"
        if json_:
            typer.echo(json.dumps({**result, "path": str(path), "report": str(report)}, indent=1))
            return
        typer.echo(defn.summary(result))
        typer.echo(f"study.json: {path}")
        typer.echo(f"report (opens offline): {report}")
