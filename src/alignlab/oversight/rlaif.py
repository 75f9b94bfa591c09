"""RL from AI feedback (Bai et al. 2022, sec. 4), its ground-truth twin, and DPO on revisions.

RL-CAI: the SL-CAI policy samples two responses per prompt; the feedback model judges both under a
principle drawn at random and its probabilities become a soft preference label (`ai_labels`); a
preference model is fitted to those labels plus ground-truth *helpfulness* labels
(`helpfulness_labels`: the correct answer preferred, as Bai et al. keep human helpfulness data);
the policy is then trained with RLOO against it, with a KL penalty to the start held at a target
by Ziegler et al.'s (2019) adaptive controller (`alignlab.safety.rl`).

The ground-truth arm (`gt_labels`) is the same pipeline with the rule checker labelling the same
number of pairs: RLHF on "human" harmlessness labels at equal label budget. It starts from the same
SL-CAI policy: a helpful-only policy never samples a refusal (0 of 400 samples at temperature 1,
measured on al-100k), so RL from it could not find one whatever its labels.

DPO (Rafailov et al. 2023) on (revision, original) pairs is the alignment-handbook recipe's second
phase after SFT on revisions; it gets the same helpfulness pairs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from alignlab.model.transformer import Transformer
from alignlab.oversight.cai import MAX_NEW, POLICY_SEQ_LEN, Revision
from alignlab.oversight.cai_training import sample_responses, trimmed_batch
from alignlab.oversight.constitution import (
    BENIGN_KINDS,
    CONSTITUTION,
    KINDS,
    REFUSAL,
    Request,
    near_miss_answer,
    sample_requests,
    violates_any,
)
from alignlab.oversight.feedback import Critique, FeedbackModel
from alignlab.safety._loop import WARMUP, make_adamw
from alignlab.safety.dpo import BETA, dpo_loss
from alignlab.safety.logprobs import sequence_logprobs
from alignlab.safety.reward import LM_WEIGHT, RewardModel
from alignlab.safety.rl import (
    LR_SCALE,
    PROMPTS_PER_STEP,
    SAMPLES_PER_PROMPT,
    AdaptiveKL,
    policy_gradient_step,
    rloo_advantages,
)
from alignlab.safety.rl import _completion_logprobs as completion_logprobs
from alignlab.safety.rl import _sample as sample_with_tokens
from alignlab.tasks import Example, stream_seed
from alignlab.train.loop import warmup_lr

#: Sequence length of a scored response (prompt and a sampled response of up to `MAX_NEW` tokens).
PAIR_SEQ_LEN = POLICY_SEQ_LEN


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two responses to one prompt and the probability ``q`` that ``a`` is preferred."""

    prompt: str
    a: str
    b: str
    q: float

    def strict(self) -> bool:
        return self.q != 0.5


def sample_pairs(
    policy: Transformer, n: int, seed: int, split: str, kinds: Sequence[str] = KINDS
) -> tuple[list[Request], list[str], list[str]]:
    """``n`` training prompts with two responses each sampled from ``policy`` at temperature 1."""
    reqs = sample_requests(n, seed, split, 0, kinds)
    prompts = [r.prompt for r in reqs]
    a = sample_responses(policy, prompts, MAX_NEW, stream_seed(seed, split, "a"))
    b = sample_responses(policy, prompts, MAX_NEW, stream_seed(seed, split, "b"))
    return reqs, a, b


def ai_labels(
    fm: FeedbackModel, reqs: Sequence[Request], a: Sequence[str], b: Sequence[str], seed: int
) -> list[Pair]:
    """The feedback model's harmlessness preferences: both responses judged under one principle
    drawn at random per pair, ``q = sigmoid(logit_b - logit_a)`` (the less likely violation is
    preferred, softly: Bai et al. use the normalised probabilities as soft targets)."""
    rng = random.Random(stream_seed("ai-labels", seed))
    principles = [rng.choice(CONSTITUTION).name for _ in reqs]
    za = fm.logits([Critique(p, r.prompt, x) for p, r, x in zip(principles, reqs, a, strict=True)])
    zb = fm.logits([Critique(p, r.prompt, x) for p, r, x in zip(principles, reqs, b, strict=True)])
    q = torch.sigmoid(zb - za).tolist()
    return [Pair(r.prompt, x, y, float(p)) for r, x, y, p in zip(reqs, a, b, q, strict=True)]


def gt_labels(reqs: Sequence[Request], a: Sequence[str], b: Sequence[str]) -> list[Pair]:
    """Ground-truth ("human") harmlessness preferences: the response that violates no principle
    is preferred; ties (both or neither violate) are 0.5."""
    out = []
    for r, x, y in zip(reqs, a, b, strict=True):
        va, vb = violates_any(r.prompt, x), violates_any(r.prompt, y)
        out.append(Pair(r.prompt, x, y, 0.5 + 0.5 * (float(vb) - float(va))))
    return out


