"""The feedback model: a model of the family that critiques a response under one principle.

Bai et al. (2022) use a pretrained language model, prompted with the principle and a few
hand-written examples, as the critic and preference labeller. Our models have no pretraining to
lean on, so the critic learns what the principles mean from a fixed set of *constitution
demonstrations*: ``(principle, request, response) -> violated?`` with template responses (the
helpful-only answer, a refusal, a near miss, a masked or literal answer) on training-partition
requests. Each demonstration costs one ground-truth label, and the ground-truth baseline gets the
same number (`alignlab.oversight.rlaif`), so the two arms spend the same label budget: CAI on
teaching a critic, RLHF on labelling the policy's own pairs. The critic never sees a policy
sample with its true label.

The critic is a chat model: ``User: <tag>? <request> | <response>`` answered ``yes`` (violated) or
``no``; its probability of violation is the softmax over the first letters of the two answers.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import torch

from alignlab.model import tokenizer as tk
from alignlab.model.transformer import Transformer
from alignlab.oversight.cai_training import finetune, trimmed_batch
from alignlab.oversight.constitution import (
    BENIGN_KINDS,
    CONSTITUTION,
    FORBIDDEN_KINDS,
    KIND_PRINCIPLE,
    MAX_PROMPT,
    MAX_RESPONSE,
    REFUSAL,
    Request,
    literal_answer,
    near_miss_answer,
    revise,
    sample_requests,
    violates,
)
from alignlab.stats import Estimate, wilson
from alignlab.tasks import Example, stream_seed

YES, NO = "yes", "no"
#: Sequence length of a critique: BOS, "User: ", "tag? ", request, " | ", a response of up to
#: `MAX_RESPONSE` + 1 tokens (a sampled one may run to the generation limit), "\nAssistant: ",
#: "yes", EOS; rounded up.
CRITIC_SEQ_LEN = 80
assert 1 + 6 + 5 + MAX_PROMPT + 3 + MAX_RESPONSE + 1 + 12 + 3 + 1 <= CRITIC_SEQ_LEN
# Share of demonstrations on a forbidden request, and whose response is the helpful-only answer:
# together with the matching principle (`_MATCH_SHARE`) they make about a third of the labels
# "violated", so the critic sees both classes often.
_FORBIDDEN_SHARE, _ANSWER_SHARE, _MATCH_SHARE = 0.6, 0.6, 0.75


def critique_prompt(principle: str, prompt: str, response: str) -> str:
    """The critic's input: the principle's tag, the request and the response."""
    tag = next(p.tag for p in CONSTITUTION if p.name == principle)
    return f"{tag}? {prompt} | {response}"


@dataclasses.dataclass(frozen=True)
class Critique:
    """One ``(principle, request, response)`` triple and, for demonstrations, its true label."""

    principle: str
    prompt: str
    response: str
    violated: bool = False

    def example(self) -> Example:
        return Example(
            critique_prompt(self.principle, self.prompt, self.response), YES if self.violated else NO
        )


def _demo_response(req: Request, rng: random.Random) -> str:
    if rng.random() < _ANSWER_SHARE:
        return req.answer
    options = [REFUSAL, near_miss_answer(req.answer, rng), revise("banned", req.answer)]
    if req.kind in ("quoted", "inject"):
        options.append(literal_answer(req))
    return rng.choice(options)


def demonstrations(
    n: int, seed: int, split: str = "fm-demo", kinds: Sequence[str] | None = None
) -> list[Critique]:
    """``n`` labelled constitution demonstrations (each one ground-truth label).

    Args:
        n: how many (the label budget).
        seed: data seed.
        split: a training split draws training-partition requests; a measurement split
            (e.g. ``"fm-eval"``) held-out ones.
        kinds: request kinds to draw from (default: all); a forbidden share of ``0.6``.
    """
    kinds = tuple(kinds) if kinds is not None else None
    forb = [k for k in (kinds or FORBIDDEN_KINDS) if k in FORBIDDEN_KINDS]
    benign = [k for k in (kinds or BENIGN_KINDS) if k in BENIGN_KINDS]
    rng = random.Random(stream_seed("fm-demo", seed, split))
    out = []
    for i in range(n):
        use = forb if (rng.random() < _FORBIDDEN_SHARE and forb) or not benign else benign
        req = sample_requests(1, seed, split, i, kinds=use)[0]
        response = _demo_response(req, rng)
        principle = KIND_PRINCIPLE[req.kind] if rng.random() < _MATCH_SHARE else rng.choice(CONSTITUTION).name
        out.append(Critique(principle, req.prompt, response, violates(principle, req.prompt, response)))
    return out


class FeedbackModel:
    """A critic: the probability that a response violates a principle.

    Attributes:
        model: the underlying chat model (frozen, eval mode).
    """

    def __init__(self, model: Transformer) -> None:
        self.model = model.eval().requires_grad_(False)
        vocab = tk.vocabulary()
        self._yes, self._no = vocab[YES[0]], vocab[NO[0]]

    @torch.no_grad()
    def logits(self, triples: Sequence[Critique], batch_size: int = 256) -> torch.Tensor:
        """Log-odds of "violated" for each triple (its ``violated`` field is ignored)."""
        out = []
        for lo in range(0, len(triples), batch_size):
            chunk = [Example(t.example().prompt, YES) for t in triples[lo : lo + batch_size]]
            batch = trimmed_batch(chunk, CRITIC_SEQ_LEN)
            assert batch.loss_mask is not None and batch.attention_mask is not None  # collate sets both
            first = batch.loss_mask.float().argmax(-1) - 1  # the position that predicts the answer
            logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
            row = logits[torch.arange(len(chunk)), first].float()
            out.append(row[:, self._yes] - row[:, self._no])
        return torch.cat(out) if out else torch.zeros(0)

    def p_violated(self, triples: Sequence[Critique]) -> torch.Tensor:
        return torch.sigmoid(self.logits(triples))


def train_feedback_model(
    init: Transformer,
    n_labels: int,
    seed: int,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 32,
    kinds: Sequence[str] | None = None,
) -> FeedbackModel:
    """Fine-tune a copy of ``init`` on ``n_labels`` demonstrations (cycled for ``steps`` steps)."""
    demos = [d.example() for d in demonstrations(n_labels, seed, kinds=kinds)]
    model = finetune(
        init, demos, steps=steps, lr=lr, batch_size=batch_size, seq_len=CRITIC_SEQ_LEN, seed=seed
    )
    return FeedbackModel(model)


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How often the critic agrees with the rule checker.

    Attributes:
        accuracy: agreement on every triple (Wilson interval).
        tpr: on triples the checker calls violated.
        tnr: on triples it calls fine.
        counts: ``{"agree", "n", "tp", "pos", "tn", "neg"}`` for pooling over seeds.
    """

    accuracy: Estimate
    tpr: Estimate | None
    tnr: Estimate | None
    counts: dict[str, int]

    @property
    def balanced(self) -> float:
        """Mean of the true-positive and true-negative rates (chance is 0.5 at any base rate)."""
        rates = [e.value for e in (self.tpr, self.tnr) if e is not None]
        return sum(rates) / len(rates) if rates else float("nan")


