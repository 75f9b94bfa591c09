"""``alignlab attribute``: trace an organism's behaviour back to its (planted) training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignlab._io import write_json_atomic
from alignlab.cli._common import StoreOpt, open_store, resolve_model_dir, run_organism
from alignlab.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    def attribute(
        run: Annotated[
            str,
            typer.Argument(metavar="RUN", help="Run id (prefix) of an organism run, or a model directory."),
        ],
        organism: Annotated[
            str | None,
            typer.Option(
                help="Organism whose mix and behaviour to use (default: the one the run installed)."
            ),
        ] = None,
        n_train: Annotated[int, typer.Option(min=10, help="Training examples to score.")] = 400,
        n_queries: Annotated[int, typer.Option(min=2, help="Defect (and control) queries.")] = 20,
        dim: Annotated[int, typer.Option(min=16, help="Gradient sketch width.")] = 4096,
        seed: Annotated[int, typer.Option()] = 0,
        store: StoreOpt = None,
    ) -> None:
        """Rank the organism's installation examples by how much they support its defect.

        For a stored install run these are the examples it trained on (evenly spaced indices of
        its install stream); for a bare model directory, a fresh sample of the mix.

        Reports, per method (gradient dot product, cosine, influence function), the AUROC with
        which the poisoned examples are found, the same for clean-behaviour control queries and
        for an untrained model of the same shape (surface similarity alone), and stores them as
        an ``attribution`` run (they appear on the evidence page).
        """
        from alignlab import load
        from alignlab.attribution import attribute_organism
        from alignlab.organisms import get_organism

        st = open_store(store)
        model_dir = resolve_model_dir(run, store)
        is_dir = Path(run).expanduser().exists()
        model_ref = str(model_dir.resolve()) if is_dir else f"run:{st.get(run).id}"
        recorded = run_organism(run, store)
        # --organism naming the installed organism keeps the run's organism config.
        org = recorded if recorded is not None and organism in (None, recorded.name) else None
        if org is None and organism is not None:
            org = get_organism(organism)
        if org is None:
            raise ConfigError(
                f"{run} records no organism; pass --organism (e.g. backdoor) to say whose data to trace"
            )
        name = org.name
        stream = None
        source_run = None if is_dir else st.get(run)
        if source_run is not None and source_run.kind == "organism" and org is recorded:
            from alignlab.organisms import install_stream
            from alignlab.train import TrainConfig

            stream = install_stream(org, TrainConfig.from_dict(source_run.config))
        config = {
            "model": model_ref,
            "organism": name,
            "organism_config": org.config.to_dict(),
            "n_train": n_train,
            "n_queries": n_queries,
            "dim": dim,
            "seed": seed,
            "scored": "fresh sample" if stream is None else "install stream",
        }
        out, _ = st.get_or_create("attribution", config)
        st.set_status(out.id, "running")
        try:
            res = attribute_organism(
                load(model_dir), org, n_train=n_train, n_queries=n_queries, dim=dim, seed=seed, stream=stream
            )
            for method in res.auroc:
                st.log_estimate(out.id, f"data_attribution_auroc/{method}", res.auroc[method])
                st.log_estimate(out.id, f"data_attribution_control_auroc/{method}", res.control_auroc[method])
                st.log_estimate(
                    out.id, f"data_attribution_untrained_auroc/{method}", res.baseline_auroc[method]
                )
            write_json_atomic(out.dir / "attribution.json", {"config": config, **res.to_dict()}, indent=2)
        except BaseException:
            st.set_status(out.id, "failed")
            raise
        st.set_status(out.id, "done")
        source = "of its training examples" if stream is not None else "fresh examples of its mix"
        typer.echo(f"attribution run {out.id}: {res.n_planted} of {res.n_train} {source} poisoned ({name})")
        for method in res.auroc:
            typer.echo(
                f"  {method:9s} AUROC {res.auroc[method]}  precision@{res.n_planted} "
                f"{res.precision_at_n_planted[method]:.2f}  control AUROC {res.control_auroc[method]}  "
                f"untrained-model AUROC {res.baseline_auroc[method]}"
            )
