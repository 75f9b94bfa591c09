"""A lean decoder-only transformer (GPT-NeoX/Pythia, or Llama) with TransformerLens hook points.

Weights are stored fused (one QKV matrix, one gate+up matrix) because on small models the number
of kernel launches, not FLOPs, limits CPU throughput; `alignlab.model.hf` converts to and from
Hugging Face's layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from alignlab._validate import MAX_NEW_TOKENS, check_int, check_real, raise_problems
from alignlab.model import _native
from alignlab.model.config import ModelConfig
from alignlab.model.decode import Stopping
from alignlab.model.hooks import HookedModule, HookPoint

ReturnType = Literal["logits", "loss", "both"]


class Norm(nn.Module):
    """LayerNorm (neox) or RMSNorm (llama), exposing ``hook_normalized`` (after the gain)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.rms = cfg.arch == "llama"
        self.eps = cfg.norm_eps
        self.weight = nn.Parameter(torch.ones(cfg.d_model))
        self.bias = None if self.rms else nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[Tensor, "b p d"]) -> Float[Tensor, "b p d"]:
        if self.rms:
            # Same op order as HF LlamaRMSNorm (fp32 variance), which the 1e-5 parity relies on.
            dtype = x.dtype
            h = x.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
            out = self.weight * h.to(dtype)
        else:
            out = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return self.hook_normalized(out)


