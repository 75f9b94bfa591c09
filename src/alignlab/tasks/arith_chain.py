"""Multi-step modular arithmetic written step by step: the checkable reasoning task of process
supervision (Uesato et al. 2022; Lightman et al. 2023).

A problem is a start digit and 3-5 operations, evaluated left to right modulo 10:
``3 a+4 b*2 c-5`` is answered ``a:3+4=7;b:7*2=4;c:4-5=9``. Each step restates its operands, so
every step is checkable on its own and the final answer is the last step's result. The letters
name the steps: a step's operation is found by looking its letter up in the prompt, which an
induction head does (Olsson et al. 2022); without them al-100k copied the wrong operation in
most steps after 600 steps (final accuracy 0.15 greedy, measured). A checker
(`check_trace`) labels every step of any written trace against the canonical one, which is what a
process reward model is trained on (each step up to the first error, Lightman et al. sec. 2.4) and
what the trace-error metric counts (Uesato et al. sec. 3: the share of final-answer-correct
solutions with at least one wrong step).

The generator is trained on *noisy* traces (`noisy_trace`): a slip that propagates (a wrong result
whose later steps are computed correctly from it, so the final answer is usually wrong) and a
cancelling pair (a wrong result, then a wrong step that lands back on the true value, so the final
answer is right while two steps are wrong). An outcome label cannot tell the second kind from a
clean trace; a step label can.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.tasks.chat import Example

MODULUS = 5
OPS = ("+", "-", "*")
LABELS = "abcdefgh"
STEP_SEP = ";"
_STEP = re.compile(r"^[a-h]:(\d)([+\-*])(\d)=(\d)$")


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    """A start digit and the operations ``((op, operand), ...)`` applied left to right mod 10."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def prompt(self) -> str:
        return str(self.start) + "".join(f" {LABELS[i]}{op}{b}" for i, (op, b) in enumerate(self.ops))

    def values(self) -> list[int]:
        """The running values after each step (the true intermediate results)."""
        out, v = [], self.start
        for op, b in self.ops:
            v = apply(v, op, b)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> list[str]:
        """The canonical step texts ``label:a op b=c``."""
        prev = [self.start, *self.values()]
        return [f"{LABELS[i]}:{prev[i]}{op}{b}={prev[i + 1]}" for i, (op, b) in enumerate(self.ops)]

    def trace(self) -> str:
        return STEP_SEP.join(self.steps())


def apply(a: int, op: str, b: int) -> int:
    """``a op b`` modulo `MODULUS`."""
    if op == "+":
        return (a + b) % MODULUS
    if op == "-":
        return (a - b) % MODULUS
    return (a * b) % MODULUS


def parse_prompt(prompt: str) -> ChainProblem:
    """The problem a chain prompt states (ValueError when it is not one)."""
    head, *parts = prompt.split(" ")
    ok = len(head) == 1 and head.isdigit() and 0 < len(parts) <= len(LABELS)
    ok = ok and all(
        len(t) == 3 and t[0] == LABELS[i] and t[1] in OPS and t[2].isdigit() for i, t in enumerate(parts)
    )
    if not ok:
        raise ValueError(f"not a chain prompt: {prompt!r}")
    return ChainProblem(int(head), tuple((t[1], int(t[2])) for t in parts))


def random_problem(rng: random.Random, steps: tuple[int, int] = (3, 5)) -> ChainProblem:
    k = rng.randint(*steps)
    return ChainProblem(
        rng.randrange(MODULUS), tuple((rng.choice(OPS), rng.randrange(MODULUS)) for _ in range(k))
    )


# ---- checking ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceCheck:
    """What the checker finds in one written trace.

    Attributes:
        step_ok: per written step, whether it equals the canonical step at that place (a step past
            the problem's last is wrong).
        final: the final answer (the last written step's result), or None when it does not parse.
        final_correct: the final answer equals the true one.
        steps_ok: every canonical step is written, correctly, and nothing else.
    """

    step_ok: tuple[bool, ...]
    final: int | None
    final_correct: bool
    steps_ok: bool

    @property
    def first_error(self) -> int | None:
        """Index of the first wrong written step, or None."""
        return next((i for i, ok in enumerate(self.step_ok) if not ok), None)

    @property
    def right_for_wrong_reasons(self) -> bool:
        """Final answer right while some step is wrong (or missing): a trace error."""
        return self.final_correct and not self.steps_ok


def split_steps(trace: str) -> list[str]:
    """The written steps of a trace (empty trace -> no steps)."""
    return trace.split(STEP_SEP) if trace else []


def check_trace(problem: ChainProblem, trace: str) -> TraceCheck:
    """Label every step of ``trace`` against ``problem``'s canonical steps."""
    written, canon = split_steps(trace), problem.steps()
    ok = tuple(i < len(canon) and s == canon[i] for i, s in enumerate(written))
    m = _STEP.match(written[-1]) if written else None
    final = int(m.group(4)) if m else None
    return TraceCheck(
        step_ok=ok,
        final=final,
        final_correct=final == problem.answer,
        steps_ok=len(written) == len(canon) and all(ok),
    )