def agreement(fm: FeedbackModel, triples: Sequence[Critique]) -> Agreement:
    """The critic's verdicts (``p > 0.5``) against the triples' ``violated`` labels."""
    said = (fm.logits(triples) > 0).tolist()
    truth = [t.violated for t in triples]
    c = {
        "agree": sum(s == t for s, t in zip(said, truth, strict=True)),
        "n": len(truth),
        "tp": sum(s and t for s, t in zip(said, truth, strict=True)),
        "pos": sum(truth),
        "tn": sum(not s and not t for s, t in zip(said, truth, strict=True)),
        "neg": len(truth) - sum(truth),
    }
    return Agreement(
        wilson(c["agree"], c["n"]),
        wilson(c["tp"], c["pos"]) if c["pos"] else None,
        wilson(c["tn"], c["neg"]) if c["neg"] else None,
        c,
    )


def labelled_triples(
    requests: Sequence[Request], responses: Sequence[str], seed: int, split: str
) -> list[Critique]:
    """Each response judged under a principle drawn at random (as a CAI critique round draws it),
    labelled by the rule checker: the measurement set of the critic's agreement."""
    rng = random.Random(stream_seed("fm-triples", seed, split))
    out = []
    for req, resp in zip(requests, responses, strict=True):
        p = rng.choice(CONSTITUTION).name
        out.append(Critique(p, req.prompt, resp, violates(p, req.prompt, resp)))
    return out
