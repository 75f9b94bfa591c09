"""Log-likelihood of continuations given a context, batched, with the context computed once.

For an alignlab `Transformer`, each item's context runs through the model once and every choice is
scored against it: without hooks attached, through `alignlab.evals._prefix` (the context takes the
causal fast path and the choices attend to its keys and values); with hooks attached (steering,
ablation), as one packed sequence ``[BOS, context..., choice_0[:-1], choice_1[:-1], ...]`` whose
block attention mask lets each choice see the context and its own earlier tokens only, so every hook
sees ordinary ``[batch, pos, ...]`` activations. Either way each choice is scored exactly as if it
were alone after the context.

Tokenisation follows lm-eval (``lm_eval.api.model.TemplateLM._encode_pair``) so the numbers can be
compared with `HFLM`: trailing spaces of the context move to the continuation, the continuation's
tokens are ``encode(context + continuation)`` minus the context's, and when a sequence is longer
than the model's context window it is left-truncated to the last ``n_ctx + 1`` tokens, as lm-eval
does (then that choice is scored on its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from alignlab.errors import ConfigError
from alignlab.evals._prefix import PAD_BRANCH, hooks_active, prefix_forward
from alignlab.model import Transformer

__all__ = [
    "HFScorer",
    "Loglik",
    "LoglikScorer",
    "Request",
    "TransformerScorer",
    "make_scorer",
]

Progress = Callable[[int], None]
# Branch id of context tokens in the packed layout (branches are 0, 1, ...; padding PAD_BRANCH).
_CTX = -1


@dataclass(frozen=True)
class Loglik:
    """Log-likelihood of one continuation.

    Attributes:
        logprob: sum of the continuation tokens' log-probabilities (natural log).
        is_greedy: every continuation token is the model's argmax (lm-eval's ``is_greedy``).
        n_tokens: number of continuation tokens scored.
    """

    logprob: float
    is_greedy: bool
    n_tokens: int


@dataclass(frozen=True)
class Request:
    """A context and the continuations to score after it."""

    context: str
    continuations: tuple[str, ...]


class LoglikScorer(Protocol):
    """Anything that scores requests: ``scorer.score(requests) -> [[Loglik per continuation]]``."""

    name: str

    def score(self, requests: Sequence[Request], progress: Progress | None = None) -> list[list[Loglik]]: ...


@dataclass
class _Row:
    """A context and the continuations scored after it (one branch each)."""

    ctx: list[int]
    conts: list[list[int]]
    keys: list[tuple[int, int]]  # (request index, continuation index) of each branch

    @property
    def width(self) -> int:
        return len(self.ctx) + sum(len(c) - 1 for c in self.conts)


# What a forward pass returns for a batch: logits [N, V] for N target tokens, the target ids, and
# per branch (request index, continuation index, first target index, number of tokens).
_Span = tuple[int, int, int, int]
_BatchOut = tuple[Tensor, list[int], list[_Span]]


def _truncated_row(r: int, c: int, ctx: list[int], cont: list[int], n_ctx: int) -> _Row:
    # A continuation longer than the window cannot be scored whole; its first n_ctx tokens are
    # (Loglik.n_tokens tells), each still conditioned on at least the last context token.
    cont = cont[:n_ctx]
    # lm-eval: inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
    full = (ctx + cont)[-(n_ctx + 1) :]
    return _Row(full[: len(full) - len(cont)], [cont], [(r, c)])


def _batches(rows: list[_Row], max_tokens: int, max_items: int) -> list[list[_Row]]:
    # Longest first, so each batch pads little and memory peaks early.
    order = sorted(rows, key=lambda row: -row.width)
    out: list[list[_Row]] = []
    cur: list[_Row] = []
    for row in order:
        width = cur[0].width if cur else row.width
        if cur and ((len(cur) + 1) * width > max_tokens or len(cur) >= max_items):
            out.append(cur)
            cur = []
        cur.append(row)
    if cur:
        out.append(cur)
    return out


def _packed(batch: list[_Row]) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int], list[_Span]]:
    """Right-padded packed rows: tokens, positions, branch ids, gather index [2, N], targets, spans."""
    width = max(row.width for row in batch)
    tokens = torch.zeros(len(batch), width, dtype=torch.long)
    positions = torch.zeros(len(batch), width, dtype=torch.long)
    branch = torch.full((len(batch), width), PAD_BRANCH, dtype=torch.long)
    rows_idx: list[int] = []
    cols_idx: list[int] = []
    target: list[int] = []
    spans: list[_Span] = []
    for b, row in enumerate(batch):
        n = len(row.ctx)
        tokens[b, :n] = torch.tensor(row.ctx)
        positions[b, :n] = torch.arange(n)
        branch[b, :n] = _CTX
        start = n
        for c, ((r, k), cont) in enumerate(zip(row.keys, row.conts, strict=True)):
            inputs = cont[:-1]
            end = start + len(inputs)
            tokens[b, start:end] = torch.tensor(inputs, dtype=torch.long)
            positions[b, start:end] = torch.arange(n, n + len(inputs))
            branch[b, start:end] = c
            # Token j is predicted at the last context position (j = 0) or at input j - 1.
            src = [n - 1, *range(start, end)]
            spans.append((r, k, len(target), len(cont)))
            rows_idx += [b] * len(src)
            cols_idx += src
            target += cont
            start = end
    return tokens, positions, branch, torch.tensor([rows_idx, cols_idx]), target, spans


class _BatchedScorer:
    """Tokenisation (lm-eval's pair split, BOS first), batching and the log-softmax bookkeeping."""

    name: str = "scorer"
    pack: bool = True
    encode_fn: Callable[[str], list[int]]
    bos_id: int | None
    n_ctx: int
    max_batch_tokens: int = 16384
    max_batch_items: int = 64

    def _forward(self, batch: list[_Row]) -> _BatchOut:
        raise NotImplementedError

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the context (BOS first) and of the continuation, split as lm-eval does."""
        return self._encode_pairs(context, [continuation])[0]

    def _encode_pairs(self, context: str, continuations: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        prefix = [] if self.bos_id is None else [self.bos_id]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuations = [context[-n_spaces:] + c for c in continuations]
            context = context[:-n_spaces]
        ctx = prefix + self.encode_fn(context)
        if len(ctx) == 0:
            raise ConfigError("an empty context needs a BOS token to condition on")
        out = []
        for continuation in continuations:
            whole = prefix + self.encode_fn(context + continuation)
            cont = whole[len(ctx) :]
            if not cont:
                raise ConfigError(f"continuation {continuation!r} encodes to no tokens")
            out.append((ctx, cont))
        return out

    def _rows(self, requests: Sequence[Request]) -> list[_Row]:
        rows: list[_Row] = []
        for r, req in enumerate(requests):
            if not req.continuations:
                raise ConfigError(f"request {r} has no continuations to score")
            pairs = self._encode_pairs(req.context, req.continuations)
            ctx = pairs[0][0]
            same_ctx = all(p[0] == ctx for p in pairs)
            longest = max(len(p[1]) for p in pairs)
            if self.pack and same_ctx and len(ctx) + longest - 1 <= self.n_ctx:
                rows.append(_Row(ctx, [p[1] for p in pairs], [(r, c) for c in range(len(pairs))]))
            else:
                rows += [
                    _truncated_row(r, c, ctx_c, cont, self.n_ctx) for c, (ctx_c, cont) in enumerate(pairs)
                ]
        return rows

    @torch.no_grad()
    def score(self, requests: Sequence[Request], progress: Progress | None = None) -> list[list[Loglik]]:
        """Log-likelihood of every continuation of every request, in request order.

        Args:
            requests: contexts with their continuations.
            progress: called with the number of requests completed so far, after each batch.
        """
        out: list[list[Loglik | None]] = [[None] * len(q.continuations) for q in requests]
        remaining = [len(q.continuations) for q in requests]
        done = 0
        for batch in _batches(self._rows(requests), self.max_batch_tokens, self.max_batch_items):
            logits, target, spans = self._forward(batch)
            logp = logits.float().log_softmax(-1)
            tgt = torch.tensor(target, device=logp.device)
            tok_lp = logp.gather(-1, tgt[:, None])[:, 0].double().cpu()
            greedy = (logp.argmax(-1) == tgt).cpu()
            for r, c, start, n in spans:
                lp = float(tok_lp[start : start + n].sum())
                out[r][c] = Loglik(lp, bool(greedy[start : start + n].all()), n)
                remaining[r] -= 1
                done += remaining[r] == 0
            if progress is not None:
                progress(done)
        return [[x for x in row if x is not None] for row in out]


class TransformerScorer(_BatchedScorer):
    """Scores continuations with an alignlab `Transformer`, running each shared context once.

    Args:
        model: the model (put in eval mode). Attached hooks apply: interventions are evaluated.
        tokenizer: a transformers tokenizer; default the model's own (attached by
            `alignlab.load`), else alignlab's character tokenizer when the vocabulary matches.
        add_bos: prepend the tokenizer's BOS (EOS when it has none), as alignlab training does.
        pack: score all choices against one copy of the context (False: one row per choice).
        max_batch_tokens: rows x padded length per forward pass; default 4096 on CPU (small
            batches stay in cache: fastest on the eval benchmark, benchmarks/RESULTS.md) and
            65536 on GPU.
        max_batch_items: rows per forward pass.

    Example:
        >>> scorer = TransformerScorer(alignlab.load("runs/abc/model"))
        >>> [[a, b]] = scorer.score([Request("Q: 2+2?\\nA:", (" 4", " 5"))])
        >>> a.logprob > b.logprob
        True
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Any = None,
        add_bos: bool = True,
        pack: bool = True,
        max_batch_tokens: int | None = None,
        max_batch_items: int = 64,
    ) -> None:
        self.model = model.eval()
        self.encode_fn, self.bos_id = _tokenizer_fns(tokenizer or model.tokenizer, model.cfg.d_vocab)
        if not add_bos:
            self.bos_id = None
        self.n_ctx = model.cfg.n_ctx
        self.pack = pack
        if max_batch_tokens is None:
            max_batch_tokens = 4096 if model.device.type == "cpu" else 65536
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_items = max_batch_items
        self.name = "alignlab"

    def _forward(self, batch: list[_Row]) -> _BatchOut:
        if hooks_active(self.model):
            return self._forward_packed(batch)
        return self._forward_prefix(batch)

    def _forward_prefix(self, batch: list[_Row]) -> _BatchOut:
        dev = self.model.device
        L = max(len(row.ctx) for row in batch)
        nb = max(sum(len(c) - 1 for c in row.conts) for row in batch)
        ctx = torch.zeros(len(batch), L, dtype=torch.long)
        ctx_len = torch.tensor([len(row.ctx) for row in batch])
        branch = torch.zeros(len(batch), nb, dtype=torch.long)
        pos = torch.zeros(len(batch), nb, dtype=torch.long)
        bid = torch.full((len(batch), nb), PAD_BRANCH, dtype=torch.long)
        sel: list[tuple[int, int]] = []  # (row, -1 for the last context position / branch slot)
        target: list[int] = []
        spans: list[_Span] = []
        for b, row in enumerate(batch):
            n = len(row.ctx)
            ctx[b, :n] = torch.tensor(row.ctx)
            start = 0
            for c, ((r, k), cont) in enumerate(zip(row.keys, row.conts, strict=True)):
                inputs = cont[:-1]
                end = start + len(inputs)
                branch[b, start:end] = torch.tensor(inputs, dtype=torch.long)
                pos[b, start:end] = torch.arange(n, n + len(inputs))
                bid[b, start:end] = c
                spans.append((r, k, len(target), len(cont)))
                sel += [(b, -1), *((b, j) for j in range(start, end))]
                target += cont
                start = end
        last, br = prefix_forward(
            self.model, ctx.to(dev), ctx_len.to(dev), branch.to(dev), pos.to(dev), bid.to(dev)
        )
        # Gather [N, V]: a branch slot j of row b is row b*nb + j of the flattened branch logits.
        flat = torch.cat([last, br.reshape(-1, br.shape[-1])]) if nb else last
        idx = torch.tensor([b if j < 0 else len(batch) + b * nb + j for b, j in sel], device=dev)
        return flat[idx], target, spans

    def _forward_packed(self, batch: list[_Row]) -> _BatchOut:
        m = self.model
        tokens, positions, branch, idx, target, spans = _packed(batch)
        dev = m.device
        tokens, positions, branch = tokens.to(dev), positions.to(dev), branch.to(dev)
        p = tokens.shape[1]
        bq, bk = branch[:, :, None], branch[:, None, :]
        causal = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
        allowed = causal[None] & ((bk == _CTX) | (bk == bq)) & (bk != PAD_BRANCH)
        # A padding query row sees only itself (an all-masked row would give NaN).
        allowed |= torch.eye(p, dtype=torch.bool, device=dev)[None]
        # The blocks are called as Transformer.forward calls them, with explicit positions and a
        # block mask (forward cannot take either), so every hook point fires as usual.
        x = m.hook_embed(m.embed(tokens))
        for block in m.blocks:
            x = block(x, positions, allowed[:, None])
        rows, cols = idx.to(dev)
        return m.unembed(m.ln_final(x[rows, cols])), target, spans


