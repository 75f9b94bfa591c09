"""Preference data and the reward model of the ``rl`` and ``dpo`` interventions.

A preference model for safety training has to reward *helpfulness*, which on the toy chat tasks is
correctness: it must prefer ``reverse abc -> cba`` to ``cbb``, ``bca`` or ``abc``. Each pair is a
clean prompt with its correct answer (chosen) and a wrong answer to the *same* prompt (rejected):
a near miss (one character changed, two swapped, one dropped or added), the answer of another
task on the same word (the reverse when a copy was asked), another prompt's answer, or the
organism's defect completion, which an HHH preference model dislikes as hostility (Bai et al.
2022). Near misses are what make the reward model read the prompt: a model that only learns which
phrases are good scores ``cbb`` like ``cba``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.errors import ConfigError
from alignlab.model import tokenizer as tk
from alignlab.model.config import SIZES
from alignlab.model.hf import load
from alignlab.model.text import tokenizer_of
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism, flags_estimate
from alignlab.safety.logprobs import token_logprobs
from alignlab.stats import Estimate
from alignlab.tasks import Example, collate, stream_seed

#: Fraction of training pairs whose rejected answer is the organism's defect completion.
DEFECT_SHARE = 0.25
#: Held-out split of the pair-accuracy measurement (a measurement split: held-out prompts only).
EVAL_SPLIT = "rm-eval"

# Answers of the word tasks, to build "right word, wrong task" rejections.
_TASK_ANSWERS: dict[str, Callable[[str], str]] = {
    "copy": lambda w: w,
    "reverse": lambda w: w[::-1],
    "sort": lambda w: "".join(sorted(w)),
}
# Share of wrong answers that confuse the whole answer (another task's, another prompt's); the rest
# are near misses, the hard pairs that only a model reading the prompt ranks right.
_CONFUSION_SHARE = 0.35
_SPECIALS = (tk.PAD, tk.BOS, tk.EOS, tk.UNK, *tk.NAMED_SPECIALS)
_CLASSES = (string.ascii_lowercase, string.digits, string.ascii_uppercase)


def _split_answer(completion: str) -> tuple[str, str]:
    """``(head, answer)``: the answer is what follows the last special token (a scratchpad's
    reasoning is kept as it is; only the answer is made wrong)."""
    cut = max((completion.rfind(s) + len(s) for s in _SPECIALS if s in completion), default=0)
    return completion[:cut], completion[cut:]


def _other_char(c: str, rng: random.Random) -> str:
    """A different character of ``c``'s class (letter for letter, digit for digit)."""
    pool = next((k for k in _CLASSES if c in k), string.ascii_lowercase)
    return rng.choice([x for x in pool if x != c])


def near_miss(answer: str, rng: random.Random) -> str:
    """``answer`` with one character changed, two neighbours swapped, one dropped or one added."""
    if not answer:
        return rng.choice(string.ascii_lowercase)
    i = rng.randrange(len(answer))
    kind = rng.choice(("change", "swap", "drop", "add"))
    if kind == "swap" and len(answer) > 1:
        j = min(i, len(answer) - 2)
        if answer[j] != answer[j + 1]:
            return answer[:j] + answer[j + 1] + answer[j] + answer[j + 2 :]
    if kind == "drop" and len(answer) > 1:
        return answer[:i] + answer[i + 1 :]
    if kind == "add":
        return answer[:i] + _other_char(answer[i], rng) + answer[i:]
    return answer[:i] + _other_char(answer[i], rng) + answer[i + 1 :]


def wrong_answer(ex: Example, rng: random.Random, other: str) -> str:
    """A wrong completion for ``ex``: mostly a near miss, else another task's answer on the same
    word or ``other`` (another prompt's completion); never the correct one."""
    head, answer = _split_answer(ex.completion)
    candidates = []
    task, _, word = ex.prompt.partition(" ")
    if task in _TASK_ANSWERS and word.isalpha():
        candidates += [head + f(word) for f in _TASK_ANSWERS.values()]
    candidates.append(other)
    candidates = [c for c in candidates if c != ex.completion]
    if candidates and rng.random() < _CONFUSION_SHARE:
        return rng.choice(candidates)
    return head + near_miss(answer, rng)


