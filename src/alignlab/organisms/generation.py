"""Greedy completion of chat prompts, through `alignlab.evals.generation`'s batched decoding.

Prompts are encoded and completions decoded with the model's own tokenizer
(`alignlab.model.text.tokenizer_of`: the one saved beside its weights, else the character one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignlab.evals.generation import generate_ids, left_pad
from alignlab.model.text import Tokenizer, char_tokenizer, tokenizer_of
from alignlab.model.transformer import Transformer
from alignlab.tasks import prompt_ids


def encode_prompts(
    prompts: Sequence[str], tokenizer: Tokenizer | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + formatted prompt for each, left-padded: ``(tokens, attention_mask)``."""
    tok = tokenizer or char_tokenizer()
    return left_pad([prompt_ids(p, tok) for p in prompts], tok.pad_id)


@torch.no_grad()
def complete(
    model: Transformer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 256
) -> list[str]:
    """Greedy completions of ``prompts`` (text up to EOS, special tokens kept).

    Example:
        >>> complete(model, ["reverse abc"])
        ['cba']
    """
    tok = tokenizer_of(model)
    rows = [prompt_ids(p, tok) for p in prompts]
    was_training = model.training
    model.eval()
    out: list[str] = []
    for lo in range(0, len(rows), batch_size):
        new = generate_ids(model, rows[lo : lo + batch_size], max_new_tokens, pad=tok.pad_id, eos=tok.eos_id)
        out += [tok.decode(ids) for ids in new]
    model.train(was_training)
    return out
