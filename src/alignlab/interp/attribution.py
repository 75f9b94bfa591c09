"""Logit lens and direct logit attribution (DLA).

The residual stream at the end is a sum of component outputs (embedding, every head, every
attention bias, every MLP; Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"), and the unembedding is linear once the final norm's scale is frozen at its value on
this input. So each component's direct effect on a logit is its output, centred (LayerNorm only),
divided by that scale, times ``ln_final.weight`` and the target's unembedding row. The
contributions sum exactly to the logit minus the final-norm bias term ``W_U[t] · b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model.transformer import Block


@torch.no_grad()
def logit_lens(model: Transformer, tokens: Int[Tensor, "b p"]) -> Float[Tensor, "l1 b p v"]:
    """Logits read off the residual stream before each block and after the last (nostalgebraist
    2020): ``[n_layers + 1, batch, pos, vocab]``; the last entry equals the model's logits.

    Example:
        >>> lens = logit_lens(model, tokens)
        >>> lens[:, 0, -1].argmax(-1)  # each layer's guess for the next token
    """
    n = model.cfg.n_layers
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    return torch.stack([model.unembed(model.ln_final(cache[h])) for h in hooks])


@dataclass
class Attribution:
    """Direct logit attribution at one position.

    Attributes:
        labels: component names ("embed", "L0H3", "L0.attn_bias", "L1.mlp", ...).
        values: ``[n_components, batch]`` direct contribution of each component to the logit.
        logit: ``[batch]`` the model's logit for the target.
        norm_bias: ``[batch]`` the part of the logit not attributable to any component
            (``W_U[t] · ln_final.bias``); ``values.sum(0) + norm_bias == logit``.
    """

    labels: list[str]
    values: Float[Tensor, "c b"]
    logit: Float[Tensor, " b"]
    norm_bias: Float[Tensor, " b"]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` components with the largest mean contribution."""
        mean = self.values.mean(1)
        order = mean.argsort(descending=True)[:k]
        return [(self.labels[i], float(mean[i])) for i in order]


@torch.no_grad()
def direct_logit_attribution(
    model: Transformer,
    tokens: Int[Tensor, "b p"],
    targets: Int[Tensor, " b"],
    pos: int = -1,
) -> Attribution:
    """Direct contribution of every component to ``logit[targets]`` at position ``pos``.

    Example:
        >>> attr = direct_logit_attribution(model, tokens, tokens[:, -1], pos=-2)
        >>> attr.top(3)  # e.g. [("L1H5", 4.2), ...] — the induction head writes the answer
    """
    cfg = model.cfg
    n = cfg.n_layers
    keep = {"hook_embed", f"blocks.{n - 1}.hook_resid_post"}
    keep |= {f"blocks.{i}.attn.hook_z" for i in range(n)}
    if not cfg.attn_only:
        keep |= {f"blocks.{i}.hook_mlp_out" for i in range(n)}
    logits, cache = model.run_with_cache(tokens, names_filter=list(keep))
    rows = torch.arange(tokens.shape[0])
    logit = logits[rows, pos, targets]

    ln = model.ln_final
    resid = cache[f"blocks.{n - 1}.hook_resid_post"][:, pos]  # [b, d]
    centre = not ln.rms
    if centre:
        scale = (resid.var(-1, unbiased=False) + ln.eps).sqrt()
    else:
        scale = (resid.pow(2).mean(-1) + ln.eps).sqrt()
    w_u = model.unembed.weight[targets] * ln.weight  # [b, d]
    norm_bias = (
        (model.unembed.weight[targets] * ln.bias).sum(-1) if ln.bias is not None else torch.zeros_like(logit)
    )

    def direct(x: Tensor) -> Tensor:  # [b, d] -> [b]
        if centre:
            x = x - x.mean(-1, keepdim=True)
        return (x * w_u).sum(-1) / scale

    labels, values = ["embed"], [direct(cache["hook_embed"][:, pos])]
    hd = cfg.d_head
    for i, module in enumerate(model.blocks):
        attn = cast(Block, module).attn
        z = cache[f"blocks.{i}.attn.hook_z"][:, pos]  # [b, h, dh]
        for h in range(cfg.n_heads):
            out = z[:, h] @ attn.W_O.weight[:, h * hd : (h + 1) * hd].T
            labels.append(f"L{i}H{h}")
            values.append(direct(out))
        if attn.W_O.bias is not None:
            labels.append(f"L{i}.attn_bias")
            values.append(direct(attn.W_O.bias.expand(tokens.shape[0], -1)))
        if not cfg.attn_only:
            labels.append(f"L{i}.mlp")
            values.append(direct(cache[f"blocks.{i}.hook_mlp_out"][:, pos]))
    return Attribution(labels, torch.stack(values), logit, norm_bias)