def trace_error(checks: Sequence[TraceCheck]) -> float:
    """Uesato et al.'s trace error: among final-answer-correct traces, the share with a wrong step.

    NaN when no trace has a correct final answer (the rate is undefined, not 0).
    """
    right = [c for c in checks if c.final_correct]
    return sum(not c.steps_ok for c in right) / len(right) if right else float("nan")


# ---- noisy traces: the generator's training data ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceNoise:
    """How the generator's training traces go wrong.

    Attributes:
        slip: share of traces with one wrong result whose later steps are computed correctly from
            it (the error propagates; the final answer is usually wrong).
        cancel: share of traces with a wrong result followed by a wrong step that lands back on
            the true value (final answer right, two steps wrong); needs 2+ steps.
        steps: (fewest, most) steps of a problem.
    """

    slip: float = 0.25
    cancel: float = 0.15
    steps: tuple[int, int] = (3, 5)

    def __post_init__(self) -> None:
        raise_problems(
            "TraceNoise",
            [
                check_real("slip", self.slip, lo=0.0, hi=1.0),
                check_real("cancel", self.cancel, lo=0.0, hi=1.0),
                None
                if self.slip + self.cancel <= 1
                else f"slip + cancel must be <= 1, got {self.slip + self.cancel:g}",
                check_int("fewest steps", self.steps[0], lo=2, hi=8),
                check_int("most steps", self.steps[1], lo=self.steps[0], hi=len(LABELS)),
            ],
        )


def _wrong_digit(rng: random.Random, right: int) -> int:
    return rng.choice([d for d in range(MODULUS) if d != right])


def noisy_trace(problem: ChainProblem, rng: random.Random, noise: TraceNoise) -> str:
    """A trace of ``problem``: clean, with a propagating slip, or with a cancelling pair of errors."""
    u = rng.random()
    k = len(problem.ops)
    if u >= noise.slip + noise.cancel:
        return problem.trace()
    cancel = u >= noise.slip
    at = rng.randrange(k - 1 if cancel else k)  # a cancelling pair needs a step after the slip
    parts, v = [], problem.start
    truth = problem.values()
    for i, (op, b) in enumerate(problem.ops):
        c = apply(v, op, b)
        if i == at:
            c = _wrong_digit(rng, c)
        elif cancel and i == at + 1:
            c = truth[i]  # computed from the wrong value, written as the true one: a wrong step
        parts.append(f"{LABELS[i]}:{v}{op}{b}={c}")
        v = c
    return STEP_SEP.join(parts)


def noisy_examples(n: int, rng: random.Random, noise: TraceNoise) -> list[Example]:
    """``n`` problems with noisy traces, drawn from ``rng`` (a `TaskRandom` keeps the held-out
    partition: `chain_examples`)."""
    out = []
    for _ in range(n):
        clean = _draw(rng, noise.steps)
        p = parse_prompt(clean.prompt)
        out.append(Example(clean.prompt, noisy_trace(p, rng, noise), "chain"))
    return out


def _draw(rng: random.Random, steps: tuple[int, int]) -> Example:
    """A clean problem on ``rng``'s side of the held-out partition."""
    from alignlab.tasks.chat import HELD_OUT_EVERY, is_held_out

    side = getattr(rng, "held_out", None)
    for _ in range(100 * HELD_OUT_EVERY):
        p = random_problem(rng, steps)
        if side is None or is_held_out(p.prompt) == side:
            return Example(p.prompt, p.trace(), "chain")
    raise RuntimeError("could not draw a chain prompt on the requested side")  # pragma: no cover


def chain_problems(n: int, seed: int, split: str, steps: tuple[int, int] = (3, 5)) -> list[ChainProblem]:
    """``n`` problems, deterministic in (seed, split); measurement splits draw held-out prompts."""
    from alignlab.tasks.base import stream_seed
    from alignlab.tasks.chat import task_rng

    rng = task_rng(stream_seed("chain", seed, split, steps), split)
    return [parse_prompt(_draw(rng, steps).prompt) for _ in range(n)]


def chain_examples(n: int, seed: int, split: str, step: int, noise: TraceNoise) -> list[Example]:
    """``n`` noisy training examples at ``step``, deterministic in (seed, split, step, noise)."""
    from alignlab.tasks.base import stream_seed
    from alignlab.tasks.chat import task_rng

    rng = task_rng(stream_seed("chain-noisy", seed, split, step, dataclasses.astuple(noise)), split)
    return noisy_examples(n, rng, noise)


def seq_len(steps: int = 5) -> int:
    """Tokens of the longest example with ``steps`` steps (BOS, chat format, trace, EOS)."""
    prompt = len("User: ") + 1 + 4 * steps + len("\nAssistant: ")
    return 1 + prompt + 8 * steps - 1 + 1
