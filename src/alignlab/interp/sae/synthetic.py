"""Planted ground truth for SAEs: K sparse features in superposition in d < K dimensions.

Following Sharkey et al. (2022, "Taking features out of superposition with sparse autoencoders"):
each input is a sparse non-negative combination of K fixed unit directions; a good SAE's decoder
rows should recover the directions, measured by the mean max cosine similarity (MMCS).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from alignlab.tasks.base import stream_seed


def planted_features(n_features: int, d: int, seed: int = 0) -> Float[Tensor, "k d"]:
    """``n_features`` random unit directions in ``d`` dimensions.

    The generator is seeded from a labelled stream, not from ``seed`` itself: `SAE` draws its
    decoder with ``torch.randn(d_sae, d_in)`` from ``manual_seed(seed)``, so with the same seed an
    SAE started *at* the planted features (its first rows were them exactly) and a ReLU + L1 SAE
    that learned nothing still scored a mean max cosine of 0.97.
    """
    gen = torch.Generator().manual_seed(stream_seed("planted-features", seed))
    w = torch.randn(n_features, d, generator=gen)
    return w / w.norm(dim=1, keepdim=True)


def sparse_samples(
    features: Float[Tensor, "k d"], n: int, p_active: float, seed: int = 0
) -> Float[Tensor, "n d"]:
    """``n`` inputs; each feature is on with probability ``p_active``, magnitude U(0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    k = features.shape[0]
    on = torch.rand(n, k, generator=gen) < p_active
    mags = torch.rand(n, k, generator=gen)
    return (on * mags) @ features


def sparse_stream(
    features: Float[Tensor, "k d"], n_chunks: int, chunk: int, p_active: float, seed: int = 0
) -> Iterator[Float[Tensor, "n d"]]:
    """Chunks of `sparse_samples`, generated lazily (a stand-in for streamed model activations)."""
    for i in range(n_chunks):
        yield sparse_samples(features, chunk, p_active, seed=seed * 100_003 + i)


def mean_max_cosine(learned: Float[Tensor, "f d"], truth: Float[Tensor, "k d"]) -> float:
    """For each true feature, the best cosine similarity with any learned direction; averaged."""
    a = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-8)
    b = truth / truth.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return float((b @ a.T).max(dim=1).values.mean())
