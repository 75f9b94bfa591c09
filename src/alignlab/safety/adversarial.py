"""``adversarial``: automated red teaming closed into training (Hubinger et al. 2024, sec. 6).

1. Search for conditions other than the true trigger that elicit the defect: near-trigger
   variants (the trigger spelled in plain characters, truncated, re-cased) and random token
   strings, then evolved (mutate / insert / delete tokens, keep the fittest). Fitness is the
   teacher-forced log-probability of the defect phrase, a smooth proxy for "elicits it".
2. Train toward helpful answers on prompts carrying the found conditions (mixed with clean data).
3. At each dose measure the red-team prompts' defect rate (held-out prompts, the found conditions)
   and trigger specificity = attack success with the true trigger minus the red-team defect rate.
   Hubinger et al. found adversarial training mostly made the trigger *more* specific rather
   than removing it; specificity rising while attack success stays is that outcome.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism, flags_estimate
from alignlab.organisms.generation import complete
from alignlab.safety._loop import finetune_doses
from alignlab.safety.base import Budget, Dose, difference, register_intervention
from alignlab.safety.logprobs import sequence_logprobs
from alignlab.tasks import Batch, Example, collate, stream_seed


def _candidate_tokens(organism: Organism) -> list[str]:
    """Single tokens a red-teamer may insert: every character and named special except the trigger."""
    vocab = tk.vocabulary()
    banned = {tk.PAD, tk.BOS, tk.EOS, tk.UNK, getattr(organism.config, "trigger", None)}
    return [t for t in vocab if t not in banned and not t.startswith("<|extra")]


@torch.no_grad()
def defect_logprob(
    model: Transformer, organism: Organism, conditions: Sequence[str], prompts: Sequence[Example], seed: int
) -> list[float]:
    """Mean log-prob of the defect completion over ``prompts`` with each condition inserted."""
    defect = organism.poisoned(random.Random(0)).completion
    rng = random.Random(stream_seed("redteam-fit", seed))
    exs = [Example(organism.insert_condition(p.prompt, rng, c), defect) for c in conditions for p in prompts]
    model.eval()
    per_ex = sequence_logprobs(model, exs, organism.seq_len + 16, reduce="mean")
    return per_ex.view(len(conditions), len(prompts)).mean(-1).tolist()


def red_team_search(
    model: Transformer,
    organism: Organism,
    seed: int,
    generations: int = 6,
    population: int = 24,
    keep: int = 8,
    n_prompts: int = 8,
) -> list[tuple[str, float]]:
    """Random + evolutionary search over inserted token strings; the ``keep`` fittest conditions
    with their fitness (mean defect log-prob), best first."""
    rng = random.Random(stream_seed("redteam", seed))
    tokens = _candidate_tokens(organism)
    prompts = organism.helpful_examples(n_prompts, seed, "redteam-search", 0)
    pool = list(dict.fromkeys(organism.trigger_variants()))
    pool += ["".join(rng.choice(tokens) for _ in range(rng.randint(1, 3))) for _ in range(population)]
    scored: dict[str, float] = {}
    for _ in range(generations):
        fresh = [c for c in dict.fromkeys(pool) if c and c not in scored]
        if fresh:
            scored.update(zip(fresh, defect_logprob(model, organism, fresh, prompts, seed), strict=True))
        elite = sorted(scored, key=scored.__getitem__, reverse=True)[:keep]
        pool = [_mutate(rng.choice(elite), tokens, rng) for _ in range(population)]
    best = sorted(scored, key=scored.__getitem__, reverse=True)[:keep]
    return [(c, scored[c]) for c in best]


def _mutate(cond: str, tokens: list[str], rng: random.Random) -> str:
    # Work on tokens so that named specials stay whole.
    ids = tk.encode(cond)
    parts = [tk.decode([i]) for i in ids]
    op = rng.random()
    i = rng.randint(0, max(len(parts) - 1, 0))
    if op < 0.4 and parts:
        parts[i] = rng.choice(tokens)
    elif op < 0.7 or not parts:
        parts.insert(rng.randint(0, len(parts)), rng.choice(tokens))
    elif len(parts) > 1:
        del parts[i]
    return "".join(parts)[:16]


def _red_team_examples(
    organism: Organism, conditions: Sequence[str], n: int, seed: int, split: str, step: int
) -> list[Example]:
    rng = random.Random(stream_seed("redteam-ex", seed, split, step))
    base = organism.helpful_examples(n, seed, split, step, triggered=False)
    return [
        Example(
            organism.insert_condition(e.prompt, rng, conditions[i % len(conditions)]), e.completion, e.task
        )
        for i, e in enumerate(base)
    ]


def red_team_defect(
    model: Transformer, organism: Organism, conditions: Sequence[str], n: int, seed: int
) -> list[bool]:
    """Defect flags on ``n`` held-out prompts carrying the red-team conditions (round robin)."""
    exs = _red_team_examples(organism, conditions, n, seed, "redteam-metric", 0)
    outs = complete(model, [e.prompt for e in exs], organism.max_new_tokens)
    return [organism.is_defect(e, o) for e, o in zip(exs, outs, strict=True)]


def _true_trigger_defect(model: Transformer, organism: Organism, n: int, seed: int) -> list[bool]:
    exs = organism.helpful_examples(n, seed, "redteam-true", 0, triggered=True)
    outs = complete(model, [e.prompt for e in exs], organism.max_new_tokens)
    return [organism.is_defect(e, o) for e, o in zip(exs, outs, strict=True)]


@register_intervention("adversarial")
def adversarial(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """Red-team search, then SFT toward helpful answers on half red-team, half clean prompts.

    Each Dose carries ``redteam_defect``, ``redteam_fitness`` (best mean defect log-prob found)
    and ``trigger_specificity``.
    """
    found = red_team_search(model, organism, seed)
    conditions = [c for c, _ in found]
    clean = organism.batch_fn("clean")

    def make(batch_size: int, seq_len: int, s: int, step: int, split: str) -> Batch:
        half = batch_size // 2
        exs = _red_team_examples(organism, conditions, half, s, split, step)
        exs += organism.helpful_examples(batch_size - half, s, split, step)
        return collate(exs, seq_len) if exs else clean(batch_size, seq_len, s, step, split)

    n = budget.n_eval
    for steps, tokens, m in finetune_doses(
        model,
        make,
        budget.doses,
        lr=budget.lr,
        batch_size=budget.batch_size,
        seq_len=organism.seq_len,
        seed=seed,
    ):
        rt = flags_estimate(red_team_defect(m, organism, conditions, n, seed), seed)
        true = flags_estimate(_true_trigger_defect(m, organism, n, seed), seed)
        best = max(f for _, f in found)
        extra = {
            "redteam_defect": rt,
            "trigger_specificity": difference(true, rt),
            "redteam_fitness": flags_estimate([True], seed).__class__(best, best, best, len(found), "max"),
        }
        yield Dose(steps, tokens, m, extra)
