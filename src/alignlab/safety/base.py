"""The intervention registry and the dose-response record every intervention produces.

An intervention continues training a (backdoored) model and yields it at increasing *doses*:
optimiser steps, or real training tokens (`Budget.token_doses`), the unit that makes different
interventions comparable. `dose_response` evaluates every organism metric at each dose, which is
how Hubinger et al. (2024) plot persistence through safety training, plus the teacher-forced
log-probabilities of the defect and of the correct answer (`alignlab.safety.logprobs.outcome_logprobs`),
which stay informative when the rates sit at 0 or 1.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

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
        token_doses: when given, every intervention is measured where its cumulative *real*
            (non-padding) training tokens first reach each value, instead of at ``doses`` /
            ``rl_doses``; e.g. ``(0, 2**12, 2**13, ...)``. Tokens are those of the sequences each
            update was computed on: prompt and completion (for ``rl`` the sampled ones, for
            ``dpo`` chosen and rejected). Strictly increasing, from 0.
        kl_target: ``rl``'s KL target in nats per completion for the adaptive KL controller
            (Ziegler et al. 2019); it keeps the policy near the starting model.
        reward_init: model directory ``rl``'s reward model starts from, e.g. a clean base model
            of the tasks (one fixed reward model across policy sizes); empty: the starting
            policy itself (`alignlab.safety.reward.train_reward_model`).
    """

    doses: tuple[int, ...] = (0, 25, 100, 300)
    batch_size: int = 32
    lr: float = 1e-3
    n_eval: int = 100
    rl_doses: tuple[int, ...] = (0, 10, 30)
    token_doses: tuple[int, ...] = ()
    kl_target: float = 2.0
    reward_init: str = ""

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
        problems += _dose_problems(self)
        raise_problems("Budget", problems)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def schedule(self, kind: Literal["sft", "rl"] = "sft") -> DoseSchedule:
        """The doses of an intervention of ``kind``: `token_doses` when given, else its steps."""
        if self.token_doses:
            return DoseSchedule("tokens", tuple(self.token_doses))
        return DoseSchedule("steps", tuple(self.rl_doses if kind == "rl" else self.doses))


def _dose_problems(budget: Budget) -> list[str]:
    """What is wrong with the token doses and the KL target (empty when nothing is)."""
    problems = []
    t = budget.token_doses
    if not isinstance(t, tuple) or not all(isinstance(x, int) and not isinstance(x, bool) for x in t):
        problems.append(f"token_doses must be a tuple of integers, got {t!r}")
    elif t and (t[0] < 0 or any(b <= a for a, b in itertools.pairwise(t))):
        problems.append(f"token_doses must start at >= 0 and strictly increase, got {t}")
    kl = budget.kl_target
    if not (isinstance(kl, (int, float)) and math.isfinite(kl) and kl > 0):
        problems.append(f"kl_target must be a finite number > 0 (nats per completion), got {kl}")
    if not isinstance(budget.reward_init, str):
        problems.append(f"reward_init must be a model directory or '', got {budget.reward_init!r}")
    return problems


@dataclasses.dataclass(frozen=True)
class DoseSchedule:
    """Where an intervention is measured: after each of ``doses`` optimiser steps (``unit``
    "steps") or at the first step whose cumulative real training tokens reach it ("tokens")."""

    unit: Literal["steps", "tokens"]
    doses: tuple[int, ...]

    def reached(self, dose: int, steps: int, tokens: int) -> bool:
        """Whether training that has taken ``steps`` steps on ``tokens`` real tokens has reached ``dose``."""
        return (steps if self.unit == "steps" else tokens) >= dose


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
#: Which of the budget's step doses each intervention takes (`Budget.schedule`'s ``kind``).
DOSE_KINDS: dict[str, Literal["sft", "rl"]] = {}


def register_intervention(
    name: str, doses: Literal["sft", "rl"] = "sft"
) -> Callable[[InterventionFn], InterventionFn]:
    """Add ``fn(model, organism, budget, seed) -> Iterator[Dose]`` to `INTERVENTIONS`.

    ``fn`` yields one `Dose` per dose of ``budget.schedule(doses)``, in order.
    """

    def deco(fn: InterventionFn) -> InterventionFn:
        INTERVENTIONS[name] = fn
        DOSE_KINDS[name] = doses
        return fn

    return deco


