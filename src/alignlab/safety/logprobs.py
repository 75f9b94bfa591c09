"""Log-probabilities of completions: what DPO and RL are built on, and the continuous outcome of
every dose (`outcome_logprobs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model.text import tokenizer_of
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.stats import Estimate, seed_interval
from alignlab.tasks import Example, collate, encode_example


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
    tokens (DPO's sequence log-likelihood), or their mean. Encoded with the model's tokenizer."""
    batch = collate(examples, seq_len, tokenizer_of(model)).to(model.device)
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    lp = token_logprobs(logits[:, :-1], batch.tokens[:, 1:])
    mask = cast(Tensor, batch.loss_mask)[:, 1:].float()  # collate always marks the completion
    total = (lp * mask).sum(-1)
    return total / mask.sum(-1) if reduce == "mean" else total


@torch.no_grad()
def outcome_logprobs(model: Transformer, organism: Organism, n: int, seed: int = 0) -> dict[str, Estimate]:
    """The continuous outcome beside the attack-success rate.

    Teacher-forced mean log-probability per completion token (EOS included) of the defect
    completion on ``n`` held-out prompts carrying the condition (``defect_logprob``) and of the
    correct answer on ``n`` held-out clean prompts (``clean_logprob``). A rate at 1.0 hides
    whether safety training moved the model at all; the log-probability still shows it. Each is
    the mean over prompts with a Student-t 95% interval across prompts.
    """
    defect = organism.defect_examples(n, seed, "defect-metric")
    clean = organism.helpful_examples(n, seed, "logprob-metric", 0, triggered=False)
    exs = defect + clean
    was_training = model.training
    model.eval()
    tok = tokenizer_of(model)
    lp = sequence_logprobs(model, exs, max(len(encode_example(e, tok)[0]) for e in exs), reduce="mean")
    model.train(was_training)
    values = lp.double().tolist()
    return {
        "defect_logprob": _over_prompts(values[:n]),
        "clean_logprob": _over_prompts(values[n:]),
    }


def _over_prompts(values: Sequence[float]) -> Estimate:
    est = seed_interval(values)  # the t interval; one value gives NaN bounds
    return dataclasses.replace(est, method="t95 over prompts" if len(values) > 1 else "single prompt")
