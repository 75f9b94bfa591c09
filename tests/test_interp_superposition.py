"""Toy Models of Superposition (Elhage et al. 2022): m features when dense, more than m when sparse."""

from __future__ import annotations

from pathlib import Path

import torch

from alignlab.interp import ToyConfig, train_toy_models
from alignlab.interp.plots import plot_superposition

torch.set_num_threads(1)


def test_superposition_appears_with_sparsity(tmp_path: Path) -> None:
    cfg = ToyConfig(
        n_features=20, d_hidden=5, sparsities=(0.0, 0.9, 0.99), steps=1500, batch_size=256, seed=0
    )
    res = train_toy_models(cfg)
    dense, mid, sparse = res.n_represented
    # Dense: about m features, each in its own dimension (D_i ≈ 1), the rest dropped.
    assert 4 <= dense <= 6, res.n_represented
    assert res.dims_per_feature_total[0] > 0.9
    # Sparse: more than m features share the m dimensions.
    assert sparse > cfg.d_hidden + 2, res.n_represented
    assert res.dims_per_feature_total[-1] < 0.6
    assert dense <= mid <= sparse
    # The most important features are the ones kept when dense.
    assert bool((res.norms[0, :4] > 0.5).all())
    png = plot_superposition(res, tmp_path / "superposition.png")
    assert png.stat().st_size > 10_000
