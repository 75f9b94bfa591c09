"""Outcome- and process-supervised reward models on the step task, and best-of-N reranking.

Uesato et al. (2022, "Solving math word problems with process- and outcome-based feedback") and
Lightman et al. (2023, "Let's Verify Step by Step") compare an outcome reward model (ORM: is the
final answer right?) with a process reward model (PRM: is each step right?), trained on the same
generator samples, by reranking N samples per problem. Here the problems are the modular chains of
`alignlab.tasks.op_chain`, the generator is a model of the family trained on noisy traces, and
the reward models are models of the family that read a verdict off the language-model head at
the end of each step, as Lightman et al.'s PRM predicts a positive or negative token after each
step (sec. 2.6): ``P(step ok) = sigmoid(logit[GOOD] - logit[BAD])`` at the step's last token
(`step_ends`). The PRM is trained at every step up to and including the first wrong one, and a
solution's PRM score is the product of its steps' probabilities (Lightman et al. sec. 2.6). Two
outcome reward models see only whether the final answer is right: the ORM at the last step's
verdict (Cobbe et al. 2021's verifier reads one score per solution), and ORM-steps on the product of
step verdicts, the PRM's reading with the ORM's labels.

Measured (al-30k generator and reward models, 2,048 labelled traces, 300 steps; 3 seeds): the PRM
gets 0.95 of its held-out step labels right; both outcome models stay at chance on theirs
(0.54), so at this scale an outcome label does not teach a step checker.

Example:
    >>> run = train_generator(store, GeneratorRecipe(), seed=0)
    >>> gen = alignlab.load(run.dir / "model")
    >>> problems = chain_problems(100, 0, "rm")
    >>> traces = sample_traces(gen, problems, 4, seed=0)
    >>> prm = train_step_rm(gen, problems, traces, "prm", seed=0)
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special
from torch import nn

from alignlab._validate import check_choice, check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.config import SIZES
from alignlab.model.text import char_tokenizer
from alignlab.model.transformer import Transformer
from alignlab.store import Run, Store
from alignlab.tasks import Batch, Example, collate, stream_seed
from alignlab.tasks.chat import prompt_ids
from alignlab.tasks.op_chain import (
    STEP_SEP,
    ChainProblem,
    TraceCheck,
    TraceNoise,
    chain_examples,
    chain_problems,
    check_trace,
    seq_len,
)
from alignlab.train.config import TrainConfig

#: The tokens whose logit difference is a reward model's verdict on a step.
GOOD, BAD = "Y", "N"
RMKind = Literal["orm", "orm-steps", "prm"]
RM_KINDS: tuple[str, ...] = ("orm", "orm-steps", "prm")


# ---- the generator ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GeneratorRecipe:
    """How the step-task generator (and each reward model's starting point) is trained.

    Attributes:
        size: model size of the family.
        steps: optimiser steps (batch ``batch_size``, cosine schedule).
        lr: peak learning rate.
        batch_size: traces per step.
        noise: how the training traces go wrong (`TraceNoise`).
        from_base: fine-tune the competent chat base model of the size and seed
            (`alignlab.train.base_model.base_run`) instead of training from scratch. Off by
            default: from scratch al-30k learns the task in 900 steps at lr 1e-2 (0.995 of greedy
            traces fully right, measured), and the bases did not help on harder step tasks.
    """

    size: str = "al-30k"
    steps: int = 900
    lr: float = 1e-2
    batch_size: int = 64
    noise: TraceNoise = dataclasses.field(default_factory=TraceNoise)
    from_base: bool = False

    def __post_init__(self) -> None:
        raise_problems(
            "GeneratorRecipe",
            [
                check_choice("size", self.size, tuple(SIZES)),
                check_int("steps", self.steps, lo=1, hi=1_000_000),
                check_real("lr", self.lr, lo=0.0, lo_open=True, hi=1.0),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
                check_choice("from_base", self.from_base, (True, False)),
            ],
        )


#: Peak learning rate per size for the step task from scratch (al-30k: measured, see
#: `GeneratorRecipe`; larger sizes follow the ratio of `alignlab.train.base_model.BASE_SCHEDULE`).
SIZE_LR = {"al-30k": 1e-2, "al-100k": 3e-3, "al-300k": 2e-3}


def recipe_for(recipe: GeneratorRecipe, size: str) -> GeneratorRecipe:
    """``recipe`` at another size (with that size's learning rate when the sizes differ): the
    starting point of a reward model of ``size``."""
    if size == recipe.size:
        return recipe
    return dataclasses.replace(recipe, size=size, lr=SIZE_LR.get(size, recipe.lr))


def generator_config(recipe: GeneratorRecipe, seed: int) -> TrainConfig:
    """The `TrainConfig` of the generator of ``recipe`` and ``seed``."""
    return TrainConfig(
        model=SIZES[recipe.size],
        task="chain",
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=seq_len(recipe.noise),
        lr=recipe.lr,
        warmup_steps=max(10, recipe.steps // 20),
        eval_every=0,
        ckpt_every=max(recipe.steps // 2, 1),
        seed=seed,
        threads=1,
    )


def train_generator(store: Store, recipe: GeneratorRecipe, seed: int) -> Run:
    """Train (or reuse) the generator: a model of the family fitted to noisy traces."""
    from alignlab.train.run import train_run

    noise = recipe.noise

    def batch(batch_size: int, length: int, seed_: int, step: int, split: str) -> Batch:
        return collate(chain_examples(batch_size, seed_, split, step, noise), length)

    ident: dict[str, Any] = {"noise": dataclasses.asdict(noise)}
    init_dir = None
    if recipe.from_base:
        from alignlab.gates import require
        from alignlab.train.base_model import base_run

        base, gates = base_run(store, recipe.size, seed)
        require(gates, f"base model {recipe.size} seed {seed}")
        ident["init"], init_dir = base.id, base.dir / "model"
    run, _ = train_run(
        generator_config(recipe, seed),
        store,
        progress=False,
        kind="chain-generator",
        recipe=ident,
        batch_fn=batch,
        init_model_dir=init_dir,
    )
    return run


@torch.no_grad()
def sample_traces(
    model: Transformer,
    problems: Sequence[ChainProblem],
    k: int,
    seed: int,
    temperature: float = 1.0,
    batch_size: int = 512,
) -> list[list[str]]:
    """``k`` sampled traces per problem (text up to EOS), deterministic in ``seed``."""
    from alignlab.evals.generation import generate_ids

    tok = char_tokenizer()
    rows = [prompt_ids(p.prompt, tok) for p in problems for _ in range(k)]
    max_new = 5 * (max(p.k for p in problems) + 1)  # room for one step more than the longest
    gen = torch.Generator().manual_seed(stream_seed("chain-sample", seed) % (1 << 62))
    was = model.training
    model.eval()
    texts: list[str] = []
    for lo in range(0, len(rows), batch_size):
        new = generate_ids(
            model,
            rows[lo : lo + batch_size],
            max_new,
            pad=tok.pad_id,
            eos=tok.eos_id,
            temperature=temperature,
            generator=gen,
        )
        texts += [tok.decode(ids) for ids in new]
    model.train(was)
    return [texts[i * k : (i + 1) * k] for i in range(len(problems))]


# ---- reward models ----------------------------------------------------------------------------


def step_ends(tokens: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Where each step's verdict is read: the step's last token, just before the separator or EOS
    that closes it (the closing token itself for an empty step).

    The last token is where the generator decided whether to stop (it predicts ``;`` or EOS there)
    and one token after it computed the step's output, so a reward model started from it finds
    what it needs there; read at the closing ``;`` instead, an al-30k PRM after 150 steps gave
    right and wrong steps mean probabilities 0.86 and 0.81 (measured).
    """
    tok = char_tokenizer()
    sep = tok.encode(STEP_SEP)[0]
    comp = loss_mask.bool()
    close = comp & ((tokens == sep) | (tokens == tok.eos_id))
    content = comp & ~close
    ends = torch.zeros_like(close)
    ends[:, :-1] = close[:, 1:] & content[:, :-1]
    ends[:, 1:] |= close[:, 1:] & ~content[:, :-1]
    ends[:, 0] |= close[:, 0]
    return ends


class StepRewardModel(nn.Module):
    """A model of the family whose verdict on a step is ``logit[GOOD] - logit[BAD]`` at the step's
    last token (`step_ends`).

    Attributes:
        kind: "orm" scores a solution by the verdict at its last step; "prm" and "orm-steps" by
            the product of every step's probability (Lightman et al. 2023, sec. 2.6). "orm-steps"
            is trained on final-answer labels only (`train_step_rm`): the PRM's reading with the
            ORM's labels, so that comparing it with the PRM isolates the labels.
    """

    def __init__(self, body: Transformer, kind: RMKind) -> None:
        super().__init__()
        if kind not in RM_KINDS:
            raise ConfigError(f"reward model kind must be one of {', '.join(RM_KINDS)}, got {kind!r}")
        self.body = body
        self.kind = kind
        tok = char_tokenizer()
        self._good, self._bad = tok.encode(GOOD)[0], tok.encode(BAD)[0]

    def verdicts(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``logit[GOOD] - logit[BAD]`` at every position ``[batch, pos]``."""
        logits = self.body(tokens, attention_mask=attention_mask)
        return logits[..., self._good] - logits[..., self._bad]

    @torch.no_grad()
    def step_probs(self, problems: Sequence[ChainProblem], traces: Sequence[str]) -> list[list[float]]:
        """Per trace, the probability of each step being right, in order."""
        b = _batch(problems, traces)
        assert b.attention_mask is not None and b.loss_mask is not None
        p = torch.sigmoid(self.verdicts(b.tokens, b.attention_mask))
        ends = step_ends(b.tokens, b.loss_mask)
        return [p[i][ends[i]].tolist() for i in range(len(traces))]

    @torch.no_grad()
    def score(self, problems: Sequence[ChainProblem], traces: Sequence[str], chunk: int = 512) -> np.ndarray:
        """Solution scores: the ORM's last-step probability, or the PRM's product of step
        probabilities (computed as a sum of log-sigmoids, so long products do not underflow)."""
        out = []
        for lo in range(0, len(traces), chunk):
            b = _batch(problems[lo : lo + chunk], traces[lo : lo + chunk])
            assert b.attention_mask is not None and b.loss_mask is not None
            logp = F.logsigmoid(self.verdicts(b.tokens, b.attention_mask))
            ends = step_ends(b.tokens, b.loss_mask)
            if self.kind != "orm":
                out.append((logp * ends).sum(-1).exp())
            else:
                last = _last_true(ends)
                out.append(logp.gather(1, last[:, None])[:, 0].exp())
        return torch.cat(out).numpy()


def prm_score(step_probs: Sequence[float]) -> float:
    """A solution's PRM score: the product of its steps' probabilities (Lightman et al. 2023)."""
    return math.prod(step_probs)


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True in each row (rows always have one: the EOS)."""
    idx = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask, idx, -1).max(-1).values


def _batch(problems: Sequence[ChainProblem], traces: Sequence[str]) -> Batch:
    if len(problems) != len(traces):
        raise ConfigError(f"{len(problems)} problems but {len(traces)} traces")
    exs = [Example(p.prompt, t, "chain") for p, t in zip(problems, traces, strict=True)]
    width = max(len(prompt_ids(e.prompt)) + len(e.completion) + 1 for e in exs)
    return collate(exs, width)


def step_targets(check: TraceCheck, kind: RMKind) -> list[float | None]:
    """Training labels for each step of a trace, read at `step_ends` (None: no label there).

    ORM: only the last, 1 when the final answer is right. PRM: every step up to and including the
    first wrong one (1 right, 0 wrong), nothing after it (Lightman et al. label up to the first
    mistake, sec. 2.4); a trace with no steps gets one label 0 at its EOS.
    """
    n = max(len(check.step_ok), 1)
    if kind in ("orm", "orm-steps"):
        return [None] * (n - 1) + [float(check.final_correct)]
    if not check.step_ok:
        return [0.0]
    first = check.first_error
    stop = len(check.step_ok) if first is None else first + 1
    return [float(ok) if i < stop else None for i, ok in enumerate(check.step_ok)]


@dataclasses.dataclass(frozen=True)
class RMTraining:
    """How both reward models are fitted (the same for ORM and PRM: only the labels differ).

    Attributes:
        steps: optimiser steps of ``batch_size`` traces drawn from the labelled set.
        lr: AdamW learning rate (linear warm-up over the first tenth).
        batch_size: traces per step.
    """

    # From the al-30k generator, 150 steps at 1e-3 left an al-30k PRM's right and wrong steps at
    # mean probabilities 0.85 and 0.84 on held-out traces; 300 steps at 3e-3 gave 0.89 and 0.41
    # (measured on 1,024 labelled traces).
    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        raise_problems(
            "RMTraining",
            [
                check_int("steps", self.steps, lo=1, hi=1_000_000),
                check_real("lr", self.lr, lo=0.0, lo_open=True, hi=1.0),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
            ],
        )


def train_step_rm(
    init: Transformer,
    problems: Sequence[ChainProblem],
    traces: Sequence[str],
    kind: RMKind,
    seed: int,
    training: RMTraining | None = None,
) -> StepRewardModel:
    """Fit an ORM or PRM, started from a copy of ``init``, on labelled traces (binary
    cross-entropy on the verdicts at the labelled steps' `step_ends`).

    Args:
        init: the starting model (Lightman et al. and Uesato et al. start from the base model).
        problems, traces: the labelled set (one problem per trace); labels come from the checker.
        kind: "orm", "orm-steps" or "prm".
        seed: minibatch order and dropout-free training seed.
        training: steps, learning rate, batch size.
    """
    cfg = training or RMTraining()
    rm = StepRewardModel(init.clone(), kind)
    checks = [check_trace(p, t) for p, t in zip(problems, traces, strict=True)]
    targets = [step_targets(c, kind) for c in checks]
    rng = random.Random(stream_seed("step-rm", kind, seed))
    torch.manual_seed(stream_seed("step-rm-torch", kind, seed) % (1 << 62))
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 10)
    rm.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / warmup)
        idx = [rng.randrange(len(traces)) for _ in range(cfg.batch_size)]
        b = _batch([problems[i] for i in idx], [traces[i] for i in idx])
        assert b.attention_mask is not None and b.loss_mask is not None
        v = rm.verdicts(b.tokens, b.attention_mask)
        ends = step_ends(b.tokens, b.loss_mask)
        if kind == "orm-steps":
            loss = _product_loss(v, ends, torch.tensor([targets[i][-1] or 0.0 for i in idx]))
        else:
            y, w = _target_grid(ends, [targets[i] for i in idx])
            loss = (F.binary_cross_entropy_with_logits(v, y, reduction="none") * w).sum() / w.sum().clamp(
                min=1
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
    rm.eval().requires_grad_(False)
    return rm


def _product_loss(v: torch.Tensor, ends: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the final-answer label against P(solution right) = the product of the step
    probabilities: ``-log prod p`` for a right answer, ``-log(1 - prod p)`` for a wrong one (which
    only says some step is wrong: multiple-instance learning)."""
    log_prod = (F.logsigmoid(v) * ends).sum(-1)
    log_not = torch.log(-torch.expm1(log_prod.clamp(max=-1e-6)))  # log(1 - prod p), stably
    return -(y * log_prod + (1 - y) * log_not).mean()


def _target_grid(
    ends: torch.Tensor, targets: Sequence[list[float | None]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and weights ``[batch, pos]`` at the step ends that carry a label."""
    y = torch.zeros(ends.shape)
    w = torch.zeros(ends.shape)
    for i, row in enumerate(targets):
        pos = ends[i].nonzero()[:, 0].tolist()
        for p, t in zip(pos, row, strict=False):
            if t is not None:
                y[i, p], w[i, p] = t, 1.0
    return y, w


@torch.no_grad()
def rm_accuracy(rm: StepRewardModel, problems: Sequence[ChainProblem], traces: Sequence[str]) -> float:
    """Share of a reward model's own labels (`step_targets`) it gets right at threshold 0.5."""
    right = total = 0
    for lo in range(0, len(traces), 512):
        ps, ts = problems[lo : lo + 512], traces[lo : lo + 512]
        for p, t, probs in zip(ps, ts, rm.step_probs(ps, ts), strict=True):
            if rm.kind == "orm-steps":  # its verdict on a solution is the product
                probs = [1.0] * (len(probs) - 1) + [prm_score(probs)]
            for q, y in zip(probs, step_targets(check_trace(p, t), rm.kind), strict=False):
                if y is not None:
                    right += (q > 0.5) == (y > 0.5)
                    total += 1
    return right / total if total else float("nan")


# ---- best of N --------------------------------------------------------------------------------


def selection_weights(m: int, n: int) -> np.ndarray:
    """P(the r-th best of ``m`` samples is the best of a uniformly random ``n``-subset), r = 0..m-1.

    The best of the subset has rank r when it holds sample r and n - 1 of the m - 1 - r worse ones:
    C(m - 1 - r, n - 1) / C(m, n). Averaging over every subset this way is the unbiased best-of-n
    estimate from m >= n samples that Lightman et al. use (sec. 3, best-of-N from 1860 samples).
    """
    if not 1 <= n <= m:
        raise ConfigError(f"best-of-n needs 1 <= n <= m samples, got n={n}, m={m}")
    r = np.arange(m)
    return np.asarray(special.comb(m - 1 - r, n - 1, exact=False) / special.comb(m, n, exact=False))


def bon_ns(max_n: int) -> list[int]:
    """The best-of-N grid of the studies: N = 1, 2, 4, ... and ``max_n`` itself."""
    out = [2**i for i in range(int(math.log2(max_n)) + 1)]
    return out if out[-1] == max_n else [*out, max_n]


def best_of_n(scores: np.ndarray, outcomes: np.ndarray, n: int) -> np.ndarray:
    """Per problem, the expected outcome of the best-scored of ``n`` of its samples.

    Args:
        scores: ``[problems, m]`` reward-model scores.
        outcomes: ``[problems, m]`` the outcome of each sample (e.g. 1 if its final answer is right).
        n: samples reranked.
    """
    s, o = np.asarray(scores, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    if s.shape != o.shape or s.ndim != 2:
        raise ConfigError(f"scores and outcomes must both be [problems, samples], got {s.shape}, {o.shape}")
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(o, order, axis=1) @ selection_weights(s.shape[1], n)


def bon_curve(
    scores: np.ndarray, checks: Sequence[Sequence[TraceCheck]], ns: Sequence[int]
) -> dict[str, list[float]]:
    """Final-answer accuracy and trace error of best-of-n selection for each n in ``ns``.

    Trace error at n is the share of selected final-correct solutions with a wrong step
    (Uesato et al. 2022): E[final right and a step wrong] / E[final right], pooled over problems.
    """
    right = np.array([[c.final_correct for c in row] for row in checks], dtype=np.float64)
    bad = np.array([[c.right_for_wrong_reasons for c in row] for row in checks], dtype=np.float64)
    acc, err = [], []
    for n in ns:
        a, b = best_of_n(scores, right, n), best_of_n(scores, bad, n)
        acc.append(float(a.mean()))
        err.append(float(b.sum() / a.sum()) if a.sum() > 0 else float("nan"))
    return {"final_accuracy": acc, "trace_error": err}


def check_all(problems: Sequence[ChainProblem], traces: Sequence[Sequence[str]]) -> list[list[TraceCheck]]:
    """`check_trace` of every sample of every problem."""
    return [[check_trace(p, t) for t in row] for p, row in zip(problems, traces, strict=True)]


def flat(
    problems: Sequence[ChainProblem], traces: Sequence[Sequence[str]]
) -> tuple[list[ChainProblem], list[str]]:
    """One problem per trace: the flat lists a reward model scores."""
    ps = [p for p, row in zip(problems, traces, strict=True) for _ in row]
    return ps, [t for row in traces for t in row]


def summary_rates(checks: Sequence[Sequence[TraceCheck]]) -> dict[str, Any]:
    """The generator's own rates over every sample: final accuracy, all steps right, trace error."""
    every = [c for row in checks for c in row]
    right = [c for c in every if c.final_correct]
    return {
        "final_accuracy": sum(c.final_correct for c in every) / len(every),
        "steps_ok": sum(c.steps_ok for c in every) / len(every),
        "trace_error": sum(not c.steps_ok for c in right) / len(right) if right else float("nan"),
        "samples": len(every),
    }


# ---- RL against a reward model ----------------------------------------------------------------

Reward = Callable[[Sequence[ChainProblem], Sequence[str]], np.ndarray]
Measure = Callable[[Sequence[ChainProblem], Sequence[str]], dict[str, float]]


def completion_logprobs(
    model: Transformer, problems: Sequence[ChainProblem], traces: Sequence[str]
) -> torch.Tensor:
    """Summed log-probability of each trace (its EOS included) given its problem's prompt."""
    from alignlab.safety.logprobs import token_logprobs

    b = _batch(problems, traces)
    assert b.loss_mask is not None
    logits = model(b.tokens, attention_mask=b.attention_mask)
    lp = token_logprobs(logits[:, :-1], b.tokens[:, 1:])
    return (lp * b.loss_mask[:, 1:].float()).sum(-1)


def rloo_chain(
    policy: Transformer,
    reward: Reward,
    measure: Measure,
    steps: int,
    prompts: int,
    samples: int,
    lr: float,
    eval_every: int,
    n_eval: int,
    seed: int,
    noise: TraceNoise | None = None,
) -> list[dict[str, float]]:
    """RLOO (Ahmadian et al. 2024) on a copy of ``policy`` against ``reward``, without a KL
    penalty; every ``eval_every`` steps (and at step 0) one sample per held-out problem gives the
    KL from the start and ``measure``'s numbers.

    KL(policy || start) is the mean log-ratio over the measured samples (unbiased; clipped at 0
    for d = sqrt(KL)).
    """
    # Imported here: alignlab.safety imports this module (overoptimisation's RL arm).
    from alignlab.safety.rl import policy_gradient_step, rloo_advantages

    ref = policy.clone().eval().requires_grad_(False)
    model = policy.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    held = chain_problems(n_eval, seed, "rl-eval", noise)
    rows: list[dict[str, float]] = []

    def record(step: int) -> None:
        texts = [row[0] for row in sample_traces(model, held, 1, seed + 7919 * (step + 1))]
        with torch.no_grad():
            kl = float(
                (completion_logprobs(model, held, texts) - completion_logprobs(ref, held, texts)).mean()
            )
        kl = max(kl, 0.0)
        rows.append({"step": float(step), "kl": kl, "d": math.sqrt(kl), **measure(held, texts)})

    record(0)
    for step in range(steps):
        problems = chain_problems(prompts, seed, f"rl-{step}", noise)
        reps = [p for p in problems for _ in range(samples)]
        texts = [t for row in sample_traces(model, problems, samples, seed * 1_000_003 + step) for t in row]
        model.train()
        logp = completion_logprobs(model, reps, texts)
        with torch.no_grad():
            r = torch.from_numpy(np.asarray(reward(reps, texts), dtype=np.float32))
            adv = rloo_advantages(r, samples)
        policy_gradient_step(model, opt, logp, adv)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            record(step + 1)
    return rows


def chain_rates(problems: Sequence[ChainProblem], traces: Sequence[str]) -> dict[str, float]:
    """Final accuracy, all-steps-right rate and trace error of one sample per problem."""
    rates = summary_rates([[check_trace(p, t)] for p, t in zip(problems, traces, strict=True)])
    return {k: float(v) for k, v in rates.items() if k != "samples"}
