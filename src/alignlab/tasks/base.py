"""What every task produces: a batch of token ids with an optional loss mask."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from alignlab.errors import ConfigError


@dataclass
class Batch:
    """A training or evaluation batch.

    Attributes:
        tokens: token ids ``[batch, pos]``.
        loss_mask: True where a token is a prediction target (e.g. the completion only), or None
            for plain language modelling over every token.
        attention_mask: 1 for real tokens, 0 for right padding; None when nothing is padded.
    """

    tokens: Int[Tensor, "b p"]
    loss_mask: Bool[Tensor, "b p"] | None = None
    attention_mask: Int[Tensor, "b p"] | None = None

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Batch(self.tokens.to(device), move(self.loss_mask), move(self.attention_mask))


# A task maps (batch_size, seq_len, seed, step, split) to a Batch. Batches are a pure function of
# these arguments, so training resumes mid-run without saving any data-loader state.
BatchFn = Callable[[int, int, int, int, str], Batch]
TASKS: dict[str, BatchFn] = {}


def register_task(name: str) -> Callable[[BatchFn], BatchFn]:
    def deco(fn: BatchFn) -> BatchFn:
        TASKS[name] = fn
        return fn

    return deco


def get_task(name: str) -> BatchFn:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}") from None


def make_batch(task: str, batch_size: int, seq_len: int, seed: int, step: int, split: str = "train") -> Batch:
    """The batch of ``task`` at ``step``; ``split`` separates the train and eval streams."""
    return get_task(task)(batch_size, seq_len, seed, step, split)


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any labels: independent streams per (seed, split, step, ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