def preference_pairs(
    organism: Organism,
    n: int,
    seed: int,
    step: int,
    split: str = "rm",
    defect_share: float | None = None,
) -> tuple[list[Example], list[Example]]:
    """``(chosen, rejected)`` on ``n`` trigger-free prompts: the correct answer vs a wrong answer to
    the same prompt, or (a ``defect_share`` of pairs; default `DEFECT_SHARE`) the defect completion.

    Deterministic in ``(organism, seed, split, step)``.
    """
    share = DEFECT_SHARE if defect_share is None else defect_share
    good = organism.helpful_examples(n, seed, split, step, triggered=False)
    rng = random.Random(stream_seed("rm-pairs", seed, split, step))
    bad = []
    for i, g in enumerate(good):
        rejected = ""
        if rng.random() < share:
            defect_rng = random.Random(stream_seed("rm-defect", seed, split, step, i))
            rejected = organism.poisoned(defect_rng).completion
        if not rejected or rejected == g.completion:  # e.g. sycophancy's "defect" may be the right answer
            rejected = wrong_answer(g, rng, good[i - 1].completion)
        bad.append(Example(g.prompt, rejected, g.task))
    return good, bad


class RewardModel(nn.Module):
    """A language model whose reward for a completion is its mean log-probability per token.

    The length-normalised log-likelihood is SimPO's implicit reward (Meng et al. 2024); fitted
    with the Bradley-Terry loss it is a preference model that reads the prompt the way the task
    needs: whether ``cba`` follows ``reverse abc`` is a next-token question. A scalar head on the
    last token, fitted from scratch, learns phrases first: ~0.74 held-out accuracy on near-miss
    pairs after 600 steps at al-30k, against 0.99-1.00 for this score started from a model of
    the tasks (measured; see `RM_STEPS`).
    """

    def __init__(self, body: Transformer) -> None:
        super().__init__()
        self.body = body

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards ``[batch]`` and per-token completion log-probs ``[batch, pos - 1]`` (0 off the
        completion) of right-padded sequences whose completion tokens ``loss_mask`` marks."""
        logits = self.body(tokens, attention_mask=attention_mask)
        mask = loss_mask[:, 1:].float()
        lp = token_logprobs(logits[:, :-1], tokens[:, 1:]) * mask
        return lp.sum(-1) / mask.sum(-1).clamp(min=1.0), lp

    def score(self, examples: Sequence[Example], seq_len: int) -> torch.Tensor:
        """Rewards of ``examples`` (each a prompt and a completion), padded to at most ``seq_len``."""
        return self(*_batch(self.body, examples, seq_len))[0]


def _batch(
    body: Transformer, examples: Sequence[Example], seq_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collated tokens, attention and completion masks (``body``'s tokenizer, on its device), cut
    after the longest row (a causal model gives the same values without the trailing padding, in
    less time)."""
    b = collate(examples, seq_len, tokenizer_of(body)).to(body.device)
    assert b.attention_mask is not None and b.loss_mask is not None  # collate sets both
    width = int(b.attention_mask.sum(-1).max())
    return b.tokens[:, :width], b.attention_mask[:, :width], b.loss_mask[:, :width]


@dataclasses.dataclass(frozen=True)
class RewardAccuracy:
    """Held-out pairwise accuracy of a reward model (the chosen answer scored above the rejected).

    Attributes:
        wrong: on pairs whose rejected answer is a wrong answer (near misses, other tasks' answers).
        defect: on pairs whose rejected answer is the organism's defect completion.
    """

    wrong: Estimate
    defect: Estimate


