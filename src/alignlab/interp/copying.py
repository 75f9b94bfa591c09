"""A circuit-agnostic test of in-context copying: token-level loss and accuracy, no attention read.

The prefix-matching score (`alignlab.interp.heads`) looks for one circuit: a head attending from
the repeat to the token right *after* the earlier copy (Olsson et al. 2022). A model can copy in
context by other routes — e.g. a layer-1 head attending two past the earlier copy and reading the
target through a previous-token head (V-composition), or several heads sharing the work — and
then scores near zero there while copying perfectly. This test asks only what the model predicts:
on sequences whose *copied* target tokens can be predicted from earlier in the context and whose
*fresh* ones cannot, how much better are the copied ones predicted? That is Olsson et al.'s
in-context-learning score (late-context loss against early) read at the token level, plus top-1
accuracy, which is bounded and vocabulary-free.

`offset_repeats` builds sequences where the copy target sits ``offset`` tokens after the matched
token (``offset = 1`` is the ordinary repeat), the ground truth for a non-canonical copier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model import tokenizer as tk
from alignlab.tasks.base import Batch, BatchFn, stream_seed
from alignlab.tasks.induction import induction_batch


@dataclass(frozen=True)
class CopyProbe:
    """Evaluation sequences with their copyable and unpredictable target positions.

    Attributes:
        tokens: ``[batch, pos]`` token ids.
        copied: True at positions whose token only copying from earlier in the context predicts.
        fresh: True at positions whose token nothing predicts (uniform random): the baseline.
    """

    tokens: Int[Tensor, "b p"]
    copied: Bool[Tensor, "b p"]
    fresh: Bool[Tensor, "b p"]


ProbeFn = Callable[[int, int, int], CopyProbe]
"""``(batch_size, seq_len, seed) -> CopyProbe``: a family of probe sequences."""


def repeat_probe(batch_size: int, seq_len: int, seed: int = 0) -> CopyProbe:
    """``BOS + half + half``, the sequences `alignlab.interp.heads.icl_score` scores: fresh = the
    first half, copied = the repeat (an odd trailing token belongs to neither)."""
    tokens = induction_batch(batch_size, seq_len, seed, 0, "interp").tokens
    half = (seq_len - 1) // 2
    pos = torch.arange(seq_len).expand(batch_size, -1)
    fresh = (pos >= 1) & (pos <= half)
    copied = (pos > half) & (pos <= 2 * half)
    return CopyProbe(tokens, copied, fresh)


def offset_repeats(
    batch_size: int, seq_len: int, seed: int = 0, offset: int = 2, step: int = 0, split: str = "interp"
) -> CopyProbe:
    """Sequences where the token to copy sits ``offset`` positions from the matched token.

    ``BOS``, then ``n`` content tokens ``x_1..x_n`` with ``|offset| - 1`` random fillers after
    each, then the content again, contiguous (reversed when ``offset < 0``), then random tokens to
    ``seq_len``. On the second copy, after ``x_i`` comes the content token found ``offset``
    positions from the earlier ``x_i``: ``x_{i+1}`` for ``offset > 0``, ``x_{i-1}`` for
    ``offset < 0``. ``offset = 1`` is the ordinary repeat (prefix matching's target). ``n`` is
    uniform in ``[n_max // 2, n_max]`` per sequence, ``n_max = (seq_len - 1) // (|offset| + 1)``,
    so no fixed distance finds the target.

    Example:
        >>> probe = offset_repeats(32, 48, offset=-1)  # x_1..x_n, then x_n..x_1
        >>> token_copying(model, probe).accuracy_gain
    """
    stride = abs(offset)
    if stride < 1:
        raise ValueError(f"offset must be a non-zero integer, got {offset}")
    body_len = seq_len - 1
    n_max = body_len // (stride + 1)
    if n_max < 2:
        raise ValueError(f"seq_len {seq_len} is too short for offset {offset} (needs >= {2 * stride + 3})")
    gen = torch.Generator().manual_seed(stream_seed("offset-repeat", seed, split, step, offset))
    vocab = torch.tensor(tk.char_ids())
    noise = vocab[torch.randint(len(vocab), (batch_size, body_len), generator=gen)]
    content = vocab[torch.randint(len(vocab), (batch_size, n_max), generator=gen)]
    n = torch.randint(max(2, n_max // 2), n_max + 1, (batch_size, 1), generator=gen)
    pos = torch.arange(body_len)[None].expand(batch_size, -1)
    first = (pos < n * stride) & (pos % stride == 0)
    second = (pos >= n * stride) & (pos < n * (stride + 1))
    along = pos - n * stride  # index along the second copy
    idx = torch.where(first, pos // stride, (along if offset > 0 else n - 1 - along).clamp(0, n_max - 1))
    body = torch.where(first | second, content.gather(1, idx), noise)
    bos = torch.full((batch_size, 1), tk.vocabulary()[tk.BOS], dtype=torch.long)
    # The second copy's first token follows a filler or the last content token: nothing predicts it.
    copied = second & (along > 0)
    fresh = ~second | (along == 0)
    false = torch.zeros(batch_size, 1, dtype=torch.bool)
    return CopyProbe(torch.cat([bos, body], 1), torch.cat([false, copied], 1), torch.cat([false, fresh], 1))


def offset_repeat_batch(offset: int, copied_only: bool = False) -> BatchFn:
    """`offset_repeats` as a training `alignlab.tasks.base.BatchFn` (a pure function of its
    arguments, so resume stays exact); ``copied_only`` puts the loss on the copied tokens alone,
    the only ones a model can learn anything about beyond their unigram frequency."""

    def batch_fn(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        probe = offset_repeats(batch_size, seq_len, seed, offset, step, split)
        return Batch(tokens=probe.tokens, loss_mask=probe.copied if copied_only else None)

    return batch_fn


@dataclass(frozen=True)
class TokenCopying:
    """How much better a model predicts copied tokens than fresh ones.

    Attributes:
        loss_fresh: mean next-token loss on fresh (unpredictable) tokens.
        loss_copied: mean loss on copied tokens.
        accuracy_fresh: top-1 accuracy on fresh tokens (chance: about 1 / |characters|).
        accuracy_copied: top-1 accuracy on copied tokens.
        improvement: ``loss_fresh - loss_copied`` in nats (alignlab's ICL sign: bigger = more).
        accuracy_gain: ``accuracy_copied - accuracy_fresh`` in [-1, 1]; about 0 without in-context
            copying, near 1 when every copied token is predicted.
    """

    loss_fresh: float
    loss_copied: float
    accuracy_fresh: float
    accuracy_copied: float
    improvement: float
    accuracy_gain: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def token_copying(model: Transformer, probe: CopyProbe) -> TokenCopying:
    """The token-level copying test of ``model`` on ``probe`` (see the module's note).

    Example:
        >>> token_copying(model, repeat_probe(32, 64)).accuracy_gain  # ~0.9 with induction heads
    """
    if not bool(probe.copied[:, 1:].any()) or not bool(probe.fresh[:, 1:].any()):
        raise ValueError("the probe needs both copied and fresh target positions after the first")
    was_training = model.training
    model.eval()
    tokens = probe.tokens.to(model.device)
    logits = model(tokens)[:, :-1].float()
    model.train(was_training)
    targets = tokens[:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").cpu()
    hit = (logits.argmax(-1) == targets).float().cpu()
    # Column t of loss/hit predicts token t + 1: shift the masks onto targets.
    copied, fresh = probe.copied[:, 1:], probe.fresh[:, 1:]
    lf, lc = float(loss[fresh].mean()), float(loss[copied].mean())
    af, ac = float(hit[fresh].mean()), float(hit[copied].mean())
    return TokenCopying(lf, lc, af, ac, lf - lc, ac - af)