class Rotary(nn.Module):
    """Rotary position embedding on the first ``rotary_dim`` dims (rotate-half convention).

    Computed over whole heads as ``x * cos + cat(x2, x1, 0) * sin`` (x1, x2: the halves of the
    rotated dims), with the tables padded to ``d_head`` (cos 1 and sin 0 on the dims that are not
    rotated) and rotate_half's minus sign folded into sin. That equals HF's
    ``cat(x_rot * cos + rotate_half(x_rot) * sin, x_pass)`` bit for bit (negation is exact and
    ``x * 1 + 0 * 0 == x``) but avoids slicing, whose backward fills a full-size zero tensor per
    slice, and short strided inner loops: 25-45% less time in this op (benchmarks/RESULTS.md).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dim = cfg.rotary_dim
        self.d_head = cfg.d_head
        self.base = cfg.rotary_base
        # Tables are built lazily for the lengths actually used: Llama configs declare n_ctx of
        # 10^5 tokens, and a full table per layer would cost hundreds of MB.
        self.cos: Tensor  # [n, d_head], 1 beyond rotary_dim
        self.sin_signed: Tensor  # [n, d_head], sin with its first half negated, 0 beyond rotary_dim
        self.register_buffer("cos", torch.empty(0, self.d_head), persistent=False)
        self.register_buffer("sin_signed", torch.empty(0, self.d_head), persistent=False)

    def _tables(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self.cos.shape[0] < length or self.cos.device != device:
            n = max(length, 256)
            # Same formula as HF's default rope init so cos/sin agree bit-for-bit.
            inv_freq = 1.0 / (
                self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64).float() / self.dim)
            )
            freqs = torch.outer(torch.arange(n).float(), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1).to(device)
            cos, sin = emb.cos(), emb.sin()
            half, rest = self.dim // 2, self.d_head - self.dim
            self.cos = torch.cat((cos, cos.new_ones(n, rest)), dim=-1)
            self.sin_signed = torch.cat((-sin[:, :half], sin[:, half:], sin.new_zeros(n, rest)), -1)
        return self.cos, self.sin_signed

    def forward(
        self, x: Float[Tensor, "b p h dh"], positions: Int[Tensor, "b p"] | None
    ) -> Float[Tensor, "b p h dh"]:
        if not torch.is_grad_enabled():
            return self._rotate_no_grad(x, positions)
        if self.dim == 0:
            return x
        b, p, h, hd = x.shape
        if positions is None:
            cos_t, sin_t = self._tables(p, x.device)
            # Per-head copies of the (small) tables, so the multiplies below run over whole
            # [heads * d_head] rows instead of d_head-long pieces.
            cos = cos_t[:p, None, :].expand(p, h, hd).contiguous()
            sin = sin_t[:p, None, :].expand(p, h, hd).contiguous()
        else:
            cos_t, sin_t = self._tables(int(positions.max()) + 1, x.device)
            cos, sin = cos_t[positions][:, :, None, :], sin_t[positions][:, :, None, :]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        half = self.dim // 2
        x1, x2, _ = x.split((half, half, hd - self.dim), dim=-1)
        zeros = x.new_zeros(()).expand(b, p, h, hd - self.dim)
        return x * cos + torch.cat((x2, x1, zeros), dim=-1) * sin

    def _rotate_no_grad(
        self, x: Float[Tensor, "b p h dh"], positions: Int[Tensor, "b p"] | None
    ) -> Float[Tensor, "b p h dh"]:
        """`forward` for inference: a ``[b, p, h, dh]`` view of a head-major copy, rotated."""
        b, p, h, hd = x.shape
        out = torch.empty(b, h, p, hd, dtype=x.dtype, device=x.device)
        out.transpose(1, 2).copy_(x)
        self.rotate_(out, positions)
        return out.transpose(1, 2)

    @torch.no_grad()
    def rotate_(self, x: Float[Tensor, "*n b h p dh"], positions: Int[Tensor, "b p"] | None) -> None:
        """Rotate head-major ``x`` in place; the same values as `forward`, bit for bit.

        Only the rotated dims are touched (Pythia rotates a quarter of each head; the whole-head
        formula of `forward` made five passes over q and k). They are gathered dims-major, as
        ``[..., dim, p]``, so the multiplies run along positions: with ``[..., p, dim]`` every
        inner loop was 2-4 floats long, and the op slower (benchmarks/RESULTS.md,
        interp_throughput session 3). Slicing and in-place writes are fine: there is no backward here.
        """
        if self.dim == 0:
            return
        p, dim, half = x.shape[-2], self.dim, self.dim // 2
        if positions is None:
            cos_t, sin_t = self._tables(p, x.device)
            cos, sin = cos_t[:p, :dim], sin_t[:p, :dim]
        else:
            cos_t, sin_t = self._tables(int(positions.max()) + 1, x.device)
            cos, sin = cos_t[positions][:, None, :, :dim], sin_t[positions][:, None, :, :dim]
        cos_t, sin_t = (c.to(x.dtype).transpose(-1, -2).contiguous() for c in (cos, sin))
        rot = x[..., :dim]
        t = rot.transpose(-1, -2).contiguous()
        swapped = torch.cat((t[..., half:, :], t[..., :half, :]), dim=-2)
        rot.copy_((t * cos_t + swapped * sin_t).transpose(-1, -2))


@dataclass
class LayerKV:
    """One layer's keys (rotated) and values so far, ``[b, kv_heads, t, d_head]``."""

    k: Tensor | None = None
    v: Tensor | None = None

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's keys and values (along ``t``); returns all of them so far."""
        if self.k is not None and self.v is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


def repeat_kv(k: Tensor, v: Tensor, n_heads: int) -> tuple[Tensor, Tensor]:
    """Keys and values ``[b, kv_heads, t, d_head]`` with each head repeated for the query heads
    that share it (grouped-query attention, Ainslie et al. 2023); unchanged when there is one per
    query head."""
    group = n_heads // k.shape[1]
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


