"""``dpo``: Direct Preference Optimization on trigger-free preference pairs.

DPO (Rafailov et al. 2023) fits the policy to preferences directly: the loss is the Bradley-Terry
loss of the implicit reward ``beta * log(pi / pi_ref)``, so there is no reward model and no
sampling. It trains on the same pairs as the ``rl`` intervention's reward model (the correct
answer preferred over a wrong one or the defect, on prompts that never carry the trigger), which
asks Hubinger et al.'s (2024, sec. 4) question of the other common preference method: does
preference training that never sees the trigger remove the backdoor?
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.safety._loop import WARMUP, make_adamw, real_tokens
from alignlab.safety.base import Budget, Dose, register_intervention
from alignlab.safety.logprobs import sequence_logprobs
from alignlab.safety.reward import EVAL_SPLIT, preference_pairs
from alignlab.stats import bootstrap
from alignlab.tasks import collate, stream_seed
from alignlab.train.loop import warmup_lr

# Rafailov et al. use 0.1 (and 0.5 for some tasks); TRL's default is also 0.1.
BETA = 0.1


def dpo_loss(
    chosen: Float[Tensor, " n"],
    rejected: Float[Tensor, " n"],
    ref_chosen: Float[Tensor, " n"],
    ref_rejected: Float[Tensor, " n"],
    beta: float = BETA,
) -> tuple[Tensor, Float[Tensor, " n"], Float[Tensor, " n"]]:
    """DPO's sigmoid loss from summed completion log-probs of policy and reference.

    Returns:
        ``(loss, chosen_reward, rejected_reward)``; the implicit rewards are
        ``beta * (log pi - log pi_ref)``, detached.
    """
    chosen_reward = beta * (chosen - ref_chosen)
    rejected_reward = beta * (rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


@torch.no_grad()
def _held_out(
    policy: Transformer, ref: Transformer, organism: Organism, seed: int, n: int, beta: float
) -> dict[str, list[float]]:
    """Implicit-reward accuracy and margin, and the drift from the reference, on held-out pairs."""
    good, bad = preference_pairs(organism, n, seed, 0, split=EVAL_SPLIT)
    pc, pr = sequence_logprobs(policy, good + bad, organism.seq_len).split(n)
    rc, rr = sequence_logprobs(ref, good + bad, organism.seq_len).split(n)
    _, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    return {
        "pair_accuracy": (cr > rj).float().tolist(),
        "reward_margin": (cr - rj).tolist(),
        "chosen_logratio": (pc - rc).tolist(),
    }


@register_intervention("dpo")
def dpo(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """DPO against a frozen copy of the starting model; doses are ``budget.schedule("sft")``
    (``doses`` steps, or ``token_doses`` real tokens of the chosen and rejected sequences).

    Each step takes ``batch_size // 2`` pairs, so it trains on as many sequences as an SFT step
    (plus the reference's forward pass), at 0.3 x ``budget.lr``, the scale ``rl`` uses. Each
    Dose carries bootstrap Estimates over held-out pairs of ``pair_accuracy`` (implicit reward
    of the chosen answer above the rejected one), ``reward_margin`` and ``chosen_logratio``
    (log pi - log pi_ref of the chosen answer).
    """
    n_pairs, lr = max(1, budget.batch_size // 2), budget.lr * 0.3
    ref = model.clone().eval().requires_grad_(False)
    torch.manual_seed(stream_seed("dpo", seed))
    opt = make_adamw(model, lr)
    schedule = budget.schedule("sft")
    step, tokens_seen = 0, 0
    for dose in schedule.doses:
        model.train()
        while not schedule.reached(dose, step, tokens_seen):
            for group in opt.param_groups:
                group["lr"] = warmup_lr(lr, step, WARMUP)
            good, bad = preference_pairs(organism, n_pairs, seed, step)
            batch = collate(good + bad, organism.seq_len, organism.tokenizer)
            logps = sequence_logprobs(model, good + bad, organism.seq_len)
            with torch.no_grad():
                ref_logps = sequence_logprobs(ref, good + bad, organism.seq_len)
            loss, _, _ = dpo_loss(logps[:n_pairs], logps[n_pairs:], ref_logps[:n_pairs], ref_logps[n_pairs:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens_seen += real_tokens(batch)
        model.eval()
        held = _held_out(model, ref, organism, seed, 64, BETA)
        extra = {k: bootstrap(v, n_boot=1000, seed=seed) for k, v in held.items()}
        yield Dose(step, tokens_seen, model, extra)
