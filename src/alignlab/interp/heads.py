"""Attention-head scores and the in-context-learning score, without a tokenizer.

Everything is measured on repeated random sequences ``BOS, x_1..x_n, x_1..x_n`` (Olsson et al.
2022, "In-context Learning and Induction Heads"): on the repeat, an induction head at query
``x_j`` (second copy) attends to the token *after* the first ``x_j`` and copies it.

Sign convention: alignlab reports the *in-context improvement*
``loss(first half) - loss(repeated half)`` (bigger = more in-context learning), the same as
`alignlab.train.evaluate`'s ``icl_improvement``. Olsson et al. define the "ICL score" as loss late
in the context minus loss early (negative = learning); ours is its negation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Block
from alignlab.tasks.induction import induction_batch


def repeated_tokens(batch_size: int, seq_len: int, seed: int = 0) -> Int[Tensor, "b p"]:
    """``BOS + random half + the same half`` (the induction task's held-out stream)."""
    return induction_batch(batch_size, seq_len, seed, 0, "interp").tokens


def induction_pair(
    batch_size: int, seq_len: int, seed: int = 0
) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"]]:
    """Clean ``BOS A A`` and corrupted ``BOS A' A`` (first copy re-drawn) for patching: on the
    corrupted prompt induction cannot predict the repeat."""
    clean = repeated_tokens(batch_size, seq_len, seed)
    other = repeated_tokens(batch_size, seq_len, seed + 1)
    half = _half(seq_len)
    corrupted = clean.clone()
    corrupted[:, 1 : half + 1] = other[:, 1 : half + 1]
    return clean, corrupted


def _half(seq_len: int) -> int:
    return (seq_len - 1) // 2


@dataclass
class HeadScores:
    """Per-head attention scores, each ``[n_layers, n_heads]`` in [0, 1] (copying in [-1, 1]).

    Attributes:
        previous_token: mean attention from each position to the one before it.
        duplicate_token: mean attention from the repeat to the earlier copy of the same token.
        prefix_matching: mean attention from the repeat to the token *after* the earlier copy
            (the induction pattern of Olsson et al. 2022).
        copying: OV-circuit eigenvalue positivity ``sum(λ) / sum(|λ|)`` of ``W_U W_O W_V W_E``
            over character tokens (Olsson et al.; Elhage et al. 2021); +1 = pure copying.
    """

    previous_token: Float[Tensor, "l h"]
    duplicate_token: Float[Tensor, "l h"]
    prefix_matching: Float[Tensor, "l h"]
    copying: Float[Tensor, "l h"]

    def best(self, score: str = "prefix_matching") -> tuple[int, int, float]:
        """``(layer, head, value)`` of the highest-scoring head."""
        t: Tensor = getattr(self, score)
        idx = int(t.argmax())
        layer, head = divmod(idx, t.shape[1])
        return layer, head, float(t[layer, head])

    def to_dict(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in asdict(self).items()}


@torch.no_grad()
def attention_scores(
    model: Transformer, tokens: Int[Tensor, "b p"]
) -> tuple[Float[Tensor, "l h"], Float[Tensor, "l h"], Float[Tensor, "l h"]]:
    """Previous-token, duplicate-token and prefix-matching scores on repeated sequences.

    ``tokens`` must be ``BOS + half + half`` (see `repeated_tokens`).
    """
    p = tokens.shape[1]
    half = _half(p)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = cache.stack("attn.hook_pattern")  # [l, b, h, q, k]
    q = torch.arange(1, p)
    prev = pattern[..., q, q - 1].mean(dim=(1, 3))
    rep = torch.arange(half + 1, 2 * half + 1)  # query positions in the repeat
    dup = pattern[..., rep, rep - half].mean(dim=(1, 3))
    prefix = pattern[..., rep, rep - half + 1].mean(dim=(1, 3))
    return prev, dup, prefix


@torch.no_grad()
def copying_scores(model: Transformer, token_ids: list[int] | None = None) -> Float[Tensor, "l h"]:
    """Eigenvalue positivity of each head's full OV circuit ``W_U W_O^h W_V^h W_E``.

    LayerNorm gains are folded in (scales only; the centring and normalisation are ignored, the
    usual approximation). Restricted to ``token_ids`` (default: the plain characters) so that
    never-trained special-token embeddings do not dilute the score.
    """
    cfg = model.cfg
    ids = torch.tensor(token_ids if token_ids is not None else tk.char_ids())
    w_e = model.embed.weight[ids]  # [t, d]
    w_u = model.unembed.weight[ids] * model.ln_final.weight  # [t, d]
    hd, nq, nkv = cfg.d_head, cfg.n_heads, cfg.kv_heads
    out = torch.zeros(cfg.n_layers, nq)
    for layer, module in enumerate(model.blocks):
        block = cast(Block, module)
        attn = block.attn
        w_v_all = attn.W_QKV.weight[(nq + nkv) * hd :]  # [kv*dh, d]
        ln_w = block.ln1.weight
        for h in range(nq):
            kv = h // (nq // nkv)
            w_v = w_v_all[kv * hd : (kv + 1) * hd] * ln_w  # [dh, d]
            w_o = attn.W_O.weight[:, h * hd : (h + 1) * hd]  # [d, dh]
            # Eigenvalues of the t×t circuit equal those of the small dh×dh matrix
            # (w_v w_e^T)(w_u w_o) up to zeros, which keeps this cheap.
            small = (w_v @ w_e.T) @ (w_u @ w_o)
            eig = torch.linalg.eigvals(small.double())
            out[layer, h] = float(eig.real.sum() / eig.abs().sum().clamp_min(1e-12))
    return out


def head_scores(model: Transformer, seq_len: int = 64, batch_size: int = 32, seed: int = 0) -> HeadScores:
    """All head scores of ``model`` on fresh repeated random sequences.

    Example:
        >>> scores = head_scores(model, seq_len=64)
        >>> layer, head, value = scores.best("prefix_matching")  # the strongest induction head
    """
    was_training = model.training
    model.eval()
    tokens = repeated_tokens(batch_size, seq_len, seed).to(model.device)
    prev, dup, prefix = attention_scores(model, tokens)
    copying = copying_scores(model)
    model.train(was_training)
    return HeadScores(prev.cpu(), dup.cpu(), prefix.cpu(), copying.cpu())


@torch.no_grad()
def per_position_loss(model: Transformer, tokens: Int[Tensor, "b p"]) -> Float[Tensor, "b p1"]:
    """Loss of predicting token ``t+1`` from the prefix up to ``t``: ``[batch, pos - 1]``."""
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


@dataclass(frozen=True)
class ICLScore:
    """In-context learning on repeated random sequences (alignlab's sign: bigger = more ICL).

    Attributes:
        loss_first_half: mean loss on the first (unpredictable) half.
        loss_repeat_half: mean loss on the repeat.
        improvement: ``loss_first_half - loss_repeat_half``; about 0 without induction,
            about ``log(vocab)`` with perfect copying. Olsson et al.'s ICL score is its negation.
    """

    loss_first_half: float
    loss_repeat_half: float
    improvement: float


def icl_score(model: Transformer, seq_len: int = 64, batch_size: int = 32, seed: int = 0) -> ICLScore:
    """The in-context-learning score of ``model`` (see `ICLScore` for the sign convention).

    Example:
        >>> icl_score(model).improvement  # > 1 nat for a 2-layer model with induction heads
    """
    was_training = model.training
    model.eval()
    tokens = repeated_tokens(batch_size, seq_len, seed).to(model.device)
    loss = per_position_loss(model, tokens)
    model.train(was_training)
    half = _half(seq_len)
    # loss[:, t - 1] is the loss of predicting token t; first half targets are 1..half.
    first = float(loss[:, :half].mean())
    repeat = float(loss[:, half : 2 * half].mean())
    return ICLScore(first, repeat, first - repeat)