@dataclass
class KVCache:
    """What generation keeps between steps: every layer's keys and values, and which of the
    ``t`` tokens so far are real (not padding)."""

    layers: list[LayerKV]
    keep: Bool[Tensor, "b t"] | None = None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        bias = cfg.arch == "neox"
        self.W_QKV = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv) * self.d_head, bias=bias)
        self.W_O = nn.Linear(self.n_heads * self.d_head, cfg.d_model, bias=bias)
        self.rotary = Rotary(cfg)
        self.hook_q = HookPoint()  # [b, p, h, dh], before rotation
        self.hook_k = HookPoint()  # [b, p, kv_h, dh]
        self.hook_v = HookPoint()
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()  # [b, h, q, k], masked, before softmax
        self.hook_pattern = HookPoint()  # [b, h, q, k]
        self.hook_z = HookPoint()  # [b, p, h, dh]

    def forward(
        self,
        x: Float[Tensor, "b p d"],
        positions: Int[Tensor, "b p"] | None = None,
        mask: Tensor | None = None,
        keep: Bool[Tensor, "b p"] | None = None,
        past: LayerKV | None = None,
    ) -> Float[Tensor, "b p d"]:
        """``mask``: allowed (query, key) pairs, None for plain causal; ``keep``: set when ``mask``
        is causal attention over the real tokens ``keep`` marks (as `Transformer.forward` builds
        it), which lets the fused kernel take padded batches; ``past``: this layer's keys and
        values of earlier tokens, extended in place (generation's KV cache)."""
        b, p, _ = x.shape
        hd, nq, nkv = self.d_head, self.n_heads, self.n_kv
        qkv = self.W_QKV(x)
        q_in, k_in, v_in = (t.view(b, p, -1, hd) for t in qkv.split((nq * hd, nkv * hd, nkv * hd), dim=-1))
        q, k, v = self.hook_q(q_in), self.hook_k(k_in), self.hook_v(v_in)
        if not torch.is_grad_enabled() and nq == nkv and q is q_in and k is k_in and v is v_in:
            # Inference with q, k, v as computed: one copy makes all three head-major (the
            # layout the matmuls read) and q and k are rotated together, in place.
            heads = torch.empty(3, b, nq, p, hd, dtype=qkv.dtype, device=qkv.device)
            heads.permute(1, 3, 0, 2, 4).copy_(qkv.view(b, p, 3, nq, hd))
            self.rotary.rotate_(heads[:2], positions)
            q = self.hook_rot_q(heads[0].transpose(1, 2)).transpose(1, 2)
            k = self.hook_rot_k(heads[1].transpose(1, 2)).transpose(1, 2)
            v = heads[2]
        else:
            q = self.hook_rot_q(self.rotary(q, positions)).transpose(1, 2)
            k = self.hook_rot_k(self.rotary(k, positions)).transpose(1, 2)
            v = v.transpose(1, 2)
        if past is not None:
            k, v = past.extend(k, v)
        k, v = repeat_kv(k, v, nq)
        if self.hook_pattern.active or self.hook_attn_scores.active:
            if (mask is None or keep is not None) and _native.supports(q, k, v):
                scores, pattern, z = _native.causal_attention(q, k, v, keep, 1.0 / math.sqrt(hd))
                z = self._pattern_hooks_after_kernel(scores, pattern, z, v)
            else:
                scores = self.hook_attn_scores(_masked_scores(q, k, mask))
                pattern = self.hook_pattern(scores.softmax(dim=-1))
                z = (pattern @ v).transpose(1, 2)
        elif mask is None:
            # Fused kernel when nobody is looking at the pattern: same maths, far fewer launches.
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        z = self.hook_z(z)
        return self.W_O(z.reshape(b, p, nq * hd))

    def _pattern_hooks_after_kernel(
        self,
        scores: Float[Tensor, "b h p p"],
        pattern: Float[Tensor, "b h p p"],
        z: Float[Tensor, "b p h dh"],
        v: Float[Tensor, "b h p dh"],
    ) -> Float[Tensor, "b p h dh"]:
        """Run the score and pattern hooks on what the kernel computed, redoing what they edit.

        The kernel produces pattern and z before the hooks see the scores, so a hook that returns
        a new tensor or edits one in place (seen through its version counter) must have the later
        values recomputed from its output, exactly as on the unfused path.
        """
        seen = scores._version
        hooked = self.hook_attn_scores(scores)
        stale = hooked is not scores or scores._version != seen
        if stale:
            pattern = hooked.softmax(dim=-1)
        seen = pattern._version
        hooked = self.hook_pattern(pattern)
        if stale or hooked is not pattern or pattern._version != seen:
            z = (hooked @ v).transpose(1, 2)
        return z


