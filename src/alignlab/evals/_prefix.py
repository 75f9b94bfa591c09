"""A forward pass that runs a shared context once and several short continuations against it.

The context rows use the causal fast path (right padding needs no mask); every continuation
("branch") token attends to its row's context keys and values plus the earlier tokens of its own
branch, as if it had been run after the context alone. In the last block only the last context
position is needed (it predicts each branch's first token), so the rest of the context skips that
block's attention output and MLP.

This bypasses the hook points (a hook would see other shapes), so the scorer uses it only when no
hook is attached; `test_evals.py` checks it against the plain forward for every architecture.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model.transformer import repeat_kv

PAD_BRANCH = -2


def hooks_active(model: Transformer) -> bool:
    return any(hp.active for hp in model.hook_dict.values())


def _qkv(attn: Any, h: Tensor, positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    b, p, _ = h.shape
    nq, nkv, hd = attn.n_heads, attn.n_kv, attn.d_head
    q, k, v = attn.W_QKV(h).split((nq * hd, nkv * hd, nkv * hd), dim=-1)
    q = attn.rotary(q.view(b, p, nq, hd), positions).transpose(1, 2)
    k = attn.rotary(k.view(b, p, nkv, hd), positions).transpose(1, 2)
    v = v.view(b, p, nkv, hd).transpose(1, 2)
    return (q, *repeat_kv(k, v, nq))


def _out(attn: Any, z: Tensor) -> Tensor:
    b, h, p, hd = z.shape
    return attn.W_O(z.transpose(1, 2).reshape(b, p, h * hd))


def _finish(block: Any, resid: Tensor, attn_out: Tensor) -> Tensor:
    # Same operations, in the same order, as Block.forward.
    cfg = block.cfg
    if cfg.attn_only:
        return resid + attn_out
    if cfg.sequential:
        mid = resid + attn_out
        return mid + block.mlp(block.ln2(mid))
    return block.mlp(block.ln2(resid)) + attn_out + resid


def _neg_inf_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    # An additive float mask runs faster than a boolean one in CPU attention kernels.
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def prefix_forward(
    model: Transformer,
    ctx: Tensor,
    ctx_len: Tensor,
    branch: Tensor,
    branch_pos: Tensor,
    branch_id: Tensor,
) -> tuple[Tensor, Tensor]:
    """Logits at the last context position ``[B, V]`` and at every branch token ``[B, nb, V]``.

    Args:
        ctx: right-padded context tokens ``[B, L]``.
        ctx_len: real length of each context row ``[B]``.
        branch: the branches' input tokens, concatenated per row ``[B, nb]`` (nb may be 0).
        branch_pos: position id of each branch token (its context length + offset).
        branch_id: which branch each token belongs to; `PAD_BRANCH` for padding.
    """
    B, L = ctx.shape
    nb = branch.shape[1]
    dev = ctx.device
    last = ctx_len - 1
    rows = torch.arange(B, device=dev)
    dtype = model.embed.weight.dtype
    # Context and branch tokens form one sequence [B, L + nb], so each block runs one set of
    # projections; only attention treats the two parts differently.
    ctx_ok = torch.arange(L, device=dev)[None, :] < ctx_len[:, None]  # [B, L]
    # The last context position sees its own context only.
    last_allowed = torch.cat([ctx_ok, torch.zeros(B, nb, dtype=torch.bool, device=dev)], dim=1)
    allowed = last_allowed[:, None, :]  # [B, 1, L + nb]
    if nb:
        idx = torch.arange(nb, device=dev)
        own = (branch_id[:, :, None] == branch_id[:, None, :]) & (idx[:, None] >= idx[None, :])
        own &= (branch_id != PAD_BRANCH)[:, None, :]
        own |= torch.eye(nb, dtype=torch.bool, device=dev)[None]  # padding sees itself
        branch_allowed = torch.cat([ctx_ok[:, None, :].expand(B, nb, L), own], dim=-1)
        allowed = torch.cat([allowed, branch_allowed], dim=1)  # [B, 1 + nb, L + nb]
    sel_mask = _neg_inf_mask(allowed[:, None], dtype)  # queries: last context position, branches
    positions = torch.cat([torch.arange(L, device=dev).expand(B, L), branch_pos], dim=1)
    x = model.embed(torch.cat([ctx, branch], dim=1))
    n_blocks = len(model.blocks)
    blocks: list[Any] = list(model.blocks)
    for i, block in enumerate(blocks):
        attn = block.attn
        q, k, v = _qkv(attn, block.ln1(x), positions)
        if i < n_blocks - 1:
            z = F.scaled_dot_product_attention(q[:, :, :L], k[:, :, :L], v[:, :, :L], is_causal=True)
            if nb:
                zb = F.scaled_dot_product_attention(q[:, :, L:], k, v, attn_mask=sel_mask[:, :, 1:])
                z = torch.cat([z, zb], dim=2)
            x = _finish(block, x, _out(attn, z))
        else:
            # Last block: only the last context position and the branch tokens are needed.
            q_sel = torch.cat([q[rows, :, last][:, :, None], q[:, :, L:]], dim=2)
            z = F.scaled_dot_product_attention(q_sel, k, v, attn_mask=sel_mask)
            x_sel = torch.cat([x[rows, last][:, None], x[:, L:]], dim=1)
            x = _finish(block, x_sel, _out(attn, z))
    logits = model.unembed(model.ln_final(x))  # [B, 1 + nb, V]
    return logits[:, 0], logits[:, 1:]
