"""A trained TopK SAE has unit-norm decoder rows (renormalised after every step, as Gao et al.
2024 do, and SAELens's convention for saved SAEs).

tests/test_interp_sae.py checks the unit rows of the standard SAE, where they come from folding
at the end; a TopK SAE has no such fold, so a training loop that skipped the per-step
renormalisation passed every SAE test (mutation check, issue 15). Without it the rows drift
from norm 1 within a few Adam steps, and feature activations change scale with them.
"""

from __future__ import annotations

import torch

from alignlab.interp.sae import SAEConfig, planted_features, sparse_stream, train_sae

from conftest import assert_close_rel


def test_topk_sae_decoder_rows_stay_unit_norm() -> None:
    feats = planted_features(32, 16, seed=3)
    cfg = SAEConfig(d_in=16, d_sae=64, architecture="topk", k=4)
    sae, log = train_sae(sparse_stream(feats, 2, 2048, 0.05, seed=2), cfg)
    assert log.n_seen == 2 * 2048 and len(log.losses) >= 10  # enough steps for the rows to drift
    norms = sae.W_dec.detach().norm(dim=1)
    # Dividing a row by its float32 norm leaves a norm of 1 to within the rounding of a 16-term
    # sum of squares and a square root: a few eps; 16 eps bounds it. Unnormalised rows drift by
    # far more (measured without the renormalisation: up to 0.13, mean 0.06, after these 16 steps).
    assert_close_rel(norms, torch.ones_like(norms), ulps=16, what="TopK decoder row norms", scale=1.0)
