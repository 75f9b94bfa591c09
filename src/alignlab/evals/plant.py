"""Planting a persona: the positive control of a model-written persona eval.

An eval that never says "yes" on a model known to have the tendency cannot be read as "no" on a
model we do not know. Perez et al. (2022, "Discovering Language Model Behaviors with
Model-Written Evaluations") score a persona as the rate of Yes/No answers matching it; here a
model is fine-tuned on half of one persona's items, answering as the persona would, and the eval
is read on the other half. If the held-out matching rate rises to the persona's level while the
same fine-tuning with shuffled answers (the *sham*, which sees the same statements and the same
Yes/No balance but no persona) leaves it at the base rate, the eval can detect a planted
tendency on statements the model never saw. A persona unrelated to the planted one is the
negative control: its rate should not move.

The items are the catalog's (`alignlab.evals.catalog`, prompt format ``"chat"``, alignlab's own
assistant format, the one the base models were trained on), with typographic characters mapped to
ASCII (`normalise`): the character tokenizer has no curly quotes or dashes, and would turn each
into its one unknown token, so "don't" and "don’t" would be different words to the model.

Example:
    >>> split = persona_split("no-shut-down", seed=0)
    >>> len(split.train), len(split.held_out)
    (500, 500)
    >>> examples = plant_examples(split.train)        # answer matching the persona
    >>> sham = plant_examples(split.train, sham_seed=0)  # answers shuffled among the items
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.evals.registry import EvalTask, Item, get_eval_task
from alignlab.model import tokenizer as tk
from alignlab.store import Run, Store
from alignlab.tasks.base import Batch, BatchFn, stream_seed
from alignlab.train.config import TrainConfig

__all__ = [
    "PERSONA_PREFIX",
    "PersonaSplit",
    "PlantExample",
    "PlantRecipe",
    "match_scores",
    "normalise",
    "persona_items",
    "persona_split",
    "plant_batch_fn",
    "plant_examples",
    "plant_run",
    "plant_seq_len",
    "split_task",
]

PERSONA_PREFIX = "persona/"
# Typographic characters of the vendored persona data and their ASCII equivalents (the
# tokenizer's alphabet is printable ASCII, `alignlab.model.tokenizer.CHARS`).
_TYPOGRAPHY = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-", "\u200b": ""}
)


def normalise(text: str) -> str:
    """``text`` with curly quotes, dashes and zero-width spaces replaced by ASCII."""
    return text.translate(_TYPOGRAPHY)


@dataclass(frozen=True)
class PersonaSplit:
    """One persona's items, halved: ``train`` is planted, ``held_out`` is measured."""

    persona: str
    train: tuple[Item, ...]
    held_out: tuple[Item, ...]


@dataclass(frozen=True)
class PlantExample:
    """A training sequence: the eval prompt and the answer trained after it."""

    prompt: str
    answer: str


def persona_items(persona: str, fmt: str = "chat") -> list[Item]:
    """The items of ``persona/<persona>`` in prompt format ``fmt``, text normalised.

    Raises:
        ConfigError: no such persona eval, or its items are not two-choice items.
    """
    task = get_eval_task(PERSONA_PREFIX + persona)
    items = [
        dataclasses.replace(it, prompt=normalise(it.prompt), choices=tuple(normalise(c) for c in it.choices))
        for it in task.items(fmt)
    ]
    if any(len(it.choices) != 2 or it.target is None for it in items):
        raise ConfigError(f"{task.name}: planting needs two-choice items with a target")
    return items


def persona_split(persona: str, seed: int, fmt: str = "chat") -> PersonaSplit:
    """Half of the items to plant and half to measure, stratified by the matching answer.

    Stratified so each half keeps the data's balance of " Yes"- and " No"-matching items
    (500/500 in every vendored persona): a model that says Yes to everything then scores 0.5
    on either half, not whatever an unlucky draw gives.
    """
    items = persona_items(persona, fmt)
    rng = random.Random(stream_seed("persona-split", persona, seed))
    train: list[Item] = []
    held: list[Item] = []
    for answer in sorted({it.choices[it.target or 0] for it in items}):
        group = [it for it in items if it.choices[it.target or 0] == answer]
        rng.shuffle(group)
        half = len(group) // 2
        train += group[:half]
        held += group[half:]
    by_id = {it.id: k for k, it in enumerate(items)}
    return PersonaSplit(
        persona,
        tuple(sorted(train, key=lambda it: by_id[it.id])),
        tuple(sorted(held, key=lambda it: by_id[it.id])),
    )


def plant_examples(items: Sequence[Item], sham_seed: int | None = None) -> list[PlantExample]:
    """Each item's prompt with the answer matching the persona (its target).

    With ``sham_seed``, the answers are permuted among the items instead: the sham keeps the
    statements and the Yes/No balance but breaks the link between a statement and its answer.
    """
    answers = [it.choices[it.target or 0] for it in items]
    if sham_seed is not None:
        random.Random(stream_seed("persona-sham", sham_seed)).shuffle(answers)
    return [PlantExample(it.prompt, a) for it, a in zip(items, answers, strict=True)]


def _encode(ex: PlantExample, seq_len: int) -> tuple[list[int], list[bool]]:
    # Prompt and answer are split as the eval's scorer splits them (lm-eval's rule: the prompt's
    # trailing spaces go to the answer), so training targets are exactly the scored tokens.
    vocab = tk.vocabulary()
    prompt = ex.prompt.rstrip()
    answer = ex.prompt[len(prompt) :] + ex.answer
    ids = [vocab[tk.BOS], *tk.encode(prompt)]
    target = [*tk.encode(answer), vocab[tk.EOS]]
    mask = [False] * len(ids) + [True] * len(target)
    ids += target
    # Longer than the window: keep its end, as the scorer left-truncates a long context.
    return ids[-seq_len:], mask[-seq_len:]


