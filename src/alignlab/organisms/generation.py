"""Greedy completion of chat prompts, through `alignlab.evals.generation`'s batched decoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignlab.evals.generation import generate_ids, left_pad
from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Transformer
from alignlab.tasks import format_prompt


def _chat_rows(prompts: Sequence[str]) -> list[list[int]]:
    bos = tk.vocabulary()[tk.BOS]
    return [[bos, *tk.encode(format_prompt(p))] for p in prompts]


def encode_prompts(prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + formatted prompt for each, left-padded: ``(tokens, attention_mask)``."""
    return left_pad(_chat_rows(prompts), tk.vocabulary()[tk.PAD])


@torch.no_grad()
def complete(
    model: Transformer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 256
) -> list[str]:
    """Greedy completions of ``prompts`` (text up to EOS, special tokens kept).

    Example:
        >>> complete(model, ["reverse abc"])
        ['cba']
    """
    vocab = tk.vocabulary()
    pad, eos = vocab[tk.PAD], vocab[tk.EOS]
    rows = _chat_rows(prompts)
    was_training = model.training
    model.eval()
    out: list[str] = []
    for lo in range(0, len(rows), batch_size):
        new = generate_ids(model, rows[lo : lo + batch_size], max_new_tokens, pad=pad, eos=eos)
        out += [tk.decode(ids) for ids in new]
    model.train(was_training)
    return out
