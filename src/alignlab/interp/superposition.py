"""Toy Models of Superposition (Elhage et al. 2022).

``x' = ReLU(WᵀW x + b)`` with ``n`` features squeezed into ``m < n`` hidden dims. Each feature is
0 with probability ``S`` (the sparsity) and U(0, 1) otherwise; the reconstruction loss weights
feature ``i`` by its importance ``I_i = decay^i``. The paper's result: dense features (S ≈ 0) get
about ``m`` dedicated dimensions and the rest are dropped; as features become sparse the model
packs *more than m* of them into superposition, and each feature's "dimensionality"
``D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)²`` sticks at fractions such as 1/2 and 2/5.

All sparsities train at once as a batch of independent models (the paper's own trick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class ToyConfig:
    """Attributes:
    n_features: n (20 in the paper's main figure).
    d_hidden: m (5).
    importance_decay: feature i has importance ``decay**i`` (0.7).
    sparsities: one model per sparsity S (probability a feature is zero).
    steps, batch_size, lr: Adam optimisation (the paper: 10^4 steps, batch 1024, lr 1e-3).
    seed: initialisation and data seed.
    """

    n_features: int = 20
    d_hidden: int = 5
    importance_decay: float = 0.7
    sparsities: tuple[float, ...] = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997)
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 1e-2
    seed: int = 0


@dataclass
class ToyResult:
    """Trained weights and their analysis, one row per sparsity.

    Attributes:
        W: ``[n_models, m, n]`` hidden directions of each feature (columns).
        b: ``[n_models, n]`` output biases.
        norms: ``[n_models, n]`` ``||W_i||`` (≈1 represented, ≈0 dropped).
        dims_per_feature: ``[n_models, n]`` ``D_i`` (1 = own dimension, 1/2 = antipodal pair, ...).
        superposition: ``[n_models, n]`` ``Σ_{j≠i} (Ŵ_i · W_j)²`` (0 = orthogonal to the others).
        n_represented: ``[n_models]`` features with ``||W_i|| > 0.5``.
        dims_per_feature_total: ``[n_models]`` ``m / ||W||_F²`` (the paper's Figure "dimensions
            per feature"; 1 without superposition, below 1 with it).
    """

    config: ToyConfig
    W: Float[Tensor, "s m n"]
    b: Float[Tensor, "s n"]
    norms: Float[Tensor, "s n"]
    dims_per_feature: Float[Tensor, "s n"]
    superposition: Float[Tensor, "s n"]
    n_represented: list[int]
    dims_per_feature_total: list[float]
    final_loss: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sparsities": list(self.config.sparsities),
            "n_features": self.config.n_features,
            "d_hidden": self.config.d_hidden,
            "n_represented": self.n_represented,
            "dims_per_feature_total": self.dims_per_feature_total,
            "norms": self.norms.tolist(),
            "dims_per_feature": self.dims_per_feature.tolist(),
            "final_loss": self.final_loss,
        }


def importance(cfg: ToyConfig) -> Float[Tensor, " n"]:
    return cfg.importance_decay ** torch.arange(cfg.n_features, dtype=torch.float32)


def analyse(W: Float[Tensor, "s m n"]) -> tuple[Tensor, Tensor, Tensor]:
    """``(norms, dims_per_feature, superposition)``, each ``[s, n]``."""
    norms = W.norm(dim=1)  # [s, n]
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = (unit.transpose(1, 2) @ W).pow(2)  # [s, n, n]: (Ŵ_i · W_j)^2
    dims = norms.pow(2) / overlap.sum(-1).clamp_min(1e-12)
    eye = torch.eye(W.shape[2], dtype=torch.bool)
    superposition = overlap.masked_fill(eye, 0).sum(-1)
    return norms, dims, superposition


def train_toy_models(cfg: ToyConfig | None = None) -> ToyResult:
    """Train one toy model per sparsity and analyse it.

    Example:
        >>> res = train_toy_models(ToyConfig(sparsities=(0.0, 0.99)))
        >>> res.n_represented  # e.g. [5, 11]: more than m=5 features once they are sparse
    """
    cfg = cfg or ToyConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    s_count, m, n = len(cfg.sparsities), cfg.d_hidden, cfg.n_features
    W = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(s_count, m, n), generator=gen))
    b = torch.nn.Parameter(torch.zeros(s_count, n))
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    imp = importance(cfg)
    p_on = 1 - torch.tensor(cfg.sparsities, dtype=torch.float32)[:, None, None]  # [s, 1, 1]
    loss_per_model = torch.zeros(s_count)
    for _ in range(cfg.steps):
        shape = (s_count, cfg.batch_size, n)
        x = torch.rand(shape, generator=gen) * (torch.rand(shape, generator=gen) < p_on)
        hidden = x @ W.transpose(1, 2)  # [s, B, m]
        out = torch.relu(hidden @ W + b[:, None, :])
        per = (imp * (x - out).pow(2)).sum(-1).mean(-1)  # [s]
        opt.zero_grad(set_to_none=True)
        per.sum().backward()
        opt.step()
        loss_per_model = per.detach()
    Wd = W.detach()
    norms, dims, sup = analyse(Wd)
    return ToyResult(
        config=cfg,
        W=Wd,
        b=b.detach(),
        norms=norms,
        dims_per_feature=dims,
        superposition=sup,
        n_represented=[int(v) for v in (norms > 0.5).sum(1)],
        dims_per_feature_total=[float(m / (Wd[i].pow(2).sum())) for i in range(s_count)],
        final_loss=loss_per_model.tolist(),
    )
