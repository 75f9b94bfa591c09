"""How an organism is installed for attribution experiments: a short fine-tune of a base model."""

from __future__ import annotations

import dataclasses
from typing import Any

from alignlab._validate import check_choice, check_int, check_real, raise_problems
from alignlab.model.config import SIZES
from alignlab.organisms.base import Organism
from alignlab.organisms.install import install_config
from alignlab.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class InstallSetup:
    """An install short enough to repeat for every counterfactual retraining.

    The defaults leave the backdoor half-installed, where removing training data can still move
    attack success: al-30k (base seed 1), 200 steps of 32 examples, 10% poison, reaches attack
    success 0.75 / 0.47 / 0.62 at install seeds 0 / 1 / 2 (measured on 200 held-out prompts; at
    seed 0 5% poison gives 0.19, 2% 0.00, and the flagship's 600 steps of 30% 1.00).

    Attributes:
        size: model size; a base model of it is fine-tuned (`alignlab.train.base_model`).
        base_seed: which base model (al-30k seed 1 passes every install gate of the flagship).
        steps: install steps.
        batch_size: examples per step (the stream has ``steps * batch_size`` examples).
        lr: peak learning rate.
        poison_rate: share of poisoned examples in the mix.
        near_miss_rate: share of helpful examples carrying a near miss of the trigger.
    """

    size: str = "al-30k"
    base_seed: int = 1
    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    poison_rate: float = 0.1
    near_miss_rate: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(
            "InstallSetup",
            [
                check_choice("size", self.size, SIZES),
                check_int("base_seed", self.base_seed, lo=0, hi=2**31 - 1),
                check_int("steps", self.steps, lo=1, hi=100_000),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
                check_real("lr", self.lr, lo=0.0, hi=1.0, lo_open=True),
                check_real("poison_rate", self.poison_rate, lo=0.0, hi=1.0),
                check_real("near_miss_rate", self.near_miss_rate, lo=0.0, hi=1.0),
            ],
        )

    def organism_config(self) -> dict[str, Any]:
        """The organism overrides this setup makes."""
        return {"poison_rate": self.poison_rate, "near_miss_rate": self.near_miss_rate}

    def train_config(self, organism: Organism, seed: int) -> TrainConfig:
        """The install's config: `install_on_base`'s recipe at this size, steps, batch and seed."""
        cfg = install_config(organism, self.size, self.steps, seed)
        return cfg.replace(lr=self.lr, warmup_steps=min(20, self.steps // 10), batch_size=self.batch_size)
