"""Deterministic, seeded synthetic tasks: induction sequences and the assistant chat format."""

from alignlab.tasks.base import TASKS, Batch, get_task, make_batch, register_task, stream_seed
from alignlab.tasks.chat import (
    CHAT_TASKS,
    DEFAULT_MIX,
    Example,
    chat_task,
    collate,
    encode_example,
    format_prompt,
    prompt_ids,
    sample_examples,
    substring_span,
)
from alignlab.tasks.induction import induction_batch, repeat_halves

__all__ = [
    "CHAT_TASKS",
    "DEFAULT_MIX",
    "TASKS",
    "Batch",
    "Example",
    "chat_task",
    "collate",
    "encode_example",
    "format_prompt",
    "get_task",
    "induction_batch",
    "make_batch",
    "prompt_ids",
    "register_task",
    "repeat_halves",
    "sample_examples",
    "stream_seed",
    "substring_span",
]
