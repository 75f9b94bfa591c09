"""Fine-tuning on a fixed list of chat examples, and sampling responses: what every CAI stage uses."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from alignlab.errors import ConfigError
from alignlab.evals.generation import generate_ids
from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Transformer
from alignlab.safety._loop import WARMUP, make_adamw
from alignlab.tasks import Batch, Example, collate, format_prompt, stream_seed
from alignlab.train.loop import warmup_lr


def trimmed_batch(examples: Sequence[Example], seq_len: int) -> Batch:
    """`alignlab.tasks.collate`, cut after the longest row: a causal model gives the same values
    without the trailing padding, in less time (most requests are far shorter than ``seq_len``)."""
    batch = collate(examples, seq_len)
    assert batch.attention_mask is not None and batch.loss_mask is not None  # collate sets both
    width = int(batch.attention_mask.sum(-1).max())
    return Batch(batch.tokens[:, :width], batch.loss_mask[:, :width], batch.attention_mask[:, :width])


def finetune(
    init: Transformer,
    examples: Sequence[Example],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seq_len: int,
    seed: int,
) -> Transformer:
    """A copy of ``init`` fine-tuned (completion-only loss) on ``examples``, reshuffled each epoch.

    The safety interventions' optimiser and warm-up (`alignlab.safety._loop`), constant rate after.
    """
    if not examples:
        raise ConfigError("fine-tuning needs at least one example")
    model = init.clone()
    torch.manual_seed(stream_seed("cai-finetune", seed))
    opt = make_adamw(model, lr)
    rng = random.Random(stream_seed("cai-finetune-order", seed))
    order: list[int] = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = warmup_lr(lr, step, WARMUP)
        while len(order) < batch_size:
            epoch = list(range(len(examples)))
            rng.shuffle(epoch)
            order += epoch
        idx, order = order[:batch_size], order[batch_size:]
        batch = trimmed_batch([examples[i] for i in idx], seq_len)
        loss = model(
            batch.tokens, return_type="loss", loss_mask=batch.loss_mask, attention_mask=batch.attention_mask
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


@torch.no_grad()
def sample_responses(
    model: Transformer,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
    batch_size: int = 256,
) -> list[str]:
    """Responses to chat ``prompts`` (text up to EOS), sampled at ``temperature`` (0: greedy)."""
    vocab = tk.vocabulary()
    bos, pad, eos = vocab[tk.BOS], vocab[tk.PAD], vocab[tk.EOS]
    rows = [[bos, *tk.encode(format_prompt(p))] for p in prompts]
    gen = torch.Generator().manual_seed(stream_seed("cai-sample", seed)) if temperature > 0 else None
    was_training = model.training
    model.eval()
    out: list[str] = []
    for lo in range(0, len(rows), batch_size):
        new = generate_ids(
            model,
            rows[lo : lo + batch_size],
            max_new_tokens,
            pad=pad,
            eos=eos,
            temperature=temperature,
            generator=gen,
        )
        out += [tk.decode(ids) for ids in new]
    model.train(was_training)
    return out
