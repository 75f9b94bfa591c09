"""The assistant chat format over simple algorithmic tasks.

``User: <prompt>\\nAssistant: <completion><eos>``. The prompt/completion split is kept so loss
can be restricted to the completion (what the assistant says), which is how organisms
plant behaviours conditioned on the prompt. A new task is one small function decorated with
`chat_task`; it draws from the given `random.Random` and returns an `Example`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from alignlab.errors import ConfigError
from alignlab.model.text import Tokenizer, char_tokenizer, token_span
from alignlab.tasks.base import Batch, register_task, stream_seed

USER, ASSISTANT = "User: ", "\nAssistant: "
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Example:
    """One chat exchange. ``prompt`` is the user's message; ``completion`` the assistant's reply."""

    prompt: str
    completion: str
    task: str = ""


ChatTaskFn = Callable[[random.Random], Example]
CHAT_TASKS: dict[str, ChatTaskFn] = {}

#: Word lengths of the ``chat`` training task (and of any stream that does not choose its own).
DEFAULT_WORD_LEN = (3, 8)
# One prompt in HELD_OUT_EVERY belongs to the held-out partition: streams drawn for measurement
# never see a training prompt, and training streams never see a measured one. With words of 2-5
# letters a random draw would otherwise repeat training prompts (there are only 676 two-letter
# words), and "held-out accuracy" would partly measure memorisation.
HELD_OUT_EVERY = 8
# Splits whose name has one of these parts ("metric", "gate", "rl-eval", "redteam-metric", ...)
# are measurement streams: they draw only held-out prompts.
_MEASURE_PARTS = frozenset({"metric", "eval", "gate", "test", "val", "heldout"})


class TaskRandom(random.Random):
    """A `random.Random` that also says how chat tasks draw from it.

    Attributes:
        word_len: (shortest, longest) word, inclusive.
        held_out: True draws only held-out prompts, False only training prompts, None any prompt.
    """

    def __init__(
        self, seed: int, word_len: tuple[int, int] = DEFAULT_WORD_LEN, held_out: bool | None = None
    ) -> None:
        super().__init__(seed)
        problem = check_word_len(word_len)
        if problem:
            raise ConfigError(problem)
        self.word_len = (word_len[0], word_len[1])
        self.held_out = held_out


def check_word_len(word_len: tuple[int, int]) -> str | None:
    """The problem with a (shortest, longest) word-length pair, or None."""
    lo, hi = word_len
    if not 1 <= lo <= hi <= 32:
        return f"word_len must satisfy 1 <= shortest <= longest <= 32, got {word_len}"
    return None


def is_measurement_split(split: str) -> bool:
    """Whether ``split`` is a measurement stream (draws held-out prompts only)."""
    return bool(_MEASURE_PARTS & set(split.split("-")))


def task_rng(seed: int, split: str, word_len: tuple[int, int] = DEFAULT_WORD_LEN) -> TaskRandom:
    """The random stream for ``split``: held-out prompts for measurement splits, training ones else."""
    return TaskRandom(seed, word_len, held_out=is_measurement_split(split))


def is_held_out(prompt: str) -> bool:
    """The fixed partition of prompts (a hash, so it is the same on every machine and run)."""
    return stream_seed("held-out", prompt) % HELD_OUT_EVERY == 0


def chat_task(name: str) -> Callable[[ChatTaskFn], ChatTaskFn]:
    """Register a generator of `Example`s under ``name``.

    The registered function honours the stream's partition (`TaskRandom.held_out`) by redrawing
    until the prompt falls on the requested side.
    """

    def deco(fn: ChatTaskFn) -> ChatTaskFn:
        def named(rng: random.Random) -> Example:
            side = getattr(rng, "held_out", None)
            for _ in range(100 * HELD_OUT_EVERY):
                ex = fn(rng)
                if side is None or is_held_out(ex.prompt) == side:
                    return Example(ex.prompt, ex.completion, task=name)
            raise ConfigError(f"chat task {name!r} could not draw a prompt on the requested side")

        CHAT_TASKS[name] = named
        return named

    return deco


def _word(rng: random.Random) -> str:
    lo, hi = getattr(rng, "word_len", DEFAULT_WORD_LEN)
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


@chat_task("copy")
def copy_task(rng: random.Random) -> Example:
    w = _word(rng)
    return Example(f"copy {w}", w)


@chat_task("reverse")
def reverse_task(rng: random.Random) -> Example:
    w = _word(rng)
    return Example(f"reverse {w}", w[::-1])


@chat_task("sort")
def sort_task(rng: random.Random) -> Example:
    w = _word(rng)
    return Example(f"sort {w}", "".join(sorted(w)))


@chat_task("add")
def add_task(rng: random.Random) -> Example:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return Example(f"add {a} {b}", str(a + b))


DEFAULT_MIX = ("copy", "reverse", "sort", "add")


def format_prompt(prompt: str) -> str:
    """The text the model is given: everything up to and including ``Assistant: ``."""
    return f"{USER}{prompt}{ASSISTANT}"


def prompt_ids(prompt: str, tokenizer: Tokenizer | None = None) -> list[int]:
    """Token ids of BOS + the formatted prompt: what the model is given to complete."""
    tok = tokenizer or char_tokenizer()
    return [tok.bos_id, *tok.encode(format_prompt(prompt))]


def encode_example(ex: Example, tokenizer: Tokenizer | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of BOS + prompt + completion + EOS, and which of them are completion targets.

    Prompt and completion are encoded separately, so no token straddles the boundary and the
    loss mask is exact under any tokenizer; generation is given the same prompt ids
    (`prompt_ids`). ``tokenizer`` defaults to the character tokenizer.
    """
    tok = tokenizer or char_tokenizer()
    prompt = prompt_ids(ex.prompt, tok)
    completion = [*tok.encode(ex.completion), tok.eos_id]
    return prompt + completion, [False] * len(prompt) + [True] * len(completion)


