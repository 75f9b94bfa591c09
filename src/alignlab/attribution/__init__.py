"""Trace behaviour back to training data: per-example gradients, TracIn and influence functions."""

from alignlab.attribution.grads import Sketch, example_gradients
from alignlab.attribution.influence import METHODS, Attribution, attribute, influence_scores, planted_recovery
from alignlab.attribution.organism import PlantedAttribution, attribute_organism

__all__ = [
    "METHODS",
    "Attribution",
    "PlantedAttribution",
    "Sketch",
    "attribute",
    "attribute_organism",
    "example_gradients",
    "influence_scores",
    "planted_recovery",
]
