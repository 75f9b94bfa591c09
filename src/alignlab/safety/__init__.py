"""Safety interventions and their dose-response curves (Hubinger et al. 2024's persistence tests).

Example:
    >>> from alignlab.safety import Budget, dose_response
    >>> rows = dose_response("sft-clean", "runs/abc/model", get_organism("backdoor"), Budget())
"""

from alignlab.safety import adversarial as _adversarial  # noqa: F401  (registers)
from alignlab.safety import dpo as _dpo  # noqa: F401
from alignlab.safety import rl as _rl  # noqa: F401
from alignlab.safety import sft as _sft  # noqa: F401
from alignlab.safety.adversarial import (
    AdversarialDose,
    CandidateGrammar,
    RedTeamConfig,
    RedTeamSearch,
    adversarial_training,
    contains_trigger_subsequence,
    default_grammar,
    red_team_search,
)
from alignlab.safety.base import (
    INTERVENTIONS,
    Budget,
    Dose,
    DoseSchedule,
    difference,
    dose_response,
    get_intervention,
    register_intervention,
    rows_to_json,
)
from alignlab.safety.dpo import dpo_loss
from alignlab.safety.logprobs import outcome_logprobs, sequence_logprobs
from alignlab.safety.overopt import (
    GaoFit,
    ProxyData,
    ProxyRM,
    RLArm,
    bon_kl,
    bon_rewards,
    fit_gao,
    gold_reward,
    rl_arm,
    train_proxy,
)
from alignlab.safety.reward import (
    RewardAccuracy,
    RewardModel,
    pair_accuracy,
    preference_pairs,
    train_reward_model,
)

__all__ = [
    "INTERVENTIONS",
    "AdversarialDose",
    "Budget",
    "CandidateGrammar",
    "Dose",
    "DoseSchedule",
    "GaoFit",
    "ProxyData",
    "ProxyRM",
    "RLArm",
    "RedTeamConfig",
    "RedTeamSearch",
    "RewardAccuracy",
    "RewardModel",
    "adversarial_training",
    "bon_kl",
    "bon_rewards",
    "contains_trigger_subsequence",
    "default_grammar",
    "difference",
    "dose_response",
    "dpo_loss",
    "fit_gao",
    "get_intervention",
    "gold_reward",
    "outcome_logprobs",
    "pair_accuracy",
    "preference_pairs",
    "red_team_search",
    "register_intervention",
    "rl_arm",
    "rows_to_json",
    "sequence_logprobs",
    "train_proxy",
    "train_reward_model",
]
