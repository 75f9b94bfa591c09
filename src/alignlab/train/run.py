"""Training through the run store: a finished config is returned at once, never retrained."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from alignlab._io import write_json_atomic
from alignlab.errors import DivergenceError
from alignlab.model.hf import load
from alignlab.store import Run, Store
from alignlab.tasks.base import BatchFn
from alignlab.train.config import TrainConfig
from alignlab.train.loop import TrainResult, train
from alignlab.train.preflight import preflight


def train_run(
    cfg: TrainConfig,
    store: Store,
    progress: bool = True,
    *,
    kind: str = "train",
    recipe: Mapping[str, Any] | None = None,
    batch_fn: BatchFn | None = None,
    init_model_dir: str | Path | None = None,
) -> tuple[Run, bool]:
    """Train ``cfg`` as a stored run; returns ``(run, trained_now)``.

    A run whose config (and package version) already finished is returned without training; an
    interrupted one resumes from its last checkpoint. The model is saved as a Hugging Face
    directory at ``run.dir / "model"``, the summary at ``run.dir / "summary.json"``.

    Args:
        cfg: the training configuration.
        store: the run store.
        progress: show a progress bar.
        kind: the run's kind in the store ("train", "organism", "intervention", ...).
        recipe: what else determines the result besides ``cfg`` (an organism's data recipe, the
            parent run a fine-tune starts from); it is hashed into the run id.
        batch_fn: the data recipe's batch function (see `alignlab.train.train`).
        init_model_dir: fine-tune from this model directory instead of training from scratch;
            name it in ``recipe`` too (e.g. the parent run id), or runs from different parents
            would share an id.

    Raises:
        ConfigError: the task, device or memory check of `preflight` fails, or the parent model
            is unusable; nothing is stored then.
        DivergenceError: the loss or weights became non-finite; the run is marked ``failed``
            with the metric ``diverged_at_step`` (the step), never ``done``.

    Example:
        >>> run, _ = train_run(train_preset("tiny"), Store())
        >>> alignlab.load(run.dir / "model")
    """
    # Everything a mistake could break is checked before the run's row exists: a refused config
    # or parent model leaves the store exactly as it was.
    preflight(cfg, batch_fn)
    init = load(init_model_dir) if init_model_dir is not None else None
    run, done = _open_run(cfg, store, kind, recipe)
    if done:
        return run, False

    def log(step: int, values: dict[str, float], tokens: int) -> None:
        store.log_metrics(run.id, step, values, tokens=tokens or None)

    try:
        t0 = time.time()
        result = train(cfg, run.dir, on_metrics=log, progress=progress, init_model=init, batch_fn=batch_fn)
        _finish_run(store, run, cfg, recipe, result, time.time() - t0)
    except BaseException as e:
        _fail_run(store, run, e)
        raise
    return store.get(run.id), True


def _open_run(
    cfg: TrainConfig, store: Store, kind: str, recipe: Mapping[str, Any] | None
) -> tuple[Run, bool]:
    """The run of ``cfg`` and ``recipe``, and whether it is done; an unfinished one is marked
    ``running`` with the metrics logged after its last checkpoint deleted (they will be logged
    again on resume). Shared by `train_run` and stacked training, so both give the same ids."""
    run, _created = store.get_or_create(kind, cfg.identity(), recipe=dict(recipe) if recipe else None)
    if run.status == "done" and (run.dir / "model" / "model.safetensors").exists():
        return run, True
    run.dir.mkdir(parents=True, exist_ok=True)
    store.set_status(run.id, "running")
    ckpts = sorted((run.dir / "ckpt").glob("step-*"))
    if ckpts:
        # Metrics logged after the checkpoint we resume from would be logged again.
        store.delete_metrics_after(run.id, int(ckpts[-1].name.split("-")[1]))
    else:
        store.delete_metrics_after(run.id, -1)
    return run, False


def _finish_run(
    store: Store,
    run: Run,
    cfg: TrainConfig,
    recipe: Mapping[str, Any] | None,
    result: TrainResult,
    wall_seconds: float,
    **extra: Any,
) -> None:
    """Save the trained model and ``summary.json`` (plus ``extra`` keys), then mark the run done."""
    result.model.save_pretrained(str(run.dir / "model"))
    counts = cfg.model.param_counts()
    write_json_atomic(
        run.dir / "summary.json",
        {
            "run_id": run.id,
            "config": cfg.to_dict(),
            "recipe": dict(recipe) if recipe else None,
            "params": counts,
            "final": result.metrics,
            "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s,
            "resumed_from": result.resumed_from,
            "wall_seconds": wall_seconds,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            **extra,
        },
    )
    store.set_status(run.id, "done")


def _fail_run(store: Store, run: Run, error: BaseException) -> None:
    """Mark ``run`` failed; a divergence also logs ``diverged_at_step`` (the step), so
    `alignlab show` says where the run went wrong."""
    if isinstance(error, DivergenceError):
        store.log_metrics(run.id, error.step, {"diverged_at_step": error.step})
    store.set_status(run.id, "failed")


def run_summary(run: Run) -> dict[str, Any]:
    """The ``summary.json`` of a finished training run ({} if it has none)."""
    path = run.dir / "summary.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data
