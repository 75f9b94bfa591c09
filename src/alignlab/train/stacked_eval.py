"""Evaluation, greedy generation and activation caching of N same-shape models at once.

The inference side of stacked training (`alignlab.train.stacked`): the members' weights sit in
``[N, *shape]`` tensors, weight matmuls run as one batched matmul over the member axis, and
everything else (norms, rotary, attention, the loss) folds the members into the batch dimension.
Each member computes what its own `Transformer` computes, op for op, in another summation order
(batched instead of per-model matmuls), so outputs agree to float32 rounding
(tests/test_stacked_eval.py bounds it) and greedy tokens agree exactly wherever the top two
logits are not within rounding of a tie.

Example:
    >>> stack = StackedModel.of([model_a, model_b, model_c])
    >>> stack.loss(tokens)  # [3]: each member's mean next-token loss on the same tokens
    >>> stack.generate(prompts, 16, attention_mask=mask)  # [3, b, p + 16], greedy, KV-cached
    >>> logits, cache = stack.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    >>> cache["blocks.0.hook_resid_post"].shape  # [3, b, p, d_model]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from alignlab._validate import MAX_NEW_TOKENS, check_int, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.config import ModelConfig
from alignlab.model.decode import Stopping
from alignlab.model.hooks import ActivationCache, NamesFilter, _make_filter
from alignlab.model.transformer import (
    LayerKV,
    Rotary,
    Transformer,
    _masked_scores,
    _padded_positions_and_mask,
    repeat_kv,
)
from alignlab.tasks import get_task
from alignlab.tasks.base import BatchFn
from alignlab.tasks.induction import repeat_halves
from alignlab.train._stacked_model import StackedTransformer, _linear
from alignlab.train.config import TrainConfig
from alignlab.train.loop import EVAL_BATCHES

_ATTN_HOOKS = (
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_rot_q",
    "hook_rot_k",
    "hook_attn_scores",
    "hook_pattern",
    "hook_z",
)


def hook_names(cfg: ModelConfig) -> list[str]:
    """The hook point names of a `Transformer` of ``cfg``, in forward order."""
    names = ["hook_embed"]
    for i in range(cfg.n_layers):
        pre = f"blocks.{i}."
        names += [pre + "hook_resid_pre", pre + "ln1.hook_normalized"]
        names += [pre + "attn." + h for h in _ATTN_HOOKS]
        names.append(pre + "hook_attn_out")
        if not cfg.attn_only:
            if cfg.sequential:
                names.append(pre + "hook_resid_mid")
            names += [pre + "ln2.hook_normalized", pre + "mlp.hook_pre", pre + "mlp.hook_post"]
            names.append(pre + "hook_mlp_out")
        names.append(pre + "hook_resid_post")
    return [*names, "ln_final.hook_normalized"]


class _Recorder:
    """Keeps the activations ``names_filter`` selects, as ``[N, b, ...]`` (a member axis first)."""

    def __init__(self, keep: Callable[[str], bool], n: int, b: int) -> None:
        self.keep, self.n, self.b = keep, n, b
        self.cache = ActivationCache()

    def stream(self, name: str, x: Tensor, p: int) -> None:
        """A residual-shaped ``[N, b * p, d]`` activation."""
        if self.keep(name):
            self.cache[name] = x.reshape(self.n, self.b, p, -1)

    def folded(self, name: str, x: Tensor) -> None:
        """A ``[N * b, ...]`` activation (members folded into the batch)."""
        if self.keep(name):
            self.cache[name] = x.reshape(self.n, self.b, *x.shape[1:])


@dataclass(frozen=True)
class StackedModel:
    """N same-shape `Transformer`\\ s evaluated as one: weights ``[N, *shape]`` by parameter name.

    Attributes:
        cfg: the members' shared shape.
        params: each parameter of every member, stacked over a leading member axis.
    """

    cfg: ModelConfig
    params: dict[str, Tensor]

    @classmethod
    @torch.no_grad()
    def of(cls, models: Sequence[Transformer]) -> StackedModel:
        """The members ``models`` (copied: later changes to them are not seen).

        Raises:
            ConfigError: no models, or models that differ in shape or device.
        """
        if not models:
            raise ConfigError("StackedModel.of needs at least one model")
        cfg = models[0].cfg
        for m in models[1:]:
            if m.cfg.replace(init_std=0.0) != cfg.replace(init_std=0.0):  # the init scale shapes nothing
                raise ConfigError(f"stacked models must share one shape; got {cfg} and {m.cfg}")
            if m.device != models[0].device:
                raise ConfigError(
                    f"stacked models must share one device; got {models[0].device} and {m.device}"
                )
        named = [dict(m.named_parameters()) for m in models]
        return cls(cfg, {k: torch.stack([p[k].detach() for p in named]) for k in named[0]})

    @property
    def n(self) -> int:
        """The number of members."""
        return int(self.params["embed.weight"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["embed.weight"].device

    def hook_names(self) -> list[str]:
        """Every hook name `run_with_cache` can record (those of a member's `Transformer`)."""
        return hook_names(self.cfg)

    def _per_member(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``[N, b, p]`` tokens and mask: a ``[b, p]`` input is given to every member."""
        if mask is not None and mask.shape != tokens.shape:
            raise ConfigError(
                f"attention_mask has shape {tuple(mask.shape)} but tokens have {tuple(tokens.shape)}; "
                "pass one 0/1 entry per token"
            )
        if tokens.ndim == 2:
            tokens = tokens.expand(self.n, *tokens.shape)
            mask = None if mask is None else mask.expand(self.n, *mask.shape)
        if tokens.ndim != 3 or tokens.shape[0] != self.n:
            raise ConfigError(
                f"tokens must be [batch, pos] (shared) or [{self.n}, batch, pos] (one batch per "
                f"member); got {tuple(tokens.shape)}"
            )
        if tokens.shape[-1] > self.cfg.n_ctx:
            raise ConfigError(
                f"sequence length {tokens.shape[-1]} exceeds the model's n_ctx ({self.cfg.n_ctx})"
            )
        return tokens, mask

    @torch.no_grad()
    def logits(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Each member's logits ``[N, b, p, vocab]`` (`Transformer.forward`'s), on ``tokens``
        ``[b, p]`` (every member the same) or ``[N, b, p]`` (one batch each)."""
        tokens, attention_mask = self._per_member(tokens, attention_mask)
        return StackedTransformer(self.cfg).logits(self.params, tokens, attention_mask)

    @torch.no_grad()
    def loss(
        self, tokens: Tensor, loss_mask: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Each member's mean next-token cross-entropy ``[N]``, as ``Transformer(...,
        return_type="loss")`` (targets: every next token, or those ``loss_mask`` marks).

        Raises:
            ConfigError: a member's ``loss_mask`` selects no target token.
        """
        tokens, attention_mask = self._per_member(tokens, attention_mask)
        if loss_mask is not None and loss_mask.ndim == 2:
            loss_mask = loss_mask.expand(self.n, *loss_mask.shape)
        sums, counts = StackedTransformer(self.cfg).loss_sums(self.params, tokens, loss_mask, attention_mask)
        if not bool((counts > 0).all()):
            raise ConfigError("loss_mask selects no target tokens for some member")
        return sums / counts

    @torch.no_grad()
    def run_with_cache(
        self, tokens: Tensor, names_filter: NamesFilter = None, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, ActivationCache]:
        """Logits ``[N, b, p, vocab]`` and the activations ``names_filter`` selects, each
        ``[N, b, ...]`` under its TransformerLens name (member ``m``'s ``cache[name][m]`` is what
        its own ``run_with_cache`` records). Read-only: no hook edits activations.

        Raises:
            ConfigError: ``names_filter`` names a hook point the model does not have.
        """
        names = self.hook_names()
        if isinstance(names_filter, str) or (names_filter is not None and not callable(names_filter)):
            wanted = [names_filter] if isinstance(names_filter, str) else list(names_filter)
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise ConfigError(f"no hook point named {unknown[0]!r}; hook_names() lists the {len(names)}")
        tokens, attention_mask = self._per_member(tokens, attention_mask)
        n, b, p = tokens.shape
        rec = _Recorder(_make_filter(names_filter), n, b)
        keep = None if attention_mask is None else attention_mask.reshape(n * b, p).bool()
        logits = _Forward(self, rec).run(tokens.reshape(n * b, p), keep, None)
        return logits.view(n, b, p, -1), rec.cache

    @torch.no_grad()
    def generate(
        self,
        tokens: Tensor,
        max_new_tokens: int,
        stop_token: int | Sequence[int] | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Each member's greedy continuation ``[N, b, p + q]`` (prompt and new tokens), as
        `Transformer.generate` at temperature 0 gives it, with its KV cache.

        ``tokens`` ``[b, p]`` are every member's prompts (``[N, b, p]``: one batch each), left-padded
        where ``attention_mask`` marks the real tokens. A row that emitted one of ``stop_token``
        keeps emitting the first, and generation ends when every row of every member has
        stopped. Continuations longer than ``n_ctx`` slide a window without a cache, as there.

        Raises:
            ConfigError: ``max_new_tokens`` is not an integer in [0, 65536], or the shapes are wrong.
        """
        raise_problems("generate", [check_int("max_new_tokens", max_new_tokens, lo=0, hi=MAX_NEW_TOKENS)])
        tokens, attention_mask = self._per_member(tokens, attention_mask)
        n, b, p = tokens.shape
        out = tokens.reshape(n * b, p)
        mask = None if attention_mask is None else attention_mask.reshape(n * b, p)
        stopping = Stopping(stop_token, n * b, out.device)
        forward = _Forward(self, None)
        layers = (
            [LayerKV() for _ in range(self.cfg.n_layers)] if p + max_new_tokens <= self.cfg.n_ctx else None
        )
        keep = torch.ones_like(out, dtype=torch.bool) if mask is None else mask.bool()
        for step in range(max_new_tokens):
            if layers is None:
                window = out[:, -self.cfg.n_ctx :].view(n, b, -1)
                window_mask = None if mask is None else mask[:, -self.cfg.n_ctx :].reshape(n, b, -1)
                logits = self.logits(window, window_mask)[:, :, -1].reshape(n * b, -1)
            elif step == 0:
                logits = forward.run(out, keep, layers)[:, -1]
            else:
                keep = torch.cat((keep, torch.ones_like(keep[:, :1])), dim=1)
                logits = forward.run(out[:, -1:], keep, layers)[:, -1]
            out, mask = stopping.append(out, mask, logits.argmax(-1))
            if stopping.all_done:
                break
        return out.view(n, b, -1)


class _Forward:
    """One inference pass of the stack over ``[N * b, p]`` tokens: a KV cache to extend, and
    activations to record. Same ops as `Transformer`'s inference path, batched over members."""

    def __init__(self, stack: StackedModel, rec: _Recorder | None) -> None:
        self.cfg, self.p, self.rec = stack.cfg, stack.params, rec
        self.n = stack.n
        self.core = StackedTransformer(stack.cfg)  # its norm (the one stacked training uses)
        self.rotary = Rotary(stack.cfg)

    def _stream(self, name: str, x: Tensor, p: int) -> None:
        if self.rec is not None:
            self.rec.stream(name, x, p)

    def _folded(self, name: str, x: Tensor) -> None:
        if self.rec is not None:
            self.rec.folded(name, x)

    def _wants(self, name: str) -> bool:
        return self.rec is not None and self.rec.keep(name)

    def run(self, tokens: Tensor, keep: Tensor | None, layers: list[LayerKV] | None) -> Tensor:
        """Logits ``[N * b, p, vocab]``. ``keep`` (``[N * b, t]``, t >= p: the cached tokens and
        these) marks real tokens, None: no padding and no cache (plain causal attention)."""
        cfg, prm, n = self.cfg, self.p, self.n
        nb, p = tokens.shape
        positions = mask = None
        if keep is not None:
            positions, mask = _padded_positions_and_mask(keep, p)
        # One embedding table of N * vocab rows: member m's token i is row m * vocab + i.
        offsets = torch.arange(n, device=tokens.device)[:, None] * cfg.d_vocab
        table = prm["embed.weight"].reshape(n * cfg.d_vocab, cfg.d_model)
        x = F.embedding(tokens.view(n, -1) + offsets, table)
        self._stream("hook_embed", x, p)
        for i in range(cfg.n_layers):
            x = self._block(
                f"blocks.{i}.", x, nb // n, p, positions, mask, None if layers is None else layers[i]
            )
        h = self.core._norm(x, prm["ln_final.weight"], prm.get("ln_final.bias"))
        self._stream("ln_final.hook_normalized", h, p)
        return torch.bmm(h, prm["unembed.weight"].transpose(1, 2)).view(nb, p, cfg.d_vocab)

    def _block(
        self,
        pre: str,
        x: Tensor,
        b: int,
        p: int,
        positions: Tensor | None,
        mask: Tensor | None,
        past: LayerKV | None,
    ) -> Tensor:
        cfg, prm = self.cfg, self.p
        self._stream(pre + "hook_resid_pre", x, p)
        h = self.core._norm(x, prm[pre + "ln1.weight"], prm.get(pre + "ln1.bias"))
        self._stream(pre + "ln1.hook_normalized", h, p)
        attn_out = self._attention(pre, h, b, p, positions, mask, past)
        self._stream(pre + "hook_attn_out", attn_out, p)
        if cfg.attn_only:
            out = x + attn_out
        elif cfg.sequential:
            mid = x + attn_out
            self._stream(pre + "hook_resid_mid", mid, p)
            out = mid + self._mlp(pre, mid, p)
        else:
            out = self._mlp(pre, x, p) + attn_out + x
        self._stream(pre + "hook_resid_post", out, p)
        return out

    def _mlp(self, pre: str, x: Tensor, p: int) -> Tensor:
        prm = self.p
        h = self.core._norm(x, prm[pre + "ln2.weight"], prm.get(pre + "ln2.bias"))
        self._stream(pre + "ln2.hook_normalized", h, p)
        h = _linear(h, prm[pre + "mlp.W_in.weight"], prm.get(pre + "mlp.W_in.bias"))
        if self.cfg.arch == "llama":
            gate, up = h.chunk(2, dim=-1)
            self._stream(pre + "mlp.hook_pre", gate, p)
            post = F.silu(gate) * up
        else:
            self._stream(pre + "mlp.hook_pre", h, p)
            post = F.gelu(h)
        self._stream(pre + "mlp.hook_post", post, p)
        out = _linear(post, prm[pre + "mlp.W_out.weight"], prm.get(pre + "mlp.W_out.bias"))
        self._stream(pre + "hook_mlp_out", out, p)
        return out

    def _attention(
        self,
        pre: str,
        x: Tensor,
        b: int,
        p: int,
        positions: Tensor | None,
        mask: Tensor | None,
        past: LayerKV | None,
    ) -> Tensor:
        cfg, prm, n = self.cfg, self.p, self.n
        hd, nq, nkv = cfg.d_head, cfg.n_heads, cfg.kv_heads
        a = pre + "attn."
        qkv = _linear(x, prm[a + "W_QKV.weight"], prm.get(a + "W_QKV.bias"))
        q, k, v = (u.reshape(n * b, p, -1, hd) for u in qkv.split((nq * hd, nkv * hd, nkv * hd), dim=-1))
        for name, t in (("hook_q", q), ("hook_k", k), ("hook_v", v)):
            self._folded(a + name, t)
        q, k = self.rotary(q, positions), self.rotary(k, positions)
        self._folded(a + "hook_rot_q", q)
        self._folded(a + "hook_rot_k", k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if past is not None:
            k, v = past.extend(k, v)
        k, v = repeat_kv(k, v, nq)
        if self._wants(a + "hook_attn_scores") or self._wants(a + "hook_pattern"):
            # The explicit path `Transformer` takes when the pattern is hooked.
            scores = _masked_scores(q, k, mask)
            self._folded(a + "hook_attn_scores", scores)
            pattern = scores.softmax(dim=-1)
            self._folded(a + "hook_pattern", pattern)
            z = (pattern @ v).transpose(1, 2)
        elif mask is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        self._folded(a + "hook_z", z)
        return _linear(z.reshape(n, b * p, nq * hd), prm[a + "W_O.weight"], prm.get(a + "W_O.bias"))


@torch.no_grad()
def evaluate_stacked(
    models: Sequence[Transformer],
    cfgs: Sequence[TrainConfig],
    batch_fns: Sequence[BatchFn | None] | None = None,
) -> list[dict[str, float]]:
    """`alignlab.train.evaluate` of each model on its config's held-out batches, in one stack.

    Member ``i`` gets what ``evaluate(models[i], cfgs[i], device, batch_fns[i])`` returns, to
    float32 rounding: ``eval_loss``, and for the induction task the losses on the first and the
    repeated half and their difference.

    Raises:
        ConfigError: the models differ in shape, the configs in batch shape, or a list has the
            wrong length.
    """
    n = len(models)
    fns = list(batch_fns or [None] * n)
    if len(cfgs) != n or len(fns) != n:
        raise ConfigError(f"evaluate_stacked needs one config and batch function per model ({n})")
    if len({(c.batch_size, c.seq_len) for c in cfgs}) > 1:
        raise ConfigError("evaluate_stacked needs one batch shape (batch_size, seq_len) across configs")
    from alignlab.train.stacked import _stack_batches

    stack = StackedModel.of(models)
    induction = [f is None and c.task == "induction" for c, f in zip(cfgs, fns, strict=True)]
    if any(induction) and not all(induction):
        raise ConfigError("evaluate_stacked cannot mix the induction task with others; evaluate them apart")
    makes = [f or get_task(c.task) for c, f in zip(cfgs, fns, strict=True)]
    losses, first, repeat = [], [], []
    for i in range(EVAL_BATCHES):
        batch = _stack_batches(
            [mk(c.batch_size, c.seq_len, c.seed, i, "eval") for mk, c in zip(makes, cfgs, strict=True)]
        ).to(stack.device)
        if all(induction):
            logits = stack.logits(batch.tokens)
            per_tok = F.cross_entropy(
                logits[:, :, :-1].flatten(0, 1).transpose(1, 2),
                batch.tokens[:, :, 1:].flatten(0, 1),
                reduction="none",
            ).view(n, -1, logits.shape[2] - 1)
            a, b = repeat_halves(cfgs[0].seq_len)
            # per_tok[..., t-1] is the loss of predicting token t.
            first.append(per_tok[..., a.start - 1 : a.stop - 1].mean((1, 2)))
            repeat.append(per_tok[..., b.start - 1 : b.stop - 1].mean((1, 2)))
            losses.append(per_tok.mean((1, 2)))
        else:
            losses.append(stack.loss(batch.tokens, batch.loss_mask, batch.attention_mask))
    out: list[dict[str, float]] = []
    for m in range(n):
        row = {"eval_loss": sum(float(x[m]) for x in losses) / len(losses)}
        if first:
            row["loss_first_half"] = sum(float(x[m]) for x in first) / len(first)
            row["loss_repeat_half"] = sum(float(x[m]) for x in repeat) / len(repeat)
            row["icl_improvement"] = row["loss_first_half"] - row["loss_repeat_half"]
        out.append(row)
    return out


__all__ = ["StackedModel", "evaluate_stacked", "hook_names"]