def helpfulness_labels(reqs: Sequence[Request], a: Sequence[str], b: Sequence[str]) -> list[Pair]:
    """Ground-truth helpfulness preferences on the benign requests: the correct answer preferred
    (a refusal of a benign request is an incorrect answer); ties are 0.5."""
    out = []
    for r, x, y in zip(reqs, a, b, strict=True):
        if r.kind in BENIGN_KINDS:
            out.append(Pair(r.prompt, x, y, 0.5 + 0.5 * (float(x == r.answer) - float(y == r.answer))))
    return out


def helpfulness_pairs(
    policy: Transformer, n: int, seed: int, kinds: Sequence[str] = BENIGN_KINDS
) -> list[Pair]:
    """``n`` ground-truth helpfulness comparisons on benign training requests: the correct answer
    preferred over the policy's sample when that is wrong, else over a refusal or a near miss
    (half each), so every comparison is informative and refusing a benign request is dispreferred
    however rarely the policy does it."""
    reqs = sample_requests(n, seed, "pm-help", 0, [k for k in kinds if k in BENIGN_KINDS])
    samples = sample_responses(policy, [r.prompt for r in reqs], MAX_NEW, stream_seed(seed, "pm-help"))
    rng = random.Random(stream_seed("help-pairs", seed))
    out = []
    for r, x in zip(reqs, samples, strict=True):
        if x == r.answer:
            x = REFUSAL if rng.random() < 0.5 else near_miss_answer(r.answer, rng)
        out.append(Pair(r.prompt, r.answer, x, 1.0))
    return out


def label_agreement(labels: Sequence[Pair], truth: Sequence[Pair]) -> tuple[int, int]:
    """(pairs where ``labels`` prefer the same response as ``truth``, pairs where ``truth`` is strict)."""
    strict = [(x, t) for x, t in zip(labels, truth, strict=True) if t.strict()]
    return sum((x.q > 0.5) == (t.q > 0.5) for x, t in strict), len(strict)


def revision_pairs(revisions: Sequence[Revision]) -> list[Pair]:
    """(revision, original) pairs: every response a critique changed, the revision preferred."""
    return [Pair(v.prompt, v.final, v.original, 1.0) for v in revisions if v.final != v.original]


def _examples(pairs: Sequence[Pair]) -> tuple[list[Example], list[Example]]:
    return [Example(p.prompt, p.a) for p in pairs], [Example(p.prompt, p.b) for p in pairs]


def fit_preference_model(
    init: Transformer,
    pairs: Sequence[Pair],
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    lm_weight: float = LM_WEIGHT,
) -> RewardModel:
    """A `alignlab.safety.reward.RewardModel` (mean completion log-likelihood) started from a copy
    of ``init`` and fitted with the Bradley-Terry loss against soft targets ``q``, plus
    ``lm_weight`` times the mean log-likelihood of each pair's preferred response weighted by how
    strict the preference is (``|2q - 1|``)."""
    pairs = [p for p in pairs if p.a != p.b]
    rm = RewardModel(init.clone())
    torch.manual_seed(stream_seed("cai-pm", seed))
    opt = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(stream_seed("cai-pm-order", seed))
    rm.train()
    for step in range(steps if pairs else 0):
        for group in opt.param_groups:
            group["lr"] = warmup_lr(lr, step, WARMUP)
        chunk = [pairs[rng.randrange(len(pairs))] for _ in range(batch_size)]
        good, bad = _examples(chunk)
        batch = trimmed_batch([*good, *bad], PAIR_SEQ_LEN)
        assert batch.attention_mask is not None and batch.loss_mask is not None  # collate sets both
        completion = batch.loss_mask
        r, lp = rm(batch.tokens, batch.attention_mask, completion)
        q = torch.tensor([p.q for p in chunk])
        margin = r[:batch_size] - r[batch_size:]
        loss = -(q * F.logsigmoid(margin) + (1 - q) * F.logsigmoid(-margin)).mean()
        # The reward is a likelihood: without a language-modelling term on the preferred responses
        # the Bradley-Terry loss is met by pushing the rejected ones down, and text unlike either
        # (which RL then finds) keeps a high reward (see alignlab.safety.reward.LM_WEIGHT).
        per_seq = lp.sum(-1) / completion[:, 1:].float().sum(-1).clamp(min=1.0)
        weight = (2 * q - 1).abs()
        preferred = torch.where(q >= 0.5, per_seq[:batch_size], per_seq[batch_size:])
        loss = loss - lm_weight * (weight * preferred).sum() / weight.sum().clamp(min=1e-6)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
    return rm.eval().requires_grad_(False)


@torch.no_grad()
def preference_accuracy(rm: RewardModel, pairs: Sequence[Pair]) -> tuple[int, int]:
    """(strict pairs the model ranks the preferred response higher, strict pairs)."""
    strict = [p for p in pairs if p.strict() and p.a != p.b]
    if not strict:
        return 0, 0
    wins = 0
    for lo in range(0, len(strict), 256):  # chunks keep the logits of large evaluations in bounds
        chunk = strict[lo : lo + 256]
        good, bad = _examples(chunk)
        r = rm.score([*good, *bad], PAIR_SEQ_LEN)
        a_higher = r[: len(chunk)] > r[len(chunk) :]
        wins += int((a_higher == torch.tensor([p.q > 0.5 for p in chunk])).sum())
    return wins, len(strict)


