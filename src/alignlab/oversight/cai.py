"""Supervised Constitutional AI (Bai et al. 2022, sec. 3): sample, critique, revise, fine-tune.

The starting policy is *helpful-only* (Bai et al. start from a helpful-only RLHF model): a
competent base model fine-tuned on the world of `alignlab.oversight.constitution` to answer every
request, the forbidden ones included (`helpful_only_run`). SL-CAI then

1. samples the policy's response to each of a set of training prompts;
2. runs up to ``rounds`` critique-revise rounds, each under a principle drawn at random (without
   replacement, so ``rounds`` = the number of principles checks each once): the feedback model
   (`alignlab.oversight.feedback`) says whether the current response violates it, and if so the
   response is replaced by its revision (`alignlab.oversight.constitution.revise`: a fixed
   rewrite, the refusal or the policy's own answer with the banned letter masked; the critique
   decides *whether* and *under which principle* to revise, never the rule checker);
3. fine-tunes the policy on the final responses (revised or not, as Bai et al. mix revisions
   with the helpful model's own samples to keep helpfulness).

`measure_policy` is the ground-truth measurement of every arm: harmlessness on forbidden requests,
helpfulness and evasiveness on benign ones, greedy decoding on held-out prompts.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from alignlab.model.config import SIZES
from alignlab.model.transformer import Transformer
from alignlab.oversight.cai_training import finetune, sample_responses
from alignlab.oversight.constitution import (
    BENIGN_KINDS,
    CONSTITUTION,
    FORBIDDEN_KINDS,
    KINDS,
    MAX_PROMPT,
    MAX_RESPONSE,
    Request,
    is_refusal,
    revise,
    sample_requests,
    violates_any,
)
from alignlab.oversight.feedback import Critique, FeedbackModel
from alignlab.store import Run, Store
from alignlab.tasks import Batch, collate, stream_seed
from alignlab.train.config import TrainConfig

#: Sequence length of a policy example: BOS, "User: ", request, "\nAssistant: ", response, EOS.
POLICY_SEQ_LEN = 64
#: Tokens a policy may generate: the longest response and its EOS.
MAX_NEW = MAX_RESPONSE + 1
assert 1 + 6 + MAX_PROMPT + 12 + MAX_NEW <= POLICY_SEQ_LEN


def helpful_only_config(size: str, seed: int, steps: int, lr: float) -> TrainConfig:
    """The fine-tune that turns a base model into the helpful-only policy of the world."""
    return TrainConfig(
        model=SIZES[size],
        task="cai:helpful-only",
        steps=steps,
        batch_size=32,
        seq_len=POLICY_SEQ_LEN,
        lr=lr,
        warmup_steps=min(50, steps // 10),
        eval_every=0,
        ckpt_every=max(steps, 1),
        seed=seed,
        threads=1,
    )


def world_batch_fn(kinds: Sequence[str] = KINDS) -> Any:
    """Batches of helpful-only examples (forbidden requests answered compliantly)."""
    kinds = tuple(kinds)

    def make(batch_size: int, seq_len: int, seed: int, step: int, split: str) -> Batch:
        return collate([r.example() for r in sample_requests(batch_size, seed, split, step, kinds)], seq_len)

    return make


def helpful_only_run(
    store: Store, base: Run, size: str, seed: int, steps: int, lr: float, kinds: Sequence[str] = KINDS
) -> Run:
    """Fine-tune the base model ``base`` into the helpful-only policy (a stored, reused run)."""
    from alignlab.train.run import train_run

    cfg = helpful_only_config(size, seed, steps, lr)
    recipe = {"cai_world": {"kinds": list(kinds)}, "init": base.id}
    run, _ = train_run(
        cfg,
        store,
        progress=False,
        kind="cai-policy",
        recipe=recipe,
        batch_fn=world_batch_fn(kinds),
        init_model_dir=base.dir / "model",
    )
    return run


# ---- measurement (ground truth) ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyCounts:
    """Ground-truth counts of a policy on held-out requests (greedy decoding).

    Attributes:
        harmless: (forbidden requests answered without violating any principle, forbidden requests).
        helpful: (benign requests answered correctly, benign requests).
        evasive: (benign requests refused, benign requests).
        refused: (forbidden requests refused, forbidden requests): harmless by refusal, the rest
            of the harmless ones are defusals (a masked or literal answer).
        by_kind: kind -> (successes, n): harmless for forbidden kinds, correct for benign ones.
    """

    harmless: tuple[int, int]
    helpful: tuple[int, int]
    evasive: tuple[int, int]
    refused: tuple[int, int]
    by_kind: dict[str, tuple[int, int]]

    def rates(self) -> dict[str, float]:
        counts = {
            "harmless": self.harmless,
            "helpful": self.helpful,
            "evasive": self.evasive,
            "refused": self.refused,
        }
        return {k: s / n if n else float("nan") for k, (s, n) in counts.items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure_policy(
    model: Transformer, n_per_kind: int, seed: int, kinds: Sequence[str] = KINDS, split: str = "cai-metric"
) -> PolicyCounts:
    """Harmlessness, helpfulness and evasiveness of ``model`` on ``n_per_kind`` held-out requests
    of each kind, judged by the rule checker."""
    reqs = [r for k in kinds for r in sample_requests(n_per_kind, seed, split, 0, (k,))]
    outs = sample_responses(model, [r.prompt for r in reqs], MAX_NEW, seed, temperature=0.0)
    by_kind: dict[str, list[int]] = {k: [0, 0] for k in kinds}
    harmless, helpful, evasive, refused = [0, 0], [0, 0], [0, 0], [0, 0]
    for r, o in zip(reqs, outs, strict=True):
        if r.forbidden:
            ok = not violates_any(r.prompt, o)
            harmless[0] += ok
            harmless[1] += 1
            refused[0] += is_refusal(o)
            refused[1] += 1
        else:
            ok = o == r.answer
            helpful[0] += ok
            helpful[1] += 1
            evasive[0] += is_refusal(o)
            evasive[1] += 1
        by_kind[r.kind][0] += ok
        by_kind[r.kind][1] += 1
    return PolicyCounts(
        (harmless[0], harmless[1]),
        (helpful[0], helpful[1]),
        (evasive[0], evasive[1]),
        (refused[0], refused[1]),
        {k: (v[0], v[1]) for k, v in by_kind.items()},
    )


# ---- SL-CAI -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Revision:
    """One sampled response through the critique-revise rounds.

    Attributes:
        prompt: the request.
        kind: its kind (kept for analysis only; the pipeline never reads it).
        original: the policy's sample.
        final: the response after the last round.
        flagged: the principles whose critique asked for a revision, in order.
    """

    prompt: str
    kind: str
    original: str
    final: str
    flagged: tuple[str, ...]


def critique_revise(
    fm: FeedbackModel, requests: Sequence[Request], responses: Sequence[str], rounds: int, seed: int
) -> list[Revision]:
    """Critique each response under ``rounds`` principles drawn at random without replacement,
    revising whenever the feedback model says ``p(violated) > 0.5``."""
    rng = random.Random(stream_seed("cai-rounds", seed))
    k = min(rounds, len(CONSTITUTION))
    orders = [rng.sample([p.name for p in CONSTITUTION], k) for _ in requests]
    current = list(responses)
    flagged: list[list[str]] = [[] for _ in requests]
    for r in range(k):
        triples = [Critique(o[r], q.prompt, c) for o, q, c in zip(orders, requests, current, strict=True)]
        bad = (fm.logits(triples) > 0).tolist()
        for i, b in enumerate(bad):
            if b:
                current[i] = revise(orders[i][r], current[i])
                flagged[i].append(orders[i][r])
    return [
        Revision(q.prompt, q.kind, o, c, tuple(f))
        for q, o, c, f in zip(requests, responses, current, flagged, strict=True)
    ]


def sl_cai(
    policy: Transformer,
    fm: FeedbackModel,
    *,
    n_prompts: int,
    rounds: int,
    steps: int,
    lr: float,
    seed: int,
    kinds: Sequence[str] = KINDS,
    temperature: float = 1.0,
    batch_size: int = 32,
) -> tuple[Transformer, list[Revision]]:
    """SL-CAI: the policy fine-tuned on its own critiqued and revised samples.

    Returns:
        The fine-tuned copy of ``policy`` and the revision records (the DPO pairs of
        `alignlab.oversight.rlaif.revision_pairs`).
    """
    reqs = sample_requests(n_prompts, seed, "sl-cai", 0, kinds)
    samples = sample_responses(policy, [r.prompt for r in reqs], MAX_NEW, seed, temperature=temperature)
    revisions = critique_revise(fm, reqs, samples, rounds, seed)
    data = [r.example(v.final) for r, v in zip(reqs, revisions, strict=True)]
    model = finetune(
        policy, data, steps=steps, lr=lr, batch_size=batch_size, seq_len=POLICY_SEQ_LEN, seed=seed
    )
    return model, revisions


def revision_stats(revisions: Sequence[Revision]) -> dict[str, float]:
    """What the critiques did, judged by the rule checker (for the report, never for training):
    the share of originals that violated, of revisions made, and of final responses violating."""
    n = max(1, len(revisions))
    forb = [v for v in revisions if v.kind in FORBIDDEN_KINDS]
    benign = [v for v in revisions if v.kind in BENIGN_KINDS]
    return {
        "original_violating": sum(violates_any(v.prompt, v.original) for v in revisions) / n,
        "revised": sum(bool(v.flagged) for v in revisions) / n,
        "final_violating": sum(violates_any(v.prompt, v.final) for v in revisions) / n,
        "forbidden_revised": sum(bool(v.flagged) for v in forb) / max(1, len(forb)),
        "benign_revised": sum(bool(v.flagged) for v in benign) / max(1, len(benign)),
    }
