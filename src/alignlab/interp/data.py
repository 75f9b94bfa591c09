"""Data recipes for interpretability ground truths.

`varied_repeat_batch` is the induction task with the repeat's *period varying per sequence*. With
the fixed period of ``alignlab.tasks``'s "induction" task, a single attention layer can predict the
repeat positionally (attend to offset ``half - 1`` via rotary), so even a 1-layer model "learns in
context" without any induction head. Varying the period removes that shortcut and leaves the
two-layer induction circuit (previous-token head + induction head; Olsson et al. 2022) as the only
way to copy.
"""

from __future__ import annotations

import torch

from alignlab.model import tokenizer as tk
from alignlab.tasks.base import Batch, stream_seed


def two_copy_batch(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
    """``BOS, A, A, filler``: one repeat of a random segment, ``|A|`` uniform in
    ``[8, (seq_len - 1) // 2]`` per sequence, then fresh random tokens (a `BatchFn`)."""
    half = (seq_len - 1) // 2
    gen = torch.Generator().manual_seed(stream_seed("two-copy", seed, split, step))
    vocab = torch.tensor(tk.char_ids())
    body = vocab[torch.randint(len(vocab), (batch_size, seq_len - 1), generator=gen)]
    lengths = torch.randint(min(8, half), half + 1, (batch_size, 1), generator=gen)
    pos = torch.arange(seq_len - 1)[None].expand(batch_size, -1)
    second = (pos >= lengths) & (pos < 2 * lengths)
    src = torch.where(second, pos - lengths, pos)
    body = body.gather(1, src)
    bos = torch.full((batch_size, 1), tk.vocabulary()[tk.BOS], dtype=torch.long)
    return Batch(tokens=torch.cat([bos, body], dim=1))