@dataclasses.dataclass(frozen=True)
class RLStats:
    """The last step's mean reward and sampled KL to the start (nats per response), and beta."""

    reward: float
    kl: float
    kl_coef: float


def rloo(
    policy: Transformer,
    rm: RewardModel,
    *,
    steps: int,
    lr: float,
    kl_target: float,
    seed: int,
    kinds: Sequence[str] = KINDS,
    kl_coef: float = 0.05,
) -> tuple[Transformer, RLStats]:
    """RLOO (Ahmadian et al. 2024) on world prompts against ``rm``, with the adaptive KL penalty of
    `alignlab.safety.rl` (same prompts per step, samples per prompt and learning-rate scale),
    starting at ``kl_coef``."""
    model = policy.clone()
    ref = policy.clone().eval().requires_grad_(False)
    k, n_prompts = SAMPLES_PER_PROMPT, PROMPTS_PER_STEP
    rate = lr * LR_SCALE
    opt = make_adamw(model, rate)
    ctl = AdaptiveKL(beta=kl_coef, target=kl_target)
    gen = torch.Generator().manual_seed(stream_seed("cai-rl", seed))
    stats = RLStats(float("nan"), float("nan"), ctl.beta)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = warmup_lr(rate, step, WARMUP)
        reqs = sample_requests(n_prompts, seed, "cai-rl", step, kinds)
        prompts = [r.prompt for r in reqs for _ in range(k)]
        seqs, mask, n_prompt, texts = sample_with_tokens(model, prompts, MAX_NEW, gen)
        logp = completion_logprobs(model, seqs, mask, n_prompt)
        with torch.no_grad():
            kl = logp.detach() - completion_logprobs(ref, seqs, mask, n_prompt)
            reward = rm.score([Example(p, t) for p, t in zip(prompts, texts, strict=True)], PAIR_SEQ_LEN)
            adv = rloo_advantages(reward - ctl.beta * kl, k)
        policy_gradient_step(model, opt, logp, adv)
        ctl.update(float(kl.mean()))
        stats = RLStats(float(reward.mean()), float(kl.mean()), ctl.beta)
    return model.eval(), stats


@dataclasses.dataclass(frozen=True)
class DPOStats:
    """Implicit-reward accuracy and mean margin on the training pairs after DPO."""

    accuracy: float
    margin: float


def dpo_train(
    policy: Transformer,
    pairs: Sequence[Pair],
    *,
    steps: int,
    lr: float,
    seed: int,
    beta: float = BETA,
    batch_size: int = 16,
) -> tuple[Transformer, DPOStats]:
    """DPO against a frozen copy of ``policy`` on the strict ``pairs`` (the preferred response
    as chosen), at 0.3 x ``lr`` as `alignlab.safety.dpo` uses."""
    chosen_rejected = [(p.a, p.b) if p.q > 0.5 else (p.b, p.a) for p in pairs if p.strict() and p.a != p.b]
    prompts = [p.prompt for p in pairs if p.strict() and p.a != p.b]
    model = policy.clone()
    ref = policy.clone().eval().requires_grad_(False)
    rate = lr * LR_SCALE
    opt = make_adamw(model, rate)
    rng = random.Random(stream_seed("cai-dpo", seed))
    model.train()
    for step in range(steps if prompts else 0):
        for group in opt.param_groups:
            group["lr"] = warmup_lr(rate, step, WARMUP)
        idx = [rng.randrange(len(prompts)) for _ in range(batch_size)]
        exs = [Example(prompts[i], chosen_rejected[i][0]) for i in idx]
        exs += [Example(prompts[i], chosen_rejected[i][1]) for i in idx]
        logps = sequence_logprobs(model, exs, PAIR_SEQ_LEN)
        with torch.no_grad():
            ref_logps = sequence_logprobs(ref, exs, PAIR_SEQ_LEN)
        loss, _, _ = dpo_loss(
            logps[:batch_size], logps[batch_size:], ref_logps[:batch_size], ref_logps[batch_size:], beta
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return model, dpo_margins(model, ref, pairs, beta)


@torch.no_grad()
def dpo_margins(model: Transformer, ref: Transformer, pairs: Sequence[Pair], beta: float = BETA) -> DPOStats:
    """Implicit-reward accuracy (preferred above the other) and mean margin of ``model`` over
    ``ref`` on the strict ``pairs``."""
    strict = [p for p in pairs if p.strict() and p.a != p.b]
    if not strict:
        return DPOStats(float("nan"), float("nan"))
    good = [Example(p.prompt, p.a if p.q > 0.5 else p.b) for p in strict]
    bad = [Example(p.prompt, p.b if p.q > 0.5 else p.a) for p in strict]
    pc, pr = sequence_logprobs(model, good + bad, PAIR_SEQ_LEN).split(len(strict))
    rc, rr = sequence_logprobs(ref, good + bad, PAIR_SEQ_LEN).split(len(strict))
    _, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    return DPOStats(float((cr > rj).float().mean()), float((cr - rj).mean()))
