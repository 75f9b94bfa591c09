"""Trace behaviour back to training data: per-example gradients, TracIn and influence functions,
scored over the examples a model actually trained on and checked by retraining."""

from alignlab.attribution.discrimination import Discrimination, trigger_discrimination
from alignlab.attribution.ekfac import ekfac_scores
from alignlab.attribution.grads import Sketch, example_gradients
from alignlab.attribution.influence import METHODS, Attribution, attribute, influence_scores
from alignlab.attribution.lds import (
    LDSResult,
    fixed_set_batches,
    linear_datamodeling_score,
    query_losses,
    score_subsets,
)
from alignlab.attribution.organism import PlantedAttribution, attribute_organism
from alignlab.attribution.removal import RemovalResult, removal_check
from alignlab.attribution.scoring import ALL_METHODS, method_scores
from alignlab.attribution.setup import InstallSetup
from alignlab.attribution.stream_lds import StreamLDS, stream_lds
from alignlab.attribution.tracin import Snapshots, tracin_scores, train_with_snapshots
from alignlab.attribution.training_set import (
    STREAM_METHODS,
    ScoredInstall,
    install_and_score,
    training_set_scores,
    untrained_like,
)

__all__ = [
    "ALL_METHODS",
    "METHODS",
    "STREAM_METHODS",
    "Attribution",
    "Discrimination",
    "InstallSetup",
    "LDSResult",
    "PlantedAttribution",
    "RemovalResult",
    "ScoredInstall",
    "Sketch",
    "Snapshots",
    "StreamLDS",
    "attribute",
    "attribute_organism",
    "ekfac_scores",
    "example_gradients",
    "fixed_set_batches",
    "influence_scores",
    "install_and_score",
    "linear_datamodeling_score",
    "method_scores",
    "query_losses",
    "removal_check",
    "score_subsets",
    "stream_lds",
    "tracin_scores",
    "train_with_snapshots",
    "training_set_scores",
    "trigger_discrimination",
    "untrained_like",
]