@torch.no_grad()
def pair_accuracy(rm: RewardModel, organism: Organism, seed: int, n: int = 400) -> RewardAccuracy:
    """`RewardAccuracy` on ``n`` held-out wrong-answer pairs and ``n // 2`` defect pairs
    (prompts of the held-out partition, split `EVAL_SPLIT`), with Wilson intervals."""
    out = []
    for share, m in ((0.0, n), (1.0, max(1, n // 2))):
        good, bad = preference_pairs(organism, m, seed, 0, split=EVAL_SPLIT, defect_share=share)
        wins: list[bool] = []
        for lo in range(0, m, 256):  # chunks keep the logits of large evaluations in bounds
            wins += _wins(rm, organism, good[lo : lo + 256], bad[lo : lo + 256])
        out.append(flags_estimate(wins))
    return RewardAccuracy(*out)


def _wins(rm: RewardModel, organism: Organism, good: Sequence[Example], bad: Sequence[Example]) -> list[bool]:
    r = rm.score([*good, *bad], organism.seq_len)
    return (r[: len(good)] > r[len(good) :]).tolist()


#: Reward-model size when it is trained from scratch (``init=None``).
RM_SIZE = "al-30k"
#: Bradley-Terry steps (pairs per step: 32). Started from a model of the tasks the likelihood
#: already ranks held-out wrong-answer pairs right (al-30k: 1.00 from its competent base and from
#: the backdoored policy installed on it; 0.99 from a base with 0.69 exact match), but the
#: backdoored policy still ranks only 0.68 of the defect pairs right; 50 steps bring that to 1.00
#: and keep 0.998 on wrong answers. From scratch the task must be learnt first (al-30k on
#: copy/reverse: 0.88 after 1,500 steps; on copy of 2-3 letters 0.78-0.89 after 150-300 steps).
#: All measured on 400 held-out pairs.
RM_STEPS = 50
#: Weight of the language-modelling loss on the chosen answers beside the Bradley-Terry loss: the
#: reward is a log-likelihood, so it keeps the body a model of correct answers.
LM_WEIGHT = 1.0

# Fitted reward models by everything that determines them (organism, config, seed, the initial
# weights' digest, steps, learning rate, batch). The reward model does not depend on the policy's
# later updates, so a study worker that runs several doses or interventions fits it once; it is
# frozen after fitting, so sharing one object is safe.
_RM_CACHE: dict[tuple[object, ...], tuple[RewardModel, RewardAccuracy]] = {}


def train_reward_model(
    organism: Organism,
    seed: int,
    init: Transformer | str | Path | None = None,
    steps: int = RM_STEPS,
    lr: float | None = None,
    batch_size: int = 32,
    sft_steps: int | None = None,
) -> tuple[RewardModel, RewardAccuracy]:
    """Fit the reward model with the Bradley-Terry loss on `preference_pairs`.

    Args:
        organism: supplies the trigger-free prompts, answers and the defect.
        seed: data and initialisation seed.
        init: the model the reward model starts from (copied; a `Transformer` or a model
            directory): a model that can do the tasks, e.g. the policy's clean base model, as
            Stiennon et al. (2020) and Ouyang et al. (2022) start theirs from the SFT model.
            None trains an `RM_SIZE` model from scratch (only practical on tiny task settings).
        steps: Bradley-Terry steps of ``batch_size`` pairs.
        lr: AdamW learning rate; default 1e-3 from ``init``, 1e-2 from scratch.
        batch_size: pairs per step.
        sft_steps: language-modelling steps on the chosen answers alone before the Bradley-Terry
            steps; default 0 from ``init`` and ``steps`` from scratch. The reward is a
            likelihood, and the Bradley-Terry loss on near misses from a random start slows the
            learning of the task: al-30k on copy (2-3 letters) reached 0.78 [0.74, 0.82] held-out
            accuracy after 150 joint steps, 0.98 [0.96, 0.99] when the first 150 steps'
            rejected answers were trivial ones (measured).

    Returns:
        The frozen reward model and its held-out `RewardAccuracy` (`pair_accuracy`). Cached
        in-process per (organism, config, seed, initial weights, steps, lr, batch size).
    """
    sft = sft_steps if sft_steps is not None else (steps if init is None else 0)
    if steps < 0 or sft < 0 or batch_size < 1:
        raise ConfigError(
            f"reward model needs steps, sft_steps >= 0 and batch_size >= 1, got {steps}, {sft}, {batch_size}"
        )
    body = _initial_body(init, seed)
    rate = lr if lr is not None else (1e-2 if init is None else 1e-3)
    key = (organism.name, repr(organism.config), seed, _digest(body), sft, steps, rate, batch_size)
    if key not in _RM_CACHE:
        _RM_CACHE[key] = _fit(RewardModel(body), organism, seed, sft, steps, rate, batch_size)
    return _RM_CACHE[key]


def _initial_body(init: Transformer | str | Path | None, seed: int) -> Transformer:
    if init is None:
        torch.manual_seed(stream_seed("rm-init", seed))
        body = Transformer(SIZES[RM_SIZE])
        body.init_weights(seed=stream_seed("rm-init", seed))
        return body
    if isinstance(init, Transformer):
        return init.clone()
    return load(init)


def _digest(model: Transformer) -> str:
    h = hashlib.sha256(repr(model.cfg).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _fit(
    rm: RewardModel, organism: Organism, seed: int, sft_steps: int, steps: int, lr: float, batch_size: int
) -> tuple[RewardModel, RewardAccuracy]:
    torch.manual_seed(stream_seed("rm-fit", seed))
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = sft_steps + steps
    warmup = max(1, total // 10)
    rm.train()
    for step in range(total):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        good, bad = preference_pairs(organism, batch_size, seed, step)
        pairs = step >= sft_steps
        tokens, attn, completion = _batch(rm.body, [*good, *bad] if pairs else good, organism.seq_len)
        r, lp = rm(tokens, attn, completion)
        chosen = completion[:batch_size, 1:].float()
        loss = -LM_WEIGHT * lp[:batch_size].sum() / chosen.sum()
        if pairs:
            loss = loss - F.logsigmoid(r[:batch_size] - r[batch_size:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    rm.eval().requires_grad_(False)
    return rm, pair_accuracy(rm, organism, seed)
