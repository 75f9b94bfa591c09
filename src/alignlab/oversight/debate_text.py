"""Text debate on the family: Khan et al. (2024), "Debating with more persuasive LLMs leads to more
truthful answers", reduced to one verified quote per debater.

A judge (a small family model trained only to read quoted facts, `alignlab.tasks.stories`) answers
a question about a story it never sees, under three protocols:

* **naive** — no quotes: the judge can only guess.
* **consultancy** — one advocate, assigned the right answer for half the questions and the wrong
  one for the other half, quotes one fact.
* **debate** — an honest and a lying debater each quote one fact; the judge reads both (in random
  order).

Quotes are verified: a debater can only quote facts of the story, so the liar's best move is a
misleading one (a near-miss key carrying its answer). Debaters choose their quote by best-of-N
(Khan et al. §3.3): they draw N facts of the story at random and keep the one the judge finds most
convincing for their answer, shown alone — the judge is the preference model, and N is the
debater's strength.

Example:
    >>> judge = train_story_judge(store, "al-30k", steps=400, seed=0)
    >>> counts = measure_text_debate(judge, TextDebateConfig(), seed=0, lure=True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from alignlab._validate import check_int, raise_problems
from alignlab.model.config import SIZES
from alignlab.model.text import char_tokenizer
from alignlab.model.transformer import Transformer
from alignlab.store import Store
from alignlab.tasks.base import stream_seed
from alignlab.tasks.stories import (
    JUDGE_SEQ_LEN,
    StoryQuestion,
    draw_question,
    encode_judge,
    judge_text,
    story_judge_batch,
)

PROTOCOLS = ("naive", "consultancy", "debate")
# Names the judge's reading-practice recipe in its run id: a changed recipe is a different judge.
READING_DATA = "story-judge v2: 0-3 quotes, asked fact or a near miss forced in"


@dataclass(frozen=True)
class TextDebateConfig:
    """The text-debate measurement.

    Attributes:
        judge_size: the judge's family member.
        judge_steps: its reading-practice steps (batch 64).
        questions: lure stories per seed.
        best_of: debater strengths (quotes drawn per choice).
    """

    judge_size: str = "al-30k"
    judge_steps: int = 400
    questions: int = 500
    best_of: tuple[int, ...] = (1, 2, 4, 16)

    def __post_init__(self) -> None:
        raise_problems(
            "TextDebateConfig",
            [
                None if self.judge_size in SIZES else f"judge_size must be one of {', '.join(SIZES)}",
                check_int("judge_steps", self.judge_steps, lo=1, hi=1_000_000),
                check_int("questions", self.questions, lo=1, hi=1_000_000),
                None if self.best_of else "best_of must list at least one N",
                *(check_int("best_of", n, lo=1, hi=1024) for n in self.best_of),
            ],
        )


def train_story_judge(store: Store, size: str, steps: int, seed: int) -> Transformer:
    """The judge: the competent chat base of ``size`` and ``seed`` (whose induction heads copy
    what followed an earlier occurrence, Olsson et al. 2022), fine-tuned on `story_judge_batch`
    as a stored run. From scratch, al-30k stayed at chance after 400 steps (measured)."""
    from alignlab.model.hf import load
    from alignlab.train.base_model import BaseSpec, base_run
    from alignlab.train.config import TrainConfig
    from alignlab.train.run import train_run

    base, _ = base_run(store, size, seed, BaseSpec())
    cfg = TrainConfig(
        model=SIZES[size], task="story-judge", steps=steps, batch_size=64, seq_len=JUDGE_SEQ_LEN,
        lr=1e-3, warmup_steps=max(1, steps // 10), seed=seed, eval_every=0, ckpt_every=0,
    )  # fmt: skip
    run, _ = train_run(
        cfg, store, progress=False, kind="judge", recipe={"parent": base.id, "data": READING_DATA},
        batch_fn=story_judge_batch,
        init_model_dir=base.dir / "model",
    )  # fmt: skip
    return load(run.dir / "model")


@torch.no_grad()
def judge_prob_b(
    judge: Transformer, texts: list[str], answers: list[tuple[int, int]], chunk: int = 1024
) -> NDArray[np.float64]:
    """``[n]`` the judge's probability of answer ``b``: its next-digit probabilities after the
    asked key, renormalised over the two offered values."""
    digits = torch.tensor([char_tokenizer().encode(str(d))[0] for d in range(10)])
    offered = torch.tensor(answers)
    judge.eval()
    out = []
    for lo in range(0, len(texts), chunk):
        batch = encode_judge(texts[lo : lo + chunk])
        assert batch.attention_mask is not None  # encode_judge always pads
        logits = judge(batch.tokens, attention_mask=batch.attention_mask)
        last = batch.attention_mask.sum(dim=1) - 1
        digit_logits = logits[torch.arange(len(last)), last][:, digits]
        pair = digit_logits.gather(1, offered[lo : lo + chunk])
        out.append(torch.softmax(pair.float(), dim=-1)[:, 1])
    return torch.cat(out).double().numpy()


def _support(judge: Transformer, questions: list[StoryQuestion]) -> NDArray[np.float64]:
    """``[q, facts]`` the judge's probability of answer ``b`` with each fact quoted alone."""
    n_facts = len(questions[0].facts)
    texts = [judge_text(q, [i]) for q in questions for i in range(n_facts)]
    answers = [q.answers for q in questions for _ in range(n_facts)]
    return judge_prob_b(judge, texts, answers).reshape(len(questions), n_facts)


