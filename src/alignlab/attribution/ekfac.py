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

Per-example gradients are kept in memory, ``n_train × n_params`` floats: fine for the tiny
models this package trains (al-10k: 400 examples x 6k parameters); for large models use the
sketched `influence_scores` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _per_example(
    model: Transformer,
    layers: list[nn.Linear],
    examples: Sequence[Example],
    batch_size: int,
    sample: torch.Generator | None = None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per-example gradients ``[n, out, in(+1)]`` per layer, and the token covariances A and G."""
    grads: list[list[Tensor]] = [[] for _ in layers]
    cov_a = [torch.zeros(0) for _ in layers]
    cov_g = [torch.zeros(0) for _ in layers]
    n_tokens = 0
    for batch in _linear_batches(model, layers, examples, batch_size, sample):
        real = batch.token_mask  # [B, T] bool
        n_tokens += int(real.sum())
        for i, layer in enumerate(layers):
            a, g = batch.acts[layer], batch.out_grads[layer]
            if layer.bias is not None:  # the bias is a weight on a constant-1 input
                a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
            grads[i].append(torch.einsum("bto,bti->boi", g, a).double())
            a_r, g_r = a[real].double(), g[real].double()
            cov_a[i] = a_r.T @ a_r + (cov_a[i] if cov_a[i].numel() else 0)
            cov_g[i] = g_r.T @ g_r + (cov_g[i] if cov_g[i].numel() else 0)
    return (
        [torch.cat(g) for g in grads],
        [c / n_tokens for c in cov_a],
        [c / n_tokens for c in cov_g],
    )


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
    with _differentiating(model, [p for layer in layers for p in layer.parameters()]):
        train_g, cov_a, cov_g = _per_example(model, layers, train_examples, batch_size)
        fit_g = train_g
        if fisher == "true":
            gen = torch.Generator().manual_seed(seed)
            fit_g, cov_a, cov_g = _per_example(model, layers, train_examples, batch_size, gen)
        query_g, _, _ = _per_example(model, layers, queries, batch_size)
    scores = torch.zeros(len(queries), len(train_examples), dtype=torch.float64)
    for g_tr, g_fit, g_q, a, g in zip(train_g, fit_g, query_g, cov_a, cov_g, strict=True):
        q_a = torch.linalg.eigh(a).eigenvectors
        q_g = torch.linalg.eigh(g).eigenvectors
        rot_tr = q_g.T @ g_tr @ q_a  # [n, out, in] in the Kronecker eigenbasis
        rot_q = q_g.T @ g_q @ q_a
        # EK-FAC: eigenvalues refitted to the per-example gradients the curvature is fitted with.
        lam = (q_g.T @ g_fit @ q_a).pow(2).mean(0)
        lam = lam + damping * lam.mean()
        scores += torch.einsum("moi,noi->mn", rot_q / lam, rot_tr)
    return scores.float()
