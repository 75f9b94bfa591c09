"""Repeated random token sequences: the task on which induction heads form (Olsson et al. 2022).

Each sequence is ``BOS, x_1..x_n, x_1..x_n``: the second half is predictable only by copying from
the first, so loss on the repeat falling below loss on the first half measures in-context learning.
"""

from __future__ import annotations

import torch

from alignlab.model import tokenizer as tk
from alignlab.tasks.base import Batch, register_task, stream_seed


@register_task("induction")
def induction_batch(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
    """``[batch, seq_len]`` sequences of BOS + a random half + the same half again."""
    half = (seq_len - 1) // 2
    gen = torch.Generator().manual_seed(stream_seed("induction", seed, split, step))
    vocab = torch.tensor(tk.char_ids())
    first = vocab[torch.randint(len(vocab), (batch_size, half), generator=gen)]
    bos = torch.full((batch_size, 1), tk.vocabulary()[tk.BOS], dtype=torch.long)
    parts = [bos, first, first]
    pad = seq_len - 1 - 2 * half
    if pad:
        parts.append(first[:, :pad])
    return Batch(tokens=torch.cat(parts, dim=1))


def repeat_halves(seq_len: int) -> tuple[slice, slice]:
    """Target positions of the first half and of its repeat, for in-context-learning scores."""
    half = (seq_len - 1) // 2
    return slice(1, half + 1), slice(half + 1, 2 * half + 1)


@register_task("induction-varied")
def varied_repeat_batch(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
    """``BOS`` then a random segment repeated cyclically, its period uniform in
    ``[4, (seq_len - 1) // 2]`` per sequence (so every sequence holds at least two copies).

    With a fixed period (the plain "induction" task) one attention layer can solve the repeat by
    looking a fixed distance back, without an induction circuit; varying the period removes that
    shortcut, so only a previous-token head composed with an induction head helps. Most tokens
    are predictable by induction, which makes the circuit form within a few hundred steps. A
    `alignlab.tasks.base.BatchFn`: a pure function of its arguments (exact resume).

    Example:
        >>> train(cfg, out_dir, batch_fn=varied_repeat_batch)
    """
    half = (seq_len - 1) // 2
    gen = torch.Generator().manual_seed(stream_seed("varied-repeat", seed, split, step))
    vocab = torch.tensor(tk.char_ids())
    body = vocab[torch.randint(len(vocab), (batch_size, seq_len - 1), generator=gen)]
    periods = torch.randint(min(4, half), half + 1, (batch_size, 1), generator=gen)
    pos = torch.arange(seq_len - 1)[None]
    body = body.gather(1, pos % periods)
    bos = torch.full((batch_size, 1), tk.vocabulary()[tk.BOS], dtype=torch.long)
    return Batch(tokens=torch.cat([bos, body], dim=1))
