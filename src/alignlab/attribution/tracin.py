"""TracIn over a training run's own checkpoints (Pruthi et al. 2020).

TracIn credits a training example with the loss reduction its own update caused on the query:
``η_t ∇ℓ(w_t, query) · ∇ℓ(w_t, z)`` at the step ``t`` where ``z`` was in the batch (their
"idealised" TracIn). An install sees every example of its stream exactly once, at a known step
(`alignlab.organisms.install_stream`), so here each example is scored at the newest snapshot
taken at or before its step, with the learning rate of that step: TracInCP's checkpoint
approximation, without summing over checkpoints at which the example was never used.

The trainer keeps only its newest checkpoints, so snapshots are taken by pausing: the run stops
when it asks for the batch after a checkpoint, the checkpoint's weights are copied, and the run
resumes from it (resume is bit-identical, `alignlab.train.train`), ending exactly where an
uninterrupted run ends. The optimiser is AdamW, not SGD, so the update direction is the
preconditioned gradient; TracIn's plain dot product ignores that, as Pruthi et al.'s does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from alignlab.attribution.grads import example_gradients
from alignlab.model import Transformer
from alignlab.tasks import Batch, Example
from alignlab.tasks.base import BatchFn
from alignlab.train import (
    TrainConfig,
    TrainResult,
    list_checkpoints,
    load_latest,
    lr_at,
    make_optimizer,
    train,
)
from alignlab.train.loop import initial_model


@dataclass(frozen=True)
class Snapshots:
    """Models along one training run.

    Attributes:
        steps: completed steps of each snapshot, ascending; 0 is the starting model.
        models: the weights after ``steps[i]`` steps.
        cfg: the run's config (its learning-rate schedule weights TracIn's terms).
    """

    steps: list[int]
    models: list[Transformer]
    cfg: TrainConfig


class _Pause(Exception):
    """Raised by the data recipe to stop a run right after a checkpoint."""


def _pausing(batch_fn: BatchFn, at: int) -> BatchFn:
    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        if split == "train" and step == at:
            raise _Pause
        return batch_fn(batch_size, seq_len, seed, step, split)

    return make


def train_with_snapshots(
    cfg: TrainConfig,
    out_dir: str | Path,
    batch_fn: BatchFn,
    init_model: Transformer | None,
    n_snapshots: int,
) -> tuple[TrainResult, Snapshots]:
    """`alignlab.train.train`, also returning the model at ``n_snapshots`` evenly spaced steps
    (the first is the starting model, step 0). ``out_dir`` must hold no checkpoints yet.

    Example:
        >>> result, snaps = train_with_snapshots(cfg, tmp, stream_batch_fn(org), base, 4)
        >>> snaps.steps  # e.g. [0, 50, 100, 150] for 200 steps
    """
    if not 1 <= n_snapshots <= cfg.steps:
        raise ValueError(f"n_snapshots must be in [1, steps={cfg.steps}], got {n_snapshots}")
    if list_checkpoints(Path(out_dir) / "ckpt"):
        raise ValueError(f"{out_dir} already holds checkpoints; snapshots need a fresh run directory")
    every = cfg.steps // n_snapshots
    stops = [i * every for i in range(1, n_snapshots)]
    run_cfg = cfg.replace(ckpt_every=every)  # an execution field: the run's identity is unchanged
    models = [initial_model(cfg, init_model, torch.device("cpu")).eval()]
    steps = [0]
    for stop in stops:
        with contextlib.suppress(_Pause):
            train(run_cfg, out_dir, progress=False, init_model=init_model, batch_fn=_pausing(batch_fn, stop))
        snap = Transformer(cfg.model)
        meta = load_latest(Path(out_dir) / "ckpt", snap, make_optimizer(snap, cfg))
        if meta is None or int(meta["step"]) != stop:
            raise RuntimeError(f"expected a checkpoint at step {stop}, found {meta and meta['step']}")
        models.append(snap.eval())
        steps.append(stop)
    result = train(run_cfg, out_dir, progress=False, init_model=init_model, batch_fn=batch_fn)
    return result, Snapshots(steps, models, cfg)


def tracin_scores(
    snapshots: Snapshots,
    examples: Sequence[Example],
    example_steps: Sequence[int] | np.ndarray,
    queries: Sequence[Example],
    dim: int = 4096,
    seed: int = 0,
) -> Float[Tensor, "m n"]:
    """TracIn of each training example on each query, ``[len(queries), len(examples)]``.

    Example ``i`` (trained on at step ``example_steps[i]``) is scored at the newest snapshot at or
    before that step: ``lr(step) * g_query · g_i``, gradients sketched as in `example_gradients`.
    Positive = the example's update lowered the query's loss (supports it).
    """
    steps = np.asarray(example_steps)
    if len(steps) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(steps)} steps")
    owner = np.searchsorted(np.asarray(snapshots.steps), steps, side="right") - 1
    if (owner < 0).any():
        raise ValueError("an example's step precedes the first snapshot")
    lrs = torch.tensor([lr_at(int(s), snapshots.cfg) for s in steps], dtype=torch.float64)
    scores = torch.zeros(len(queries), len(examples), dtype=torch.float64)
    for c, model in enumerate(snapshots.models):
        idx = np.flatnonzero(owner == c)
        if not len(idx):
            continue
        g_train = example_gradients(model, [examples[int(i)] for i in idx], dim=dim, seed=seed).double()
        g_query = example_gradients(model, queries, dim=dim, seed=seed).double()
        scores[:, torch.from_numpy(idx)] = (g_query @ g_train.T) * lrs[idx]
    return scores.float()