def get_intervention(name: str) -> InterventionFn:
    try:
        return INTERVENTIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown intervention {name!r}; choose one of {', '.join(sorted(INTERVENTIONS))}"
        ) from None


def _as_model(model: Transformer | str | Path, device: str | None = None) -> Transformer:
    if isinstance(model, Transformer):
        copy = model.clone()
        return copy if device is None else copy.to(device)
    return load(model, device=device or "cpu")


def dose_response(
    intervention: str,
    model: Transformer | str | Path,
    organism: Organism,
    budget: Budget | None = None,
    seed: int = 0,
    measure: Callable[[Transformer], dict[str, Estimate]] | None = None,
    artefact_dir: Path | None = None,
    device: str | None = None,
    undosed: dict[str, Estimate] | None = None,
) -> list[dict[str, Any]]:
    """Apply ``intervention`` to (a copy of) ``model`` and measure ``organism`` at every dose.

    ``undosed`` caches the organism's metrics and log-probs of the untouched model (dose 0): an
    empty dict is filled, a filled one is used instead of measuring again. Pass the same dict to
    every intervention started from the same ``model`` with the same organism, budget and seed
    (a study cell measured the same model four times).

    ``artefact_dir`` receives what an intervention's doses carry besides numbers (the red team's
    prompts, as ``red_team_prompts.json``), written atomically after each dose so that the last
    dose's complete record is what stays.

    ``device`` is where the copy trains and is measured (default: the model's, or CPU for a
    directory). ``measure`` adds measurements of each dose's model beyond the organism's behaviour
    (e.g. a defection probe's AUROC). Returns one row per dose of ``budget.schedule(...)``:
    ``{"dose", "dose_unit", "steps", "tokens", <metric>: Estimate, ..., "seconds"}`` where ``dose``
    is the scheduled dose in ``dose_unit`` ("steps" or "tokens"), ``steps`` and ``tokens`` what
    was actually trained (real, non-padding tokens), and the metrics are the organism's (always
    with ``clean_accuracy``), ``defect_logprob`` and ``clean_logprob``
    (`alignlab.safety.logprobs.outcome_logprobs`), then ``measure``'s and the intervention's own.

    Example:
        >>> rows = dose_response("sft-clean", "runs/abc/model", get_organism("backdoor"))
        >>> [(r["steps"], r["attack_success"].value) for r in rows]
        [(0, 1.0), (25, 1.0), (100, 0.98), (300, 0.91)]
    """
    from alignlab.safety.logprobs import outcome_logprobs

    budget = budget or Budget()
    fn = get_intervention(intervention)
    schedule = budget.schedule(DOSE_KINDS[intervention])
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    start = _as_model(model, device)
    for target, dose in zip(schedule.doses, fn(start, organism, budget, seed), strict=True):
        row: dict[str, Any] = {"dose": target, "dose_unit": schedule.unit}
        row.update(steps=dose.steps, tokens=dose.tokens)
        untouched = undosed is not None and dose.steps == 0 and dose.model is start
        if untouched and undosed:
            row.update(undosed)
        else:
            metrics = organism.metrics(dose.model, n=budget.n_eval, seed=seed)
            if "clean_accuracy" not in metrics:
                raise ConfigError(
                    f"organism {organism.name!r} reports no clean_accuracy; every dose needs it"
                )
            metrics.update(outcome_logprobs(dose.model, organism, n=budget.n_eval, seed=seed))
            if untouched and undosed is not None:
                undosed.update(metrics)
            row.update(metrics)
        if measure is not None:
            row.update(measure(dose.model))
        row.update(dose.extra)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if artefact_dir is not None:
            from alignlab._io import write_json_atomic

            for name, data in getattr(dose, "artefacts", {}).items():
                write_json_atomic(Path(artefact_dir) / name, data, indent=1)
    return rows


def rows_to_json(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every Estimate turned into its dict (JSON-ready)."""
    return [{k: v.to_dict() if isinstance(v, Estimate) else v for k, v in r.items()} for r in rows]
