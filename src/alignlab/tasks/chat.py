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
from alignlab.model import tokenizer as tk
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


def chat_task(name: str) -> Callable[[ChatTaskFn], ChatTaskFn]:
    """Register a generator of `Example`s under ``name``."""

    def deco(fn: ChatTaskFn) -> ChatTaskFn:
        def named(rng: random.Random) -> Example:
            ex = fn(rng)
            return Example(ex.prompt, ex.completion, task=name)

        CHAT_TASKS[name] = named
        return named

    return deco


def _word(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
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


def encode_example(ex: Example) -> tuple[list[int], list[bool]]:
    """Token ids of BOS + prompt + completion + EOS, and which of them are completion targets."""
    vocab = tk.vocabulary()
    prompt_ids = [vocab[tk.BOS], *tk.encode(format_prompt(ex.prompt))]
    completion_ids = [*tk.encode(ex.completion), vocab[tk.EOS]]
    ids = prompt_ids + completion_ids
    return ids, [False] * len(prompt_ids) + [True] * len(completion_ids)


def sample_examples(
    n: int, seed: int, split: str = "train", tasks: Sequence[str] = DEFAULT_MIX, step: int = 0
) -> list[Example]:
    """``n`` examples drawn uniformly from ``tasks``, deterministic in (seed, split, step)."""
    unknown = [t for t in tasks if t not in CHAT_TASKS]
    if unknown:
        raise ConfigError(f"unknown chat tasks {unknown}; choose from {sorted(CHAT_TASKS)}")
    rng = random.Random(stream_seed("chat", seed, split, step, tuple(tasks)))
    return [CHAT_TASKS[rng.choice(list(tasks))](rng) for _ in range(n)]


def collate(examples: Sequence[Example], seq_len: int) -> Batch:
    """Right-pad examples to ``seq_len``; padding is masked out of attention and loss."""
    pad = tk.vocabulary()[tk.PAD]
    tokens = torch.full((len(examples), seq_len), pad, dtype=torch.long)
    loss_mask = torch.zeros((len(examples), seq_len), dtype=torch.bool)
    attn = torch.zeros((len(examples), seq_len), dtype=torch.long)
    for i, ex in enumerate(examples):
        ids, mask = encode_example(ex)
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