def _causal(p: int, device: torch.device) -> Tensor:
    return torch.ones(p, p, dtype=torch.bool, device=device).tril()


def _padded_positions_and_mask(
    keep: Bool[Tensor, "b t"], p: int
) -> tuple[Int[Tensor, "b p"], Bool[Tensor, "b 1 p t"]]:
    """Rotary positions and allowed keys for the last ``p`` of ``t`` tokens, ``keep`` marking the
    real ones: positions count real tokens only (so a left-padded prompt matches its unpadded
    run), keys are causal over real tokens, and a padding query sees itself (an all -inf row
    would make the softmax NaN)."""
    t = keep.shape[1]
    positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, t - p :]
    query = torch.arange(t - p, t, device=keep.device)[:, None]
    key = torch.arange(t, device=keep.device)[None, :]
    mask = ((key <= query)[None, None] & keep[:, None, None, :]) | (key == query)[None, None]
    return positions, mask


def _masked_scores(
    q: Float[Tensor, "b h p dh"], k: Float[Tensor, "b h t dh"], mask: Tensor | None
) -> Float[Tensor, "b h p t"]:
    """Scaled scores with disallowed keys at -inf, the mask added inside the GEMM.

    This path runs whenever the pattern is hooked (every ``run_with_cache``), so passes over the
    p x p scores dominate it: ``baddbmm`` starts from the -inf/0 bias and accumulates
    ``scale * q k^T`` onto it in one GEMM, where bmm + ``masked_fill_`` with a broadcast mask
    was several times slower (benchmarks/RESULTS.md, interp_throughput session 2).
    """
    b, h, p, dh = q.shape
    t = k.shape[2]  # > p when earlier keys come from a KV cache
    allowed = mask if mask is not None else _causal(p, q.device)
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    bias = bias.expand(b, h, p, t).reshape(b * h, p, t)
    # q is scaled before the product, as SDPA does, so the two paths round alike (1e-5 parity).
    q = (q * (1.0 / math.sqrt(dh))).reshape(b * h, p, dh)
    scores = torch.baddbmm(bias, q, k.reshape(b * h, t, dh).transpose(1, 2))
    return scores.view(b, h, p, t)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gated = cfg.arch == "llama"
        w = cfg.mlp_width
        # Llama: gate and up projections fused as [gate; up].
        self.W_in = nn.Linear(cfg.d_model, 2 * w if self.gated else w, bias=not self.gated)
        self.W_out = nn.Linear(w, cfg.d_model, bias=not self.gated)
        self.hook_pre = HookPoint()  # [b, p, d_mlp] (the gate pre-activation for llama)
        self.hook_post = HookPoint()  # [b, p, d_mlp]

    def forward(self, x: Float[Tensor, "b p d"]) -> Float[Tensor, "b p d"]:
        h = self.W_in(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            post = F.silu(self.hook_pre(gate)) * up
        else:
            post = F.gelu(self.hook_pre(h))
        return self.W_out(self.hook_post(post))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.hook_resid_pre = HookPoint()
        self.ln1 = Norm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        if cfg.sequential and not cfg.attn_only:
            self.hook_resid_mid = HookPoint()
        if not cfg.attn_only:
            self.ln2 = Norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        x: Float[Tensor, "b p d"],
        positions: Tensor | None,
        mask: Tensor | None,
        keep: Tensor | None = None,
        past: LayerKV | None = None,
    ) -> Float[Tensor, "b p d"]:
        resid = self.hook_resid_pre(x)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid), positions, mask, keep, past))
        if self.cfg.attn_only:
            return self.hook_resid_post(resid + attn_out)
        if self.cfg.sequential:
            mid = self.hook_resid_mid(resid + attn_out)
            return self.hook_resid_post(mid + self.hook_mlp_out(self.mlp(self.ln2(mid))))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(mlp_out + attn_out + resid)