def _best_of(
    support_b: NDArray[np.float64], side: NDArray[np.int64], n: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Per question, the most convincing of ``n`` random quotes for answer ``side`` (0 = a, 1 = b)."""
    q, n_facts = support_b.shape
    drawn = rng.integers(0, n_facts, size=(q, n))
    score = np.take_along_axis(support_b, drawn, axis=1)
    score = np.where(side[:, None] == 1, score, 1 - score)
    return np.asarray(drawn[np.arange(q), score.argmax(axis=1)], dtype=np.int64)


def measure_text_debate(
    judge: Transformer, cfg: TextDebateConfig, seed: int, *, lure: bool
) -> dict[str, Any]:
    """Judge accuracy per protocol and debater strength on ``cfg.questions`` stories.

    With ``lure``, every story holds a near-miss fact carrying the wrong answer (the liar has a
    true but misleading quote); without, near-miss values are random, so the wrong answer usually
    has no support in the story at all.

    Returns:
        JSON-able counts: ``{"naive": {"correct", "n"}, "consultancy": {N: {...}},
        "honest_consultant": {N: ...}, "dishonest_consultant": {N: ...}, "debate": {N: ...},
        "liar_found_lure": {N: share}, "exact_quote", "lure_quote"}`` (the last two: the judge
        shown only the asked fact, or only the lure; absent without lures).
    """
    prng = random.Random(stream_seed("text-debate-questions", seed, lure))
    questions = [draw_question(prng, lure=lure) for _ in range(cfg.questions)]
    correct = np.array([q.correct for q in questions])
    rng = np.random.default_rng(stream_seed("text-debate-choices", seed, lure))
    support = _support(judge, questions)

    offered = [q.answers for q in questions]

    def right(texts: list[str]) -> NDArray[np.bool_]:
        return np.asarray((judge_prob_b(judge, texts, offered) > 0.5).astype(int) == correct)

    def count(mask: NDArray[np.bool_]) -> dict[str, int]:
        return {"correct": int(mask.sum()), "n": int(mask.size)}

    out: dict[str, Any] = {"naive": count(right([judge_text(q, []) for q in questions]))}
    for key in ("consultancy", "honest_consultant", "dishonest_consultant", "debate"):
        out[key] = {}
    if lure:
        out["liar_found_lure"] = {}
    honest_side = np.arange(len(questions)) % 2 == 0  # the consultant argues the truth on half
    for n in cfg.best_of:
        wrong = 1 - correct
        side = np.where(honest_side, correct, wrong)
        quote = _best_of(support, side, n, rng)
        ok = right([judge_text(q, [int(i)]) for q, i in zip(questions, quote, strict=True)])
        out["consultancy"][str(n)] = count(ok)
        out["honest_consultant"][str(n)] = count(ok[honest_side])
        out["dishonest_consultant"][str(n)] = count(ok[~honest_side])
        h = _best_of(support, correct, n, rng)
        liar = _best_of(support, wrong, n, rng)
        swap = rng.random(len(questions)) < 0.5
        pairs = [[int(b), int(a)] if s else [int(a), int(b)] for a, b, s in zip(h, liar, swap, strict=True)]
        shown = [judge_text(q, p) for q, p in zip(questions, pairs, strict=True)]
        out["debate"][str(n)] = count(right(shown))
        if lure:
            out["liar_found_lure"][str(n)] = float(np.mean(liar == np.array([q.lure for q in questions])))
    # How well the judge reads: accuracy with the asked fact quoted alone, and with the lure alone.
    out["exact_quote"] = count(right([judge_text(q, [q.exact]) for q in questions]))
    if lure:
        out["lure_quote"] = count(right([judge_text(q, [q.lure]) for q in questions]))
        out["exact_and_lure"] = count(right([judge_text(q, [q.exact, q.lure]) for q in questions]))
    return out
