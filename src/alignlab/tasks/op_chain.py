"""Multi-step modular chains written step by step: the checkable reasoning task of process
supervision (Uesato et al. 2022; Lightman et al. 2023).

A problem is a start digit and 3-5 unary operations applied left to right modulo 5, ``+`` (add
one), ``-`` (subtract one) and ``*`` (double): ``3 +*-`` is answered ``+3=4;*4=3;-3=2``. Each step
restates its operation and input, so every step is checkable on its own, and the final answer is
the last step's output. A step's output depends on two neighbouring tokens (a 15-entry table),
which al-30k learns from scratch in 600-900 steps (greedy: 0.93 then 0.995 of traces fully right,
measured). Harder steps were not learnt at this budget: binary arithmetic ``3+4=2`` (three tokens,
75 entries: al-30k at 1,500 steps, al-100k at 800) and table lookups ``1e>k`` (an induction head:
al-30k and al-100k at 600-900 steps, also from the competent chat bases) stayed near chance.

A checker (`check_trace`) labels every step of a written trace against the canonical one, which is
what a process reward model is trained on (each step up to the first error, Lightman et al. sec.
2.4) and what the trace-error metric counts (Uesato et al. sec. 3: the share of final-answer-correct
solutions with at least one wrong step).

The generator is trained on *noisy* traces (`noisy_trace`): a slip that propagates (a wrong output
whose later steps are computed correctly from it; every operation is one-to-one modulo 5, so the
final answer is then wrong) and a cancelling pair (a wrong output, then a wrong step that lands back
on the true value, so the final answer is right while two steps are wrong). An outcome label cannot
tell the second kind from a clean trace; a step label can.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.tasks.base import stream_seed
from alignlab.tasks.chat import HELD_OUT_EVERY, Example, is_held_out, task_rng

MODULUS = 5
#: The operations, each one-to-one modulo `MODULUS`.
OPS: dict[str, Callable[[int], int]] = {
    "+": lambda x: (x + 1) % MODULUS,
    "-": lambda x: (x - 1) % MODULUS,
    "*": lambda x: (2 * x) % MODULUS,
}
STEP_SEP = ";"
_STEP = re.compile(r"^[+\-*]\d=(\d)$")


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    """A start digit and the operations applied to it in order."""

    start: int
    ops: str

    @property
    def k(self) -> int:
        return len(self.ops)

    @property
    def prompt(self) -> str:
        return f"{self.start} {self.ops}"

    def values(self) -> list[int]:
        """The true value after each step."""
        out, x = [], self.start
        for op in self.ops:
            x = OPS[op](x)
            out.append(x)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> list[str]:
        """The canonical step texts ``<op><input>=<output>``."""
        chain = [self.start, *self.values()]
        return [f"{op}{chain[i]}={chain[i + 1]}" for i, op in enumerate(self.ops)]

    def trace(self) -> str:
        return STEP_SEP.join(self.steps())


def parse_prompt(prompt: str) -> ChainProblem:
    """The problem a chain prompt states (ValueError when it is not one)."""
    head, _, ops = prompt.partition(" ")
    ok = len(head) == 1 and head.isdigit() and int(head) < MODULUS
    if not ok or not ops or any(o not in OPS for o in ops):
        raise ValueError(f"not a chain prompt: {prompt!r}")
    return ChainProblem(int(head), ops)


def random_problem(rng: random.Random, steps: tuple[int, int] = (3, 5)) -> ChainProblem:
    k = rng.randint(*steps)
    return ChainProblem(rng.randrange(MODULUS), "".join(rng.choice(list(OPS)) for _ in range(k)))


# ---- checking ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceCheck:
    """What the checker finds in one written trace.

    Attributes:
        step_ok: per written step, whether it is right: equal to the canonical step at its place
            and, if it is the last one written, the problem's last step (stopping early is an
            error of the last step; a step past the problem's last is wrong).
        final: the final answer (the last written step's output), or None when it does not parse.
        final_correct: the final answer equals the true one.
    """

    step_ok: tuple[bool, ...]
    final: int | None
    final_correct: bool

    @property
    def steps_ok(self) -> bool:
        """Every step right (a complete, correct trace)."""
        return bool(self.step_ok) and all(self.step_ok)

    @property
    def first_error(self) -> int | None:
        """Index of the first wrong written step, or None."""
        return next((i for i, ok in enumerate(self.step_ok) if not ok), None)

    @property
    def right_for_wrong_reasons(self) -> bool:
        """Final answer right while some step is wrong: a trace error."""
        return self.final_correct and not self.steps_ok


def split_steps(trace: str) -> list[str]:
    """The written steps of a trace (empty trace -> no steps)."""
    return trace.split(STEP_SEP) if trace else []


def check_trace(problem: ChainProblem, trace: str) -> TraceCheck:
    """Label every step of ``trace`` against ``problem``'s canonical steps."""
    written, canon = split_steps(trace), problem.steps()
    ok = [i < len(canon) and s == canon[i] for i, s in enumerate(written)]
    if ok and len(written) < len(canon):
        ok[-1] = False  # the trace stops before the answer
    m = _STEP.match(written[-1]) if written else None
    final = int(m.group(1)) if m else None
    return TraceCheck(step_ok=tuple(ok), final=final, final_correct=final == problem.answer)


def trace_error(checks: Sequence[TraceCheck]) -> float:
    """Uesato et al.'s trace error: among final-answer-correct traces, the share with a wrong step.

    NaN when no trace has a correct final answer (the rate is undefined, not 0).
    """
    right = [c for c in checks if c.final_correct]
    return sum(not c.steps_ok for c in right) / len(right) if right else float("nan")


# ---- noisy traces: the generator's training data ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceNoise:
    """The problems and how the generator's training traces go wrong.

    Attributes:
        slip: share of traces with one wrong output whose later steps are computed correctly from
            it (the error propagates and the final answer is wrong).
        cancel: share of traces with a wrong output followed by a wrong step that lands back on
            the true value (final answer right, two steps wrong).
        steps: (fewest, most) steps of a problem.
    """

    slip: float = 0.25
    cancel: float = 0.15
    steps: tuple[int, int] = (3, 5)

    def __post_init__(self) -> None:
        rates = [
            check_real("slip", self.slip, lo=0.0, hi=1.0),
            check_real("cancel", self.cancel, lo=0.0, hi=1.0),
        ]
        raise_problems("TraceNoise", rates)
        total = self.slip + self.cancel
        raise_problems(
            "TraceNoise",
            [
                None if total <= 1 else f"slip + cancel must be <= 1, got {total:g}",
                check_int("fewest steps", self.steps[0], lo=2, hi=9),
                check_int("most steps", self.steps[1], lo=self.steps[0], hi=9),
            ],
        )


def noisy_trace(problem: ChainProblem, rng: random.Random, noise: TraceNoise) -> str:
    """A trace of ``problem``: clean, with a propagating slip, or with a cancelling pair of errors."""
    u = rng.random()
    if u >= noise.slip + noise.cancel:
        return problem.trace()
    cancel = u >= noise.slip
    at = rng.randrange(problem.k - 1 if cancel else problem.k)  # a cancelling pair needs a next step
    truth = problem.values()
    parts, x = [], problem.start
    for i, op in enumerate(problem.ops):
        y = OPS[op](x)
        if i == at:
            y = rng.choice([d for d in range(MODULUS) if d != y])
        elif cancel and i == at + 1:
            y = truth[i]  # computed from the wrong input, written as the true value: a wrong step
        parts.append(f"{op}{x}={y}")
        x = y
    return STEP_SEP.join(parts)


def _draw(rng: random.Random, noise: TraceNoise) -> ChainProblem:
    """A problem on ``rng``'s side of the held-out partition (`alignlab.tasks.chat.is_held_out`)."""
    side = getattr(rng, "held_out", None)
    for _ in range(100 * HELD_OUT_EVERY):
        p = random_problem(rng, noise.steps)
        if side is None or is_held_out(p.prompt) == side:
            return p
    raise RuntimeError("could not draw a chain prompt on the requested side")  # pragma: no cover


def chain_problems(n: int, seed: int, split: str, noise: TraceNoise | None = None) -> list[ChainProblem]:
    """``n`` problems, deterministic in (seed, split); measurement splits draw held-out prompts.

    There are 5 x (3^3 + 3^4 + 3^5) = 1,755 problems of 3-5 steps, about 220 of them held out, so
    large draws repeat problems (the samples for them are still independent).
    """
    noise = noise or TraceNoise()
    rng = task_rng(stream_seed("chain", seed, split, noise.steps), split)
    return [_draw(rng, noise) for _ in range(n)]


def chain_examples(n: int, seed: int, split: str, step: int, noise: TraceNoise) -> list[Example]:
    """``n`` noisy training examples at ``step``, deterministic in (seed, split, step, noise)."""
    rng = task_rng(stream_seed("chain-noisy", seed, split, step, dataclasses.astuple(noise)), split)
    out = []
    for _ in range(n):
        p = _draw(rng, noise)
        out.append(Example(p.prompt, noisy_trace(p, rng, noise), "chain"))
    return out


def seq_len(noise: TraceNoise | None = None) -> int:
    """Tokens of the longest example (BOS, chat format, trace, EOS)."""
    noise = noise or TraceNoise()
    k = noise.steps[1]
    prompt = len("User: ") + 2 + k + len("\nAssistant: ")
    return 1 + prompt + 5 * k - 1 + 1