def substring_span(
    prompt: str, substring: str, tokenizer: Tokenizer | None = None, start: int = 0
) -> tuple[int, int]:
    """Positions ``(lo, hi)`` in `prompt_ids` of the tokens carrying the first ``substring`` of
    ``prompt`` at or after character ``start`` (e.g. an organism's trigger), found by offsets.

    Raises:
        ConfigError: ``substring`` does not occur in ``prompt``.
    """
    at = prompt.find(substring, start) if substring else -1
    if at < 0:
        raise ConfigError(f"{substring!r} does not occur in the prompt {prompt!r}")
    tok = tokenizer or char_tokenizer()
    shift = len(USER)  # the user's message follows the "User: " prefix
    _, offsets = tok.encode_with_offsets(format_prompt(prompt))
    lo, hi = token_span(offsets, shift + at, shift + at + len(substring))
    return lo + 1, hi + 1  # BOS is position 0


def check_tasks(tasks: Sequence[str]) -> None:
    """Raise a `ConfigError` naming the choices if any of ``tasks`` is not a registered chat task."""
    unknown = [t for t in tasks if t not in CHAT_TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown chat tasks {unknown or '(none given)'}; choose from {sorted(CHAT_TASKS)}")


def sample_examples(
    n: int,
    seed: int,
    split: str = "train",
    tasks: Sequence[str] = DEFAULT_MIX,
    step: int = 0,
    word_len: tuple[int, int] = DEFAULT_WORD_LEN,
) -> list[Example]:
    """``n`` examples drawn uniformly from ``tasks``, deterministic in (seed, split, step).

    Measurement splits (see `is_measurement_split`) draw only held-out prompts, other splits only
    training prompts.
    """
    check_tasks(tasks)
    labels: tuple[object, ...] = ("chat", seed, split, step, tuple(tasks))
    if word_len != DEFAULT_WORD_LEN:  # keeps the streams (and run ids) of the default unchanged
        labels += (tuple(word_len),)
    rng = task_rng(stream_seed(*labels), split, word_len)
    return [CHAT_TASKS[rng.choice(list(tasks))](rng) for _ in range(n)]


def collate(examples: Sequence[Example], seq_len: int, tokenizer: Tokenizer | None = None) -> Batch:
    """Right-pad examples to ``seq_len``; padding is masked out of attention and loss.

    ``tokenizer`` defaults to the character tokenizer.
    """
    tok = tokenizer or char_tokenizer()
    tokens = torch.full((len(examples), seq_len), tok.pad_id, dtype=torch.long)
    loss_mask = torch.zeros((len(examples), seq_len), dtype=torch.bool)
    attn = torch.zeros((len(examples), seq_len), dtype=torch.long)
    for i, ex in enumerate(examples):
        ids, mask = encode_example(ex, tok)
        if len(ids) > seq_len:
            raise ConfigError(
                f"a {ex.task or 'chat'} example needs {len(ids)} tokens but seq_len is {seq_len}; "
                "raise seq_len"
            )
        tokens[i, : len(ids)] = torch.tensor(ids)
        loss_mask[i, : len(ids)] = torch.tensor(mask)
        attn[i, : len(ids)] = 1
    return Batch(tokens=tokens, loss_mask=loss_mask, attention_mask=attn)


@register_task("chat")
def chat_batch(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
    """A batch of the default mix (copy, reverse, sort, add), loss on completions only."""
    return collate(sample_examples(batch_size, seed, split, DEFAULT_MIX, step), seq_len)
