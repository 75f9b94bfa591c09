"""Log-probabilities of completions, as the preference and red-teaming methods score them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model.transformer import Transformer
from alignlab.tasks import Example, collate


def token_logprobs(logits: Float[Tensor, "b n v"], targets: Int[Tensor, "b n"]) -> Float[Tensor, "b n"]:
    """Log-probability of each target token under the logits that predict it (computed in fp32)."""
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)


def sequence_logprobs(
    model: Transformer,
    examples: Sequence[Example],
    seq_len: int,
    reduce: Literal["sum", "mean"] = "sum",
) -> Float[Tensor, " n"]:
    """Log-probability of each example's completion given its prompt: summed over the completion
    tokens (DPO's sequence log-likelihood), or their mean."""
    batch = collate(examples, seq_len)
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    lp = token_logprobs(logits[:, :-1], batch.tokens[:, 1:])
    mask = cast(Tensor, batch.loss_mask)[:, 1:].float()  # collate always marks the completion
    total = (lp * mask).sum(-1)
    return total / mask.sum(-1) if reduce == "mean" else total
