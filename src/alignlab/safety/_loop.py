"""A plain fine-tuning loop that hands the model back at each dose."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from alignlab.model.transformer import Transformer
from alignlab.safety.base import DoseSchedule
from alignlab.tasks import Batch, stream_seed
from alignlab.tasks.base import BatchFn
from alignlab.train.loop import grouped_adamw, warmup_lr

WARMUP = 10


def make_adamw(model: Transformer, lr: float) -> torch.optim.AdamW:
    """alignlab.train's AdamW (decay on matrices only) with the defender's weight decay."""
    return grouped_adamw(model, lr, weight_decay=0.01)


def real_tokens(batch: Batch) -> int:
    """Non-padding tokens of ``batch`` (prompt and completion): the unit every dose is counted in."""
    if batch.attention_mask is None:
        return batch.tokens.numel()
    return int(batch.attention_mask.sum())


def finetune_doses(
    model: Transformer,
    make_batch: BatchFn,
    doses: DoseSchedule | Sequence[int],
    *,
    lr: float,
    batch_size: int,
    seq_len: int,
    seed: int,
    step_hook: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, int, Transformer]]:
    """Supervised fine-tuning (completion-only loss) yielding ``(steps, tokens, model)`` at doses.

    ``doses`` is a `DoseSchedule` (`Budget.schedule`) or plain step counts; ``tokens`` counts the
    real (non-padding) tokens of every batch trained on.

    A constant learning rate after a short warm-up, unlike installation's cosine schedule: the
    model at dose d is then the same whatever the largest dose is, so one run gives the whole
    dose-response curve (Hubinger et al. also report persistence along one safety-training run).
    """
    schedule = doses if isinstance(doses, DoseSchedule) else DoseSchedule("steps", tuple(doses))
    torch.manual_seed(stream_seed("safety", seed))
    opt = make_adamw(model, lr)
    model.train()
    step = tokens = 0
    for dose in schedule.doses:
        while not schedule.reached(dose, step, tokens):
            for group in opt.param_groups:
                group["lr"] = warmup_lr(lr, step, WARMUP)
            batch: Batch = make_batch(batch_size, seq_len, seed, step, "train").to(model.device)
            loss = model(
                batch.tokens,
                return_type="loss",
                loss_mask=batch.loss_mask,
                attention_mask=batch.attention_mask,
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += real_tokens(batch)
            if step_hook:
                step_hook(step)
        yield step, tokens, model
