"""Batched greedy completion of chat prompts (left-padded, so one forward pass per new token)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Transformer
from alignlab.tasks import format_prompt


def encode_prompts(prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + formatted prompt for each, left-padded: ``(tokens, attention_mask)``."""
    vocab = tk.vocabulary()
    rows = [[vocab[tk.BOS], *tk.encode(format_prompt(p))] for p in prompts]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), vocab[tk.PAD], dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return tokens, mask


@torch.no_grad()
def complete(
    model: Transformer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 256
) -> list[str]:
    """Greedy completions of ``prompts`` (text up to EOS, special tokens kept).

    Example:
        >>> complete(model, ["reverse abc"])
        ['cba']
    """
    eos = tk.vocabulary()[tk.EOS]
    was_training = model.training
    model.eval()
    out: list[str] = []
    for lo in range(0, len(prompts), batch_size):
        tokens, mask = encode_prompts(prompts[lo : lo + batch_size])
        tokens, mask = tokens.to(model.device), mask.to(model.device)
        gen = model.generate(tokens, max_new_tokens, stop_token=eos, attention_mask=mask)
        for row in gen[:, tokens.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append(tk.decode(row))
    model.train(was_training)
    return out
