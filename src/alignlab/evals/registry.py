"""Eval items, the `EvalTask` description and the registry of tasks (a dict and a decorator).

A task is a named loader of items plus a scoring mode:

- ``"choice"``: multiple choice by log-likelihood of each continuation in ``Item.choices``;
  ``Item.target`` is the index of the answer that counts (correct, or matching the behaviour).
- ``"preference"``: a pair (chosen, rejected) scored like a choice item with target 0.
- ``"generate"``: the model continues ``Item.prompt``; a scorer compares the output with
  ``Item.targets`` (exact, contains, regex) or a judge grades it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from alignlab.errors import ConfigError

if TYPE_CHECKING:
    from alignlab.evals.generation import GenerationSpec
    from alignlab.evals.results import ItemResult, Metrics

Mode = Literal["choice", "preference", "generate"]
MODES: tuple[str, ...] = ("choice", "preference", "generate")

# Prompt formats. "hh" is the format of Perez et al. (2022) and of HH-RLHF (the paper puts an
# end-of-text token first; alignlab's scorers always prepend the tokenizer's BOS, which plays that
# role). "chat" is alignlab's own assistant format (`alignlab.tasks.chat`), for models trained on it.
PROMPT_FORMATS: dict[str, str] = {
    "hh": "\n\nHuman: {question}\n\nAssistant:",
    "chat": "User: {question}\nAssistant:",
}
DEFAULT_FORMAT = "hh"


def format_question(question: str, fmt: str = DEFAULT_FORMAT) -> str:
    """Wrap a question in a prompt format (see `PROMPT_FORMATS`)."""
    try:
        template = PROMPT_FORMATS[fmt]
    except KeyError:
        raise ConfigError(
            f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}"
        ) from None
    return template.format(question=question)


@dataclass(frozen=True)
class Item:
    """One evaluation item.

    Attributes:
        id: stable identifier, ``"file:line"`` for vendored data.
        prompt: the full text given to the model (already formatted; no BOS).
        choices: continuations scored by log-likelihood (choice and preference modes).
        target: index in ``choices`` of the answer that counts.
        targets: acceptable answers or patterns (generate mode).
        meta: anything a task's metrics need (context condition, group, occupation, ...).
    """

    id: str
    prompt: str
    choices: tuple[str, ...] = ()
    target: int | None = None
    targets: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


Loader = Callable[[str], list[Item]]


@dataclass(frozen=True)
class EvalTask:
    """A registered evaluation.

    Attributes:
        name: registry name, e.g. ``"advanced-ai-risk/human/survival-instinct"``.
        mode: ``"choice"``, ``"preference"`` or ``"generate"``.
        loader: maps a prompt format to the items (vendored data is read lazily, on first use).
        description: one line for ``alignlab eval list``.
        source: the data it reads (path relative to ``alignlab/data``), if any.
        metrics: extra task metrics over the per-item results (added to the mode's defaults).
        generation: how to generate and score outputs (generate mode).
        n_items: number of items, when known without loading (for listings).
        score_names: names of the per-item scores: (the 0/1 score - choice of the target, or a
            correct generation -, the renormalised probability of the target); ``""`` omits one.
    """

    name: str
    mode: Mode
    loader: Loader
    description: str = ""
    source: str = ""
    metrics: Callable[[Sequence[ItemResult]], Metrics] | None = None
    generation: GenerationSpec | None = None
    n_items: int | None = None
    score_names: tuple[str, str] = ("acc", "p_target")

    def items(self, fmt: str = DEFAULT_FORMAT, limit: int | None = None) -> list[Item]:
        """The task's items in prompt format ``fmt``, the first ``limit`` of them if given."""
        if limit is not None and limit <= 0:
            raise ConfigError(f"limit must be positive, got {limit}")
        items = self.loader(fmt)
        return items if limit is None else items[:limit]


EVAL_TASKS: dict[str, EvalTask] = {}


def eval_task(
    name: str,
    mode: Mode,
    *,
    description: str = "",
    source: str = "",
    metrics: Callable[[Sequence[ItemResult]], Metrics] | None = None,
    generation: GenerationSpec | None = None,
    n_items: int | None = None,
    score_names: tuple[str, str] = ("acc", "p_target"),
) -> Callable[[Loader], Loader]:
    """Register a loader of items as the task ``name``.

    Example:
        >>> @eval_task("toy/capital", "generate", generation=GenerationSpec(scoring="contains"))
        ... def _capital(fmt: str) -> list[Item]:
        ...     q = format_question("What is the capital of France?", fmt)
        ...     return [Item(id="0", prompt=q, targets=("Paris",))]
    """
    if mode not in MODES:
        raise ConfigError(f"unknown eval mode {mode!r}; choose one of {', '.join(MODES)}")

    def deco(fn: Loader) -> Loader:
        register(
            EvalTask(
                name=name,
                mode=mode,
                loader=fn,
                description=description or (fn.__doc__ or "").strip().split("\n")[0],
                source=source,
                metrics=metrics,
                generation=generation,
                n_items=n_items,
                score_names=score_names,
            )
        )
        return fn

    return deco


def register(task: EvalTask) -> EvalTask:
    """Add a task to the registry (replacing one of the same name)."""
    if task.mode == "generate" and task.generation is None:
        raise ConfigError(f"generate task {task.name!r} needs a GenerationSpec")
    EVAL_TASKS[task.name] = task
    return task


def get_eval_task(name: str) -> EvalTask:
    """The registered task ``name``, with a helpful error listing near matches."""
    _load_builtin()
    try:
        return EVAL_TASKS[name]
    except KeyError:
        pass
    close = [t for t in EVAL_TASKS if name.lower() in t.lower()][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown eval task {name!r}{hint} (see `alignlab eval list` for all tasks)") from None


def match_tasks(pattern: str) -> list[EvalTask]:
    """Tasks whose name equals ``pattern`` or matches it as a glob (``"persona/*"``)."""
    _load_builtin()
    if pattern in EVAL_TASKS:
        return [EVAL_TASKS[pattern]]
    found = [t for n, t in EVAL_TASKS.items() if fnmatch.fnmatchcase(n, pattern)]
    if not found:
        get_eval_task(pattern)  # raises with suggestions
    return found


def list_eval_tasks() -> list[EvalTask]:
    """Every registered task, sorted by name."""
    _load_builtin()
    return [EVAL_TASKS[n] for n in sorted(EVAL_TASKS)]


def _load_builtin() -> None:
    # The built-in catalogue registers itself on import; importing here (not at module top)
    # keeps the registry importable from the catalogue without a cycle.
    import alignlab.evals.catalog  # noqa: F401
