"""Gradient clipping and AdamW over stacked ``[N, P]`` rows, one row per member.

Each is the per-member op of `torch.nn.utils.clip_grad_norm_` / `torch.optim.AdamW` with every
member's own scalars (learning rate, weight decay, step count, clip norm), run once over the
whole stack instead of once per parameter tensor and member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def clip_rows_(grad: Tensor, max_norms: Sequence[float]) -> None:
    """Scale row ``m`` of ``grad`` by ``min(1, max_norms[m] / (norm_m + 1e-6))``, as
    `torch.nn.utils.clip_grad_norm_` does to one model's gradients; a 0 leaves that row alone.

    The norm is taken over the row at once, where torch takes the norm of the per-tensor norms:
    the same number up to float32 rounding of the sum's order.
    """
    if not any(max_norms):
        return
    norms = torch.linalg.vector_norm(grad, dim=1)
    limit = torch.tensor(list(max_norms), dtype=grad.dtype, device=grad.device)
    coef = torch.clamp(limit / (norms + 1e-6), max=1.0)
    grad.mul_(torch.where(limit > 0, coef, torch.ones_like(coef))[:, None])


def _column(values: Sequence[float], like: Tensor) -> Tensor | float:
    """Per-row scalars: one Python float when all agree (torch's own scalar path), else an
    ``[N, 1]`` tensor of the same values rounded to ``like``'s dtype, as a scalar operand is."""
    if all(v == values[0] for v in values):
        return values[0]
    return torch.tensor(list(values), dtype=like.dtype, device=like.device)[:, None]


@torch.no_grad()
def adamw_rows_(
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    grad: Tensor,
    *,
    lrs: Sequence[float],
    steps: Sequence[int],
    decay: Sequence[tuple[int, int, Sequence[float]]],
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One step of `torch.optim.AdamW` (single-tensor implementation, the CPU default) per row.

    Bit-identical to torch's update of each member (tests/test_stacked.py): the ops run in
    torch's order, and each per-member scalar is rounded to float32 where torch rounds it.

    Args:
        param, exp_avg, exp_avg_sq, grad: ``[N, P]`` rows (updated in place, except ``grad``).
        lrs: each row's learning rate for this step.
        steps: each row's step count after this step (1 on the first).
        decay: ``(start, stop, weight_decay per row)`` for each column span (parameter group).
        betas, eps: AdamW's, shared by all rows.
    """
    beta1, beta2 = betas
    for lo, hi, wds in decay:
        if hi > lo and any(wds):
            param[:, lo:hi].mul_(_column([1 - lr * wd for lr, wd in zip(lrs, wds, strict=True)], param))
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_sqrt = _column([(1 - beta2**s) ** 0.5 for s in steps], param)
    denom = (exp_avg_sq.sqrt() / bias_sqrt).add_(eps)
    # torch's addcdiv_ computes self + (value * t1) / t2, so folding the per-row value into t1
    # first rounds identically.
    step_size = _column([-lr / (1 - beta1**s) for lr, s in zip(lrs, steps, strict=True)], param)
    param.addcdiv_(exp_avg * step_size, denom)
