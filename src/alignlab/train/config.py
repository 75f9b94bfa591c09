"""Training configuration and named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from alignlab._validate import MAX_BATCH, MAX_STEPS, check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.config import SIZES, ModelConfig, model_preset

# Execution settings: they change how fast a run goes, not what it computes, so they are left out
# of the run id (a finished run is found again whatever thread count or checkpoint interval).
EXECUTION_FIELDS = ("device", "threads", "ckpt_every", "grad_checkpointing")
# Fields added after run ids existed: left out of the id at their default, so every run stored
# before them (and the vendored base models' recorded identities) keeps its id.
_LATER_DEFAULTS: dict[str, Any] = {"precision": "fp32", "lora_rank": 0, "lora_alpha": 0}
PRECISIONS = ("fp32", "bf16", "fp16")
_MAX_THREADS = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        model: the architecture (``--set model=al-1m`` picks a preset, ``model.d_model=64`` a field).
        task: a registered task in `alignlab.tasks` ("induction", "chat", ...).
        steps: optimiser steps.
        batch_size: sequences per optimiser step (split over ``grad_accum`` micro-batches).
        seq_len: tokens per sequence.
        lr: peak learning rate (AdamW, betas 0.9/0.95).
        warmup_steps: linear warm-up steps, followed by cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        weight_decay: AdamW decay on matrices (never on gains, biases or embeddings' norms).
        grad_clip: global gradient-norm clip; 0 disables.
        grad_accum: micro-batches per step; the result equals one big batch.
        seed: seeds initialisation and the data stream.
        eval_every: steps between evaluations on held-out batches; 0 only at the end.
        ckpt_every: steps between atomic checkpoints (resume points).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        threads: torch CPU threads; 0 picks 1. On the 2-core reference machine one thread beat two
            at every size from 10K to 3M parameters, and two one-thread runs in parallel beat one
            two-thread run (benchmarks/RESULTS.md), so parallelism goes to processes, not threads.
        precision: "fp32", or mixed precision "bf16" / "fp16" (autocast; weights and optimizer
            stay float32; fp16 scales the loss and needs CUDA).
        grad_checkpointing: recompute each block's activations in the backward pass instead of
            keeping them (less memory, ~1/3 more compute; same result).
        lora_rank: 0 fine-tunes every weight; r > 0 trains LoRA adapters of rank r on the
            attention and MLP matrices only (Hu et al. 2021, via ``peft``: ``alignlab[lora]``),
            merged into the weights when the run ends.
        lora_alpha: LoRA's scale numerator (update = alpha / r * B A); 0 takes 2 r.
    """

    model: ModelConfig = field(default_factory=lambda: SIZES["al-100k"])
    task: str = "induction"
    steps: int = 500
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    grad_accum: int = 1
    seed: int = 0
    eval_every: int = 100
    ckpt_every: int = 100
    device: str = "auto"
    threads: int = 0
    precision: str = "fp32"
    grad_checkpointing: bool = False
    lora_rank: int = 0
    lora_alpha: int = 0

    def __post_init__(self) -> None:
        problems = [
            None if isinstance(self.model, ModelConfig) else f"model must be a ModelConfig, got {self.model}",
            None if isinstance(self.task, str) and self.task else f"task must be a name, got {self.task!r}",
            check_int("steps", self.steps, lo=1, hi=MAX_STEPS),
            check_int("batch_size", self.batch_size, lo=1, hi=MAX_BATCH),
            # Two tokens are the shortest sequence with a next-token target; model.n_ctx bounds it.
            check_int("seq_len", self.seq_len, lo=2),
            check_int("grad_accum", self.grad_accum, lo=1, hi=MAX_BATCH),
            check_real("lr", self.lr, lo=0.0, lo_open=True),
            check_int("warmup_steps", self.warmup_steps, lo=0, hi=MAX_STEPS),
            check_real("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0),
            check_real("weight_decay", self.weight_decay, lo=0.0),
            check_real("grad_clip", self.grad_clip, lo=0.0),
            check_int("seed", self.seed, lo=0),
            check_int("eval_every", self.eval_every, lo=0, hi=MAX_STEPS),
            check_int("ckpt_every", self.ckpt_every, lo=0, hi=MAX_STEPS),
            check_int("threads", self.threads, lo=0, hi=_MAX_THREADS),
            check_int("lora_rank", self.lora_rank, lo=0, hi=65536),
            check_int("lora_alpha", self.lora_alpha, lo=0, hi=1 << 20),
            None
            if self.precision in PRECISIONS
            else f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            None
            if isinstance(self.grad_checkpointing, bool)
            else f"grad_checkpointing must be true or false, got {self.grad_checkpointing!r}",
        ]
        if not isinstance(self.device, str) or (
            self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:")
        ):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        raise_problems("TrainConfig", problems)
        relations = []
        if self.batch_size % self.grad_accum:
            relations.append(
                f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})"
            )
        if self.seq_len > self.model.n_ctx:
            relations.append(
                f"seq_len ({self.seq_len}) exceeds model.n_ctx ({self.model.n_ctx}); "
                "raise model.n_ctx or lower seq_len"
            )
        raise_problems("TrainConfig", relations)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.from_dict(data["model"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result (what the run id hashes)."""
        d = self.to_dict()
        for name in EXECUTION_FIELDS:
            d.pop(name)
        for name, default in _LATER_DEFAULTS.items():
            if d[name] == default:
                d.pop(name)
        return d

    def resolved_threads(self) -> int:
        return self.threads or 1


def _presets() -> dict[str, TrainConfig]:
    out: dict[str, TrainConfig] = {}
    for name, mcfg in SIZES.items():
        out[f"induction-{name}"] = TrainConfig(model=mcfg, task="induction")
        out[f"chat-{name}"] = TrainConfig(
            model=mcfg, task="chat", seq_len=48, steps=1500, lr=2e-3, eval_every=250
        )
    for name in ("attn-only-1l", "attn-only-2l"):
        # Olsson et al. 2022's setting: attention-only models on repeated random tokens, with the
        # repeat period varied so that only an induction circuit (not a fixed offset) helps.
        out[f"induction-{name}"] = TrainConfig(
            model=model_preset(name),
            task="induction-varied",
            seq_len=48,
            steps=500,
            warmup_steps=30,
            min_lr_ratio=1.0,
            eval_every=50,
        )
    out["tiny"] = TrainConfig(model=SIZES["al-10k"], steps=50, batch_size=8, seq_len=32)
    out["induction"] = out["induction-al-100k"]
    out["chat"] = out["chat-al-300k"]
    return out


TRAIN_PRESETS: dict[str, TrainConfig] = _presets()


def train_preset(name: str) -> TrainConfig:
    """Look up a training preset by name, with a helpful error."""
    try:
        return TRAIN_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; run `alignlab presets` to list them "
            f"(e.g. {', '.join(list(TRAIN_PRESETS)[:4])}, ...)"
        ) from None


def resolve_model(key: str, name: str) -> ModelConfig:
    """`apply_overrides` resolver: ``--set model=al-1m`` selects a model preset."""
    return model_preset(name)
