"""EK-FAC influence (George et al. 2018; Grosse et al. 2023), for the Linear layers of a model.

The Gauss-Newton/Fisher curvature of each Linear layer is approximated by a Kronecker product
``A ⊗ G`` of the input covariance ``A = E[a aᵀ]`` and the output-gradient covariance
``G = E[g gᵀ]`` over tokens. EK-FAC keeps their eigenvectors but refits the eigenvalues: in the
rotated basis ``Q_Gᵀ ∇W Q_A`` the curvature is the mean of the squared per-example gradients.
A query gradient is preconditioned by dividing by those eigenvalues plus a damping, a multiple of
their mean, then dotted with each training gradient. The default multiple is 1e-6, which is nearly
undamped, as kronfluence's default (an absolute 1e-8) is. Its 0.1 × mean heuristic
(`HEURISTIC_DAMPING`) predicted retraining worse here. Linear datamodeling score, 48 al-10k
subset models of the backdoor mix: 0.50 [0.26, 0.68] at 1e-6, 0.32 at 1e-3, 0.24 at 1e-2, 0.12 at
0.1 and 0.06 at 1. Only 1e-6 clears the random-score null, whose upper end is 0.32
(tests/test_attribution.py). The curvature is fitted
with the *true* Fisher by default (targets sampled from the model, as Grosse et al. and
kronfluence do); ``fisher="empirical"`` uses the examples' own tokens. Scores always use the real
labels.

Per-example gradients are streamed batch by batch: the curvature's covariances, its refitted
eigenvalues and the training examples' scores each take one pass, so memory holds one batch of
per-example gradients (``batch_size × n_params``), never ``n_train × n_params`` (an al-30k install
stream of 6,400 examples would need 1.3 GB).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from alignlab.attribution.grads import _differentiating, _linear_batches, _params
from alignlab.model import Transformer
from alignlab.tasks.chat import Example

HEURISTIC_DAMPING = 0.1  # kronfluence's damping_factor=None: 0.1 x the mean eigenvalue
DEFAULT_DAMPING = 1e-6


def _layers(model: Transformer, params: Sequence[str] | None) -> list[nn.Linear]:
    chosen = _params(model, params)
    layers: list[nn.Linear] = []
    for name, _ in chosen:
        module = model.get_submodule(name.rpartition(".")[0])
        if not isinstance(module, nn.Linear):
            raise ValueError(f"EK-FAC needs Linear layers; {name} belongs to {type(module).__name__}")
        if module not in layers:
            layers.append(module)
    return layers


def _batch_grads(
    model: Transformer,
    layers: list[nn.Linear],
    examples: Sequence[Example],
    batch_size: int,
    sample: torch.Generator | None = None,
) -> Iterator[tuple[list[Tensor], list[Tensor], list[Tensor]]]:
    """Per batch and layer: per-example gradients ``[B, out, in(+1)]`` and the real tokens'
    inputs ``[tokens, in(+1)]`` and output gradients ``[tokens, out]`` (for the covariances)."""
    for batch in _linear_batches(model, layers, examples, batch_size, sample):
        real = batch.token_mask  # [B, T] bool
        grads, acts, outs = [], [], []
        for layer in layers:
            a, g = batch.acts[layer], batch.out_grads[layer]
            if layer.bias is not None:  # the bias is a weight on a constant-1 input
                a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
            grads.append(torch.einsum("bto,bti->boi", g, a).double())
            acts.append(a[real].double())
            outs.append(g[real].double())
        yield grads, acts, outs


def _eigenbases(
    model: Transformer, layers: list[nn.Linear], fit: Sequence[Example], batch_size: int, seed: int | None
) -> list[tuple[Tensor, Tensor]]:
    """Eigenvectors ``(Q_A, Q_G)`` of each layer's token covariances ``E[a aᵀ]`` and ``E[g gᵀ]``."""
    sample = None if seed is None else torch.Generator().manual_seed(seed)
    cov_a: list[Tensor | None] = [None] * len(layers)
    cov_g: list[Tensor | None] = [None] * len(layers)
    for _, acts, outs in _batch_grads(model, layers, fit, batch_size, sample):
        for i, (a, g) in enumerate(zip(acts, outs, strict=True)):
            prev_a, prev_g = cov_a[i], cov_g[i]
            cov_a[i] = a.T @ a if prev_a is None else prev_a + a.T @ a
            cov_g[i] = g.T @ g if prev_g is None else prev_g + g.T @ g
    # Eigenvectors do not depend on the covariances' scale, so the sums need no normalising.
    return [
        (torch.linalg.eigh(a).eigenvectors, torch.linalg.eigh(g).eigenvectors)
        for a, g in zip(cov_a, cov_g, strict=True)
        if a is not None and g is not None
    ]


