"""Sparse autoencoders: ReLU+L1 and TopK, streamed training, metrics, SAELens's disk format."""

from alignlab.interp.sae.io import load_sae, saelens_cfg, save_sae
from alignlab.interp.sae.metrics import SAEMetrics, TopExample, ce_loss_recovered, sae_metrics, top_activating
from alignlab.interp.sae.model import SAE, SAEConfig
from alignlab.interp.sae.synthetic import mean_max_cosine, planted_features, sparse_samples, sparse_stream
from alignlab.interp.sae.train import (
    SAEDensityWarning,
    SAETrainConfig,
    SAETrainLog,
    aux_k_loss,
    sae_loss,
    train_sae,
)

__all__ = [
    "SAE",
    "SAEConfig",
    "SAEDensityWarning",
    "SAEMetrics",
    "SAETrainConfig",
    "SAETrainLog",
    "TopExample",
    "aux_k_loss",
    "ce_loss_recovered",
    "load_sae",
    "mean_max_cosine",
    "planted_features",
    "sae_loss",
    "sae_metrics",
    "saelens_cfg",
    "save_sae",
    "sparse_samples",
    "sparse_stream",
    "top_activating",
    "train_sae",
]