class Transformer(HookedModule):
    """Decoder-only transformer with TransformerLens hook names.

    Example:
        >>> from alignlab.model import Transformer, model_preset
        >>> model = Transformer(model_preset("al-30k"))
        >>> tokens = torch.randint(0, 128, (2, 16))
        >>> model(tokens).shape  # [batch, pos, d_vocab]
        torch.Size([2, 16, 128])
        >>> loss = model(tokens, return_type="loss")
        >>> logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        self.tokenizer: Any = None  # a transformers tokenizer, attached by load()
        # Recompute each block's activations in the backward pass instead of keeping them
        # (Chen et al. 2016): memory per layer drops to the block's input, compute rises ~1/3.
        self.gradient_checkpointing = False
        self.init_weights()
        self.setup_hooks()

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) weights; residual-writing matrices scaled by 1/sqrt(2 n_layers)
        (GPT-2 / Megatron "wang init"), zero biases, unit gains."""
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(seed)
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                s = std / math.sqrt(2 * self.cfg.n_layers) if "W_O" in name or "W_out" in name else std
                p.copy_(torch.randn(p.shape, generator=gen) * s)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def clone(self) -> Transformer:
        """An independent copy: same config, weights, device and tokenizer (a fine-tuning copy, a
        frozen reference, a reward model's body)."""
        out = Transformer(self.cfg).to(self.device)
        out.load_state_dict(self.state_dict())
        out.tokenizer = self.tokenizer
        return out

    @overload
    def forward(
        self,
        tokens: Int[Tensor, "b p"],
        return_type: Literal["logits"] = "logits",
        loss_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Float[Tensor, "b p v"]: ...

    @overload
    def forward(
        self,
        tokens: Int[Tensor, "b p"],
        return_type: Literal["loss"],
        loss_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Float[Tensor, ""]: ...

    @overload
    def forward(
        self,
        tokens: Int[Tensor, "b p"],
        return_type: Literal["both"],
        loss_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]: ...

    def forward(
        self,
        tokens: Int[Tensor, "b p"],
        return_type: ReturnType = "logits",
        loss_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the model.

        Args:
            tokens: token ids ``[batch, pos]`` (a 1-D tensor is treated as one sequence).
            return_type: "logits" ``[batch, pos, d_vocab]``, "loss" (mean next-token
                cross-entropy) or "both".
            loss_mask: ``[batch, pos]``; True where a token is a prediction target (e.g. only the
                completion of a prompt/completion pair). Position 0 is never a target.
            attention_mask: ``[batch, pos]``; 1 for real tokens, 0 for padding (left or right).
                Positions are counted over real tokens only, so left-padded batches match
                unpadded runs.
        """
        if tokens.ndim == 1:
            tokens = tokens[None]
            if attention_mask is not None and attention_mask.ndim == 1:
                attention_mask = attention_mask[None]
        p = tokens.shape[1]
        if p > self.cfg.n_ctx:
            raise ValueError(f"sequence length {p} exceeds the model's n_ctx ({self.cfg.n_ctx})")
        positions = mask = am = None
        if attention_mask is not None:
            if attention_mask.shape != tokens.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but tokens have "
                    f"{tuple(tokens.shape)}; pass one 0/1 entry per token"
                )
            am = attention_mask.bool()
            positions, mask = _padded_positions_and_mask(am, p)
        x = self.hook_embed(self.embed(tokens))
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, positions, mask, am, use_reentrant=False)
            else:
                x = block(x, positions, mask, am)
        logits = self.unembed(self.ln_final(x))
        if return_type == "logits":
            return logits
        loss = lm_loss(logits, tokens, loss_mask)
        return loss if return_type == "loss" else (logits, loss)

    @torch.no_grad()
    def generate(
        self,
        tokens: Int[Tensor, "b p"],
        max_new_tokens: int,
        temperature: float = 0.0,
        stop_token: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        attention_mask: Int[Tensor, "b p"] | None = None,
        kv_cache: bool = True,
    ) -> Int[Tensor, "b q"]:
        """Greedy (temperature 0) or sampled continuation; returns prompt + new tokens.

        Prompts of different lengths go in one batch left-padded, with ``attention_mask`` marking
        the real tokens. ``stop_token`` is one token id or several (e.g. EOS and a newline); a
        sequence that emitted one keeps emitting the first, so rows stay aligned.

        With ``kv_cache`` (the default) each step runs only the newest token, attending to the
        keys and values kept from earlier steps, so hooks see the prompt once and then one
        position per step, as in TransformerLens's cached generation. ``kv_cache=False`` reruns
        the whole sequence every step (hooks see all of it each time). Continuations longer than
        ``n_ctx`` slide a window and always take the uncached path.

        Raises:
            ConfigError: ``max_new_tokens`` is not an integer in [0, 65536] or ``temperature`` is
                not a finite number >= 0 (a NaN temperature would make every probability NaN).
        """
        raise_problems(
            "generate",
            [
                check_int("max_new_tokens", max_new_tokens, lo=0, hi=MAX_NEW_TOKENS),
                check_real("temperature", temperature, lo=0.0),
            ],
        )
        if tokens.ndim == 1:
            tokens = tokens[None]
        out = tokens
        mask = attention_mask
        stopping = Stopping(stop_token, out.shape[0], out.device)
        cache = None
        if kv_cache and out.shape[1] + max_new_tokens <= self.cfg.n_ctx:
            cache = KVCache([LayerKV() for _ in self.blocks])
        for step in range(max_new_tokens):
            if cache is None:
                window = out[:, -self.cfg.n_ctx :]
                window_mask = None if mask is None else mask[:, -self.cfg.n_ctx :]
                logits = self(window, attention_mask=window_mask)[:, -1]
            elif step == 0:
                keep = torch.ones_like(out, dtype=torch.bool) if mask is None else mask.bool()
                logits = self._forward_cached(out, keep, cache)[:, -1]
            else:
                keep = torch.ones_like(stopping.done[:, None])
                logits = self._forward_cached(out[:, -1:], keep, cache)[:, -1]
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                probs = (logits / temperature).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            out, mask = stopping.append(out, mask, nxt)
            if stopping.all_done:
                break
        return out

    def _forward_cached(
        self, tokens: Int[Tensor, "b p"], keep: Bool[Tensor, "b p"], cache: KVCache
    ) -> Float[Tensor, "b p v"]:
        """Logits for ``tokens`` following the ones in ``cache`` (which this extends).

        Positions and the mask are those `forward` would use on the whole sequence with
        ``attention_mask`` = every ``keep`` so far, so cached and uncached generation agree.
        """
        keep = keep if cache.keep is None else torch.cat((cache.keep, keep), dim=1)
        cache.keep = keep
        positions, mask = _padded_positions_and_mask(keep, tokens.shape[1])
        x = self.hook_embed(self.embed(tokens))
        for block, past in zip(self.blocks, cache.layers, strict=True):
            x = block(x, positions, mask, None, past)
        return self.unembed(self.ln_final(x))

    def save_pretrained(self, path: str, tokenizer: object | None = None) -> None:
        """Write a Hugging Face model directory (see `alignlab.model.hf.save_pretrained`)."""
        from alignlab.model.hf import save_pretrained

        save_pretrained(self, path, tokenizer=tokenizer)


def lm_loss(
    logits: Float[Tensor, "b p v"], tokens: Int[Tensor, "b p"], loss_mask: Tensor | None = None
) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy, optionally over the target positions in ``loss_mask``."""
    # Targets shifted and padded with ignore_index (as HF does) instead of slicing
    # logits[:, :-1], which copies the logits and fills a full-size zero gradient in backward.
    target = F.pad(tokens[:, 1:], (0, 1), value=-100)
    if loss_mask is not None:
        m = F.pad(loss_mask[:, 1:].bool(), (0, 1), value=False)
        if not bool(m.any()):
            raise ValueError("loss_mask selects no target tokens")
        target = target.masked_fill(~m, -100)
    pred = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(pred, target.reshape(-1), ignore_index=-100)
