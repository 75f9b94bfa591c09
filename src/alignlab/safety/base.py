"""The intervention registry and the dose-response record every intervention produces.

An intervention continues training a (backdoored) model and yields it at increasing *doses*
(optimiser steps). `dose_response` evaluates every organism metric at each dose, which is how
Hubinger et al. (2024) plot persistence through safety training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from alignlab._validate import MAX_BATCH, MAX_STEPS, check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.hf import load
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.stats import Estimate
from alignlab.stats import difference as difference  # re-exported by alignlab.safety

# Held-out prompts per condition: a 95% interval is already +-0.001 wide at 10^6.
_MAX_EVAL = 1_000_000


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much safety training, and at which doses to measure.

    Attributes:
        doses: optimiser steps at which the model is evaluated (0 = the starting model).
        batch_size: sequences per step.
        lr: AdamW learning rate (constant after a short warm-up; the defender fine-tunes).
        n_eval: held-out prompts per condition for each metric.
        rl_doses: policy-gradient steps for ``rl`` (each costs about as much as 10-20 SFT steps:
            it samples 32 completions token by token).
    """

    doses: tuple[int, ...] = (0, 25, 100, 300)
    batch_size: int = 32
    lr: float = 1e-3
    n_eval: int = 100
    rl_doses: tuple[int, ...] = (0, 10, 30)

    def __post_init__(self) -> None:
        problems = [
            check_int("batch_size", self.batch_size, lo=1, hi=MAX_BATCH),
            check_real("lr", self.lr, lo=0.0, lo_open=True),
            check_int("n_eval", self.n_eval, lo=1, hi=_MAX_EVAL),
        ]
        for name in ("doses", "rl_doses"):
            d = getattr(self, name)
            bad = [check_int(f"{name}[{i}]", x, lo=0, hi=MAX_STEPS) for i, x in enumerate(d)]
            problems += bad
            if not d or (not any(bad) and list(d) != sorted(d)):
                problems.append(f"{name} must be non-negative and increasing, got {d}")
        raise_problems("Budget", problems)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Dose:
    """The model after ``steps`` steps (``tokens`` tokens) of an intervention.

    ``model`` is live: the intervention keeps training it after the consumer resumes the iterator,
    so evaluate (or copy) it before advancing. ``extra`` holds intervention-specific measurements
    (reward and KL for ``rl``; red-team defect rate and trigger specificity for ``adversarial``).
    """

    steps: int
    tokens: int
    model: Transformer
    extra: dict[str, Estimate] = dataclasses.field(default_factory=dict)


InterventionFn = Callable[[Transformer, Organism, Budget, int], Iterator[Dose]]
INTERVENTIONS: dict[str, InterventionFn] = {}


def register_intervention(name: str) -> Callable[[InterventionFn], InterventionFn]:
    """Add ``fn(model, organism, budget, seed) -> Iterator[Dose]`` to `INTERVENTIONS`."""

    def deco(fn: InterventionFn) -> InterventionFn:
        INTERVENTIONS[name] = fn
        return fn

    return deco


def get_intervention(name: str) -> InterventionFn:
    try:
        return INTERVENTIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown intervention {name!r}; choose one of {', '.join(sorted(INTERVENTIONS))}"
        ) from None


def _as_model(model: Transformer | str | Path) -> Transformer:
    if isinstance(model, Transformer):
        copy = Transformer(model.cfg)
        copy.load_state_dict(model.state_dict())
        return copy
    return load(model)


def dose_response(
    intervention: str,
    model: Transformer | str | Path,
    organism: Organism,
    budget: Budget | None = None,
    seed: int = 0,
    measure: Callable[[Transformer], dict[str, Estimate]] | None = None,
) -> list[dict[str, Any]]:
    """Apply ``intervention`` to (a copy of) ``model`` and measure ``organism`` at every dose.

    ``measure`` adds measurements of each dose's model beyond the organism's behaviour (e.g. a
    defection probe's AUROC). Returns one row per dose:
    ``{"steps", "tokens", "seconds", <metric>: Estimate, ...}``.

    Example:
        >>> rows = dose_response("sft-clean", "runs/abc/model", get_organism("backdoor"))
        >>> [(r["steps"], r["attack_success"].value) for r in rows]
        [(0, 1.0), (25, 1.0), (100, 0.98), (300, 0.91)]
    """
    budget = budget or Budget()
    fn = get_intervention(intervention)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for dose in fn(_as_model(model), organism, budget, seed):
        row: dict[str, Any] = {"steps": dose.steps, "tokens": dose.tokens}
        row.update(organism.metrics(dose.model, n=budget.n_eval, seed=seed))
        if measure is not None:
            row.update(measure(dose.model))
        row.update(dose.extra)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def rows_to_json(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every Estimate turned into its dict (JSON-ready)."""
    return [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in r.items()} for r in rows]