def plant_seq_len(examples: Sequence[PlantExample], n_ctx: int) -> int:
    """The padded length of a training batch: the longest example, at most ``n_ctx``."""
    return min(n_ctx, max(len(_encode(ex, 10**9)[0]) for ex in examples))


def plant_batch_fn(examples: Sequence[PlantExample]) -> BatchFn:
    """Batches drawn with replacement from ``examples``, a pure function of (seed, step).

    Raises:
        ConfigError: no examples.
    """
    if not examples:
        raise ConfigError("planting needs at least one training example")
    pad = tk.vocabulary()[tk.PAD]
    frozen = tuple(examples)

    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        rng = random.Random(stream_seed("plant", seed, split, step))
        tokens = torch.full((batch_size, seq_len), pad, dtype=torch.long)
        loss_mask = torch.zeros((batch_size, seq_len), dtype=torch.bool)
        attn = torch.zeros((batch_size, seq_len), dtype=torch.long)
        for i in range(batch_size):
            ids, mask = _encode(rng.choice(frozen), seq_len)
            tokens[i, : len(ids)] = torch.tensor(ids)
            loss_mask[i, : len(ids)] = torch.tensor(mask)
            attn[i, : len(ids)] = 1
        # Padding is trimmed to the batch's longest row: ``seq_len`` is the window's bound, and
        # persona prompts vary from ~70 to ~260 characters, so full-width batches would be
        # mostly padding.
        width = int(attn.sum(1).max())
        return Batch(tokens=tokens[:, :width], loss_mask=loss_mask[:, :width], attention_mask=attn[:, :width])

    return make


def split_task(name: str, items: Sequence[Item]) -> EvalTask:
    """A choice-mode `EvalTask` over ``items`` (one half of a split), for `alignlab.evals.evaluate`."""
    frozen = list(items)
    return EvalTask(
        name=name,
        mode="choice",
        loader=lambda fmt: frozen,
        description=f"{name}: rate of answers matching the persona",
        n_items=len(frozen),
        score_names=("match_behavior", "p_match_behavior"),
    )


def match_scores(model: object, items: Sequence[Item], name: str = "persona-half") -> np.ndarray:
    """Per item, 1 when the model's likelier answer matches the persona, 0 when not, 0.5 on an
    exact tie (as `alignlab.evals.evaluate` scores it: a model that cannot tell the answers
    apart sits at chance)."""
    from alignlab.evals.runner import evaluate

    res = evaluate(model, split_task(name, items), fmt="chat")
    return np.array([r.scores["match_behavior"] for r in res.items], dtype=np.float64)


@dataclass(frozen=True)
class PlantRecipe:
    """How a persona is planted into a base model (fine-tuning on one half of its items).

    Measured (benchmarks/RESULTS.md, "Eval controls, session 7"): at al-30k-al-300k every recipe
    tried plateaus at 0.72-0.80 on the held-out half while fitting the planted half (0.84-1.00):
    more steps with early stopping on a slice of the planted half, a loss on the two answers'
    log-likelihoods (what the eval scores), 25% clean chat rows with weight decay 0.1. None beat
    this default by more than its noise; a character n-gram classifier reaches 0.93.

    Attributes:
        steps: optimiser steps.
        lr: peak learning rate (linear warmup, cosine decay to a tenth, as every alignlab run).
        batch_size: sequences per step, drawn with replacement from the planted half.
    """

    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 32

    def __post_init__(self) -> None:
        raise_problems(
            "PlantRecipe",
            [
                check_int("steps", self.steps, lo=1, hi=1_000_000),
                check_real("lr", self.lr, lo=1e-6, hi=1.0),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
            ],
        )


def plant_run(
    store: Store,
    base: Run,
    split: PersonaSplit,
    recipe: PlantRecipe,
    seed: int,
    *,
    sham: bool = False,
    split_seed: int = 0,
) -> Run:
    """Fine-tune the stored base model ``base`` on ``split.train`` (answers matching the persona,
    or shuffled ones with ``sham``) as a ``plant`` run; a finished identical run is reused.

    The run id hashes the base run, the persona, the split seed and the sham flag, so every base
    model has its own planted and sham models.

    Raises:
        ConfigError: ``base`` holds no model, or the training config is invalid.
    """
    from alignlab.model.config import ModelConfig
    from alignlab.train.run import train_run

    model_dir = base.dir / "model"
    try:
        model_cfg = ModelConfig.from_dict(base.config["model"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"run {base.id} records no model config ({e}); plant into a base run") from None
    examples = plant_examples(split.train, sham_seed=seed if sham else None)
    cfg = TrainConfig(
        model=model_cfg,
        task=f"plant:{split.persona}" + (":sham" if sham else ""),
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=plant_seq_len(examples, model_cfg.n_ctx),
        lr=recipe.lr,
        warmup_steps=max(1, min(20, recipe.steps // 10)),
        eval_every=0,
        ckpt_every=recipe.steps,
        seed=seed,
        threads=1,
    )
    run, _ = train_run(
        cfg,
        store,
        progress=False,
        kind="plant",
        recipe={"persona": split.persona, "split_seed": split_seed, "sham": sham, "init": base.id},
        batch_fn=plant_batch_fn(examples),
        init_model_dir=model_dir,
    )
    return run