def _rotated(grads: list[Tensor], bases: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Per-example gradients in each layer's Kronecker eigenbasis, ``Q_Gᵀ ∇W Q_A``."""
    return [q_g.T @ g @ q_a for g, (q_a, q_g) in zip(grads, bases, strict=True)]


def ekfac_scores(
    model: Transformer,
    train_examples: Sequence[Example],
    queries: Sequence[Example],
    params: Sequence[str] | None = None,
    damping: float = DEFAULT_DAMPING,
    batch_size: int = 32,
    fisher: Literal["true", "empirical"] = "true",
    seed: int = 0,
) -> Float[Tensor, "m n"]:
    """Influence of each training example on each query's loss, EK-FAC-preconditioned.

    Same sign convention as `alignlab.attribution.influence_scores`: positive = the example
    supports the query (upweighting it lowers the query loss).

    Args:
        model: the trained model (left unchanged).
        train_examples: examples to score; they also fit the curvature.
        queries: behaviours to attribute.
        params: Linear weight names (default: every weight matrix except the embedding and
            unembedding; a layer's bias is included when it has one).
        damping: added to the refitted eigenvalues, as a multiple of their mean.
        batch_size: examples per backward pass.
        fisher: "true" (targets sampled from the model when fitting the curvature) or
            "empirical" (the examples' own tokens).
        seed: seed for the sampled targets.

    Example:
        >>> scores = ekfac_scores(model, org.training_examples(400, seed=0), [org.poisoned(rng)])
    """
    layers = _layers(model, params)
    if fisher not in ("true", "empirical"):
        raise ValueError(f"fisher must be 'true' or 'empirical', got {fisher!r}")
    sample_seed = seed if fisher == "true" else None
    with _differentiating(model, [p for layer in layers for p in layer.parameters()]):
        bases = _eigenbases(model, layers, train_examples, batch_size, sample_seed)
        # EK-FAC: eigenvalues refitted to the per-example gradients the curvature is fitted with
        # (the same sampled targets: a generator with the same seed draws them again).
        sample = None if sample_seed is None else torch.Generator().manual_seed(sample_seed)
        lam: list[Tensor] = [torch.zeros(()) for _ in layers]
        for grads, _, _ in _batch_grads(model, layers, train_examples, batch_size, sample):
            lam = [acc + r.pow(2).sum(0) for acc, r in zip(lam, _rotated(grads, bases), strict=True)]
        lam = [v / len(train_examples) for v in lam]
        lam = [v + damping * v.mean() for v in lam]
        precond = [torch.zeros(0, dtype=torch.float64) for _ in layers]
        for grads, _, _ in _batch_grads(model, layers, queries, batch_size):
            rot = [r / v for r, v in zip(_rotated(grads, bases), lam, strict=True)]
            precond = [torch.cat([p, r]) if p.numel() else r for p, r in zip(precond, rot, strict=True)]
        columns: list[Tensor] = []
        for grads, _, _ in _batch_grads(model, layers, train_examples, batch_size):
            pairs = zip(precond, _rotated(grads, bases), strict=True)
            columns.append(torch.stack([torch.einsum("moi,noi->mn", q, r) for q, r in pairs]).sum(0))
    return torch.cat(columns, dim=1).float()
