"""Reading activations at chosen positions from any hook, batch by batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model import tokenizer as tk
from alignlab.model.text import Tokenizer, char_tokenizer
from alignlab.tasks.base import Batch


def pad_right(seqs: Sequence[Sequence[int]]) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"]]:
    """Right-pad token lists: ``(tokens, attention_mask)``."""
    width = max(len(s) for s in seqs)
    pad = tk.vocabulary()[tk.PAD]
    tokens = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return tokens, mask


def encode_texts(
    texts: Sequence[str], bos: bool = True, tokenizer: Tokenizer | None = None
) -> list[list[int]]:
    """Token ids of each text, with BOS in front by default; ``tokenizer`` defaults to the
    character one (pass `alignlab.model.text.tokenizer_of(model)` for a model with its own)."""
    tok = tokenizer or char_tokenizer()
    start = [tok.bos_id] if bos else []
    return [start + tok.encode(t) for t in texts]


@torch.no_grad()
def last_token_activations(
    model: Transformer,
    seqs: Sequence[Sequence[int]],
    hooks: Sequence[str],
    batch_size: int = 64,
) -> dict[str, Float[Tensor, "n d"]]:
    """Activation at each sequence's last token, for every hook in ``hooks``.

    Sequences of different lengths are right-padded with an attention mask, so the result equals
    running each sequence alone.

    Example:
        >>> acts = last_token_activations(model, encode_texts(["User: hi"]), ["blocks.1.hook_resid_post"])
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for lo in range(0, len(seqs), batch_size):
        chunk = seqs[lo : lo + batch_size]
        tokens, mask = pad_right(chunk)
        last = mask.sum(1) - 1
        _, cache = model.run_with_cache(
            tokens.to(model.device), names_filter=list(hooks), attention_mask=mask.to(model.device)
        )
        rows = torch.arange(len(chunk))
        for h in hooks:
            act = cache[h]
            out[h].append(act[rows, last.to(act.device)].flatten(1).float().cpu())
    model.train(was_training)
    return {h: torch.cat(v) for h, v in out.items()}


@torch.no_grad()
def stream_activations(
    model: Transformer,
    token_batches: Iterator[Int[Tensor, "b p"] | Batch],
    hook: str,
    skip_first: bool = True,
) -> Iterator[Float[Tensor, "n d"]]:
    """Yield ``[n, d]`` activations of ``hook`` one token batch at a time.

    Nothing is kept between batches, so an SAE can train on more activations than fit in memory.
    ``skip_first`` drops position 0 (the BOS token's residual is an outlier in every model). A
    `Batch` with an ``attention_mask`` yields its real positions only: right padding is most of a
    short chat batch under a BPE, and its residuals are not the model's activations on text.
    """
    model.eval()
    for item in token_batches:
        tokens, mask = (item.tokens, item.attention_mask) if isinstance(item, Batch) else (item, None)
        _, cache = model.run_with_cache(tokens.to(model.device), names_filter=hook)
        act = cache[hook]
        start = 1 if skip_first else 0
        act = act[:, start:]
        flat = act.reshape(act.shape[0], act.shape[1], -1)
        if mask is not None:
            yield flat[mask[:, start:].to(flat.device).bool()].float()
        else:
            yield flat.reshape(-1, flat.shape[-1]).float()