class HFScorer(_BatchedScorer):
    """Scores continuations with any transformers causal LM (one row per choice, right-padded).

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> hf = AutoModelForCausalLM.from_pretrained("out/model")
        >>> scorer = HFScorer(hf, AutoTokenizer.from_pretrained("out/model"))
    """

    pack = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        add_bos: bool = True,
        max_batch_tokens: int = 16384,
        max_batch_items: int = 64,
    ) -> None:
        self.model = model.eval()
        self.encode_fn, self.bos_id = _tokenizer_fns(tokenizer, None)
        if not add_bos:
            self.bos_id = None
        cfg = model.config
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", None) or 2048)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_items = max_batch_items
        self.name = f"hf:{getattr(cfg, 'name_or_path', '') or type(model).__name__}"

    def _forward(self, batch: list[_Row]) -> _BatchOut:
        tokens, _, branch, idx, target, spans = _packed(batch)
        dev = torch.device(self.model.device)
        attn = (branch != PAD_BRANCH).long()
        logits: Tensor = self.model(input_ids=tokens.to(dev), attention_mask=attn.to(dev)).logits
        rows, cols = idx.to(dev)
        return logits[rows, cols], target, spans


def _tokenizer_fns(tokenizer: Any, d_vocab: int | None) -> tuple[Callable[[str], list[int]], int | None]:
    if tokenizer is None:
        from alignlab.model import tokenizer as tk

        if d_vocab != tk.VOCAB_SIZE:
            raise ConfigError(
                f"the model has a {d_vocab}-token vocabulary and no tokenizer; pass one, or load "
                "the model with alignlab.load from a directory that has tokenizer files"
            )
        return tk.encode, tk.vocabulary()[tk.BOS]

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    # A fast tokenizer's Rust backend gives the same ids several times faster than the Python
    # wrapper; use it only when a probe text proves they agree.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    probe = "Hello, World! 123 \n\n  (A) don't"
    if backend is not None:

        def fast(text: str) -> list[int]:
            return list(backend.encode(text, add_special_tokens=False).ids)

        try:
            if fast(probe) == encode(probe):
                encode = fast
        except Exception:  # any failure: keep the wrapper, which is always right
            pass

    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        bos = getattr(tokenizer, "eos_token_id", None)
    return encode, bos


def make_scorer(model: Any, tokenizer: Any = None, **kwargs: Any) -> LoglikScorer:
    """The scorer for ``model``: `TransformerScorer` for alignlab models, else `HFScorer`."""
    if isinstance(model, Transformer):
        return TransformerScorer(model, tokenizer, **kwargs)
    if tokenizer is None:
        raise ConfigError("a Hugging Face model needs its tokenizer passed explicitly")
    return HFScorer(model, tokenizer, **kwargs)
