"""Trace behaviour back to training data: per-example gradients, TracIn and influence functions."""

from alignlab.attribution.ekfac import ekfac_scores
from alignlab.attribution.grads import Sketch, example_gradients
from alignlab.attribution.influence import METHODS, Attribution, attribute, influence_scores
from alignlab.attribution.lds import LDSResult, fixed_set_batches, linear_datamodeling_score, query_losses
from alignlab.attribution.organism import PlantedAttribution, attribute_organism
from alignlab.attribution.scoring import ALL_METHODS, method_scores

__all__ = [
    "ALL_METHODS",
    "METHODS",
    "Attribution",
    "LDSResult",
    "PlantedAttribution",
    "Sketch",
    "attribute",
    "attribute_organism",
    "ekfac_scores",
    "example_gradients",
    "fixed_set_batches",
    "influence_scores",
    "linear_datamodeling_score",
    "method_scores",
    "query_losses",
]
