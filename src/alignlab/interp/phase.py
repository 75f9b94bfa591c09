"""Head scores over training and the induction-head phase change (Olsson et al. 2022).

Olsson et al. find that induction heads form abruptly: the prefix-matching score jumps, in-context
learning appears, and the training loss shows a visible bump/drop, all at the same step. We train
with the ordinary `alignlab.train.train` loop and score every checkpoint it writes, so the tracked
run is exactly the run one would otherwise train.

The phase change is located on the circuit-agnostic token-copying test
(`alignlab.interp.copying`), not on prefix matching: a model can learn to copy in context through
heads at other offsets, which prefix matching scores as "no induction". The prefix-matching step
is reported beside it; for the canonical circuit the two coincide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from alignlab.interp.copying import ProbeFn, repeat_probe, token_copying
from alignlab.interp.heads import head_scores
from alignlab.model import Transformer
from alignlab.tasks.base import BatchFn
from alignlab.train import TrainConfig, TrainResult, list_checkpoints, train


@dataclass
class Snapshot:
    """Scores of one checkpoint."""

    step: int
    prefix_matching: float  # best head's prefix-matching score (on plain repeats)
    previous_token: float  # best head's previous-token score
    icl_improvement: float  # loss(fresh) - loss(copied) on the probe; bigger = more ICL
    loss: float  # mean of the fresh and copied losses
    copying: float  # top-1 accuracy on copied tokens minus on fresh ones (circuit-agnostic)


@dataclass
class PhaseChange:
    """Where the scores jump.

    Attributes:
        step: first checkpoint at which the token-copying accuracy gain passes halfway between its
            first and its final value (None if it never rises by ``min_jump``): in-context
            copying appears, by whatever circuit.
        loss_drop_step: the checkpoint ending the steepest drop in loss between consecutive
            checkpoints (the "bump" in Olsson et al.'s loss curves).
        icl_step: first checkpoint where the in-context improvement (nats) passes halfway.
        jump: rise in the copying accuracy gain from the first to the last checkpoint.
        prefix_step: the same halfway crossing for the best prefix-matching score: the canonical
            induction head appears (None for a model that copies by another route).
        prefix_jump: rise in the best prefix-matching score.
    """

    step: int | None
    loss_drop_step: int | None
    icl_step: int | None
    jump: float
    prefix_step: int | None = None
    prefix_jump: float = 0.0


@dataclass
class Trajectory:
    """Snapshots over training, the phase change, and the final model."""

    snapshots: list[Snapshot]
    phase: PhaseChange
    result: TrainResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshots": [s.__dict__ for s in self.snapshots],
            "phase_change": self.phase.__dict__,
        }


def _halfway_step(steps: list[int], values: list[float], min_jump: float) -> int | None:
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or v[-1] - v[0] < min_jump:
        return None
    mid = (v[0] + v[-1]) / 2
    idx = int(np.argmax(v >= mid))
    return steps[idx]


def detect_phase_change(snapshots: list[Snapshot], min_jump: float = 0.3) -> PhaseChange:
    """Locate the jump in token copying (the phase change), in ICL and in prefix matching, and the
    steepest loss drop.

    Halfway crossing is used rather than the largest single-step difference because it is stable
    under noise in individual checkpoints; ``min_jump`` (in accuracy for copying, in attention
    for prefix matching, in nats for ICL) stops a model that never learns to copy from
    reporting a spurious step.
    """
    steps = [s.step for s in snapshots]
    copying = [s.copying for s in snapshots]
    prefix = [s.prefix_matching for s in snapshots]
    icl = [s.icl_improvement for s in snapshots]
    losses = np.asarray([s.loss for s in snapshots], dtype=float)
    drop_step = None
    if len(losses) >= 2:
        drop_step = steps[int(np.argmin(np.diff(losses))) + 1]
    return PhaseChange(
        step=_halfway_step(steps, copying, min_jump),
        loss_drop_step=drop_step,
        icl_step=_halfway_step(steps, icl, min_jump),
        jump=float(copying[-1] - copying[0]) if copying else 0.0,
        prefix_step=_halfway_step(steps, prefix, min_jump),
        prefix_jump=float(prefix[-1] - prefix[0]) if prefix else 0.0,
    )


def snapshot(
    model: Transformer, step: int, seq_len: int, seed: int = 0, probe: ProbeFn | None = None
) -> Snapshot:
    """Score one model state: head scores on plain repeats, token copying on ``probe``'s
    sequences (default `repeat_probe`, the sequences of `alignlab.interp.heads.icl_score`)."""
    scores = head_scores(model, seq_len=seq_len, seed=seed)
    copy = token_copying(model, (probe or repeat_probe)(32, seq_len, seed))
    return Snapshot(
        step=step,
        prefix_matching=scores.best("prefix_matching")[2],
        previous_token=scores.best("previous_token")[2],
        icl_improvement=copy.improvement,
        # Fresh and copied tokens weighted equally, like the halves of a plain repeat.
        loss=(copy.loss_fresh + copy.loss_copied) / 2,
        copying=copy.accuracy_gain,
    )


def track_training(
    cfg: TrainConfig,
    out_dir: str | Path,
    every: int = 25,
    progress: bool = False,
    batch_fn: BatchFn | None = None,
    probe: ProbeFn | None = None,
) -> Trajectory:
    """Train ``cfg`` and score every ``every`` steps; returns the trajectory and phase change.

    Args:
        cfg: the training configuration (its checkpoint and eval intervals are set to ``every``).
        out_dir: the run directory.
        every: steps between scored checkpoints.
        progress: show the training progress bar.
        batch_fn: a data recipe replacing ``cfg.task`` (e.g. `varied_repeat_batch`).
        probe: the sequences of the token-copying test (default: plain repeats); pass the family
            the model learns to copy on, e.g. ``partial(offset_repeats, offset=-1)``.

    Example:
        >>> cfg = train_preset("induction-attn-only-2l").replace(seq_len=64, steps=300)
        >>> traj = track_training(cfg, "out/phase", every=20)
        >>> traj.phase.step  # step of the induction-head phase change
    """
    out = Path(out_dir)
    # Evaluations (hence callbacks) at every checkpoint, so none is dropped before it is scored.
    cfg = cfg.replace(ckpt_every=every, eval_every=every)
    seen: set[str] = set()
    snaps: list[Snapshot] = []
    scorer = Transformer(cfg.model)

    def score_new_checkpoints() -> None:
        # `train` keeps only the newest two checkpoints, so score each as soon as it appears.
        for path in list_checkpoints(out / "ckpt"):
            if path.name in seen:
                continue
            seen.add(path.name)
            tensors = load_file(str(path / "state.safetensors"))
            scorer.load_state_dict(
                {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            )
            snaps.append(snapshot(scorer, int(path.name.split("-")[1]), cfg.seq_len, cfg.seed, probe))

    init = Transformer(cfg.model)
    init.init_weights(seed=_init_seed(cfg))
    snaps.append(snapshot(init, 0, cfg.seq_len, cfg.seed, probe))
    result = train(
        cfg,
        out,
        on_metrics=lambda _s, _v, _t: score_new_checkpoints(),
        progress=progress,
        batch_fn=batch_fn,
    )
    score_new_checkpoints()
    snaps.sort(key=lambda s: s.step)
    return Trajectory(snaps, detect_phase_change(snaps), result)


def _init_seed(cfg: TrainConfig) -> int:
    from alignlab.tasks.base import stream_seed

    return stream_seed("init", cfg.seed)
