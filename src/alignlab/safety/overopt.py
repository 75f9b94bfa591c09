"""Reward-model overoptimisation (Gao, Schulman & Hilton 2022, "Scaling Laws for Reward Model
Overoptimization") on the step task.

A fixed gold scorer (`gold_reward`: the share of a chain trace's steps that are right, partial
credit) stands in for Gao et al.'s gold reward model. Proxy reward models of the family are fitted
with the Bradley-Terry loss on ``n`` pairs of the policy's own samples whose preference is drawn
from the gold scores with noise (`ProxyData`), then the policy is optimised against each proxy:

* best-of-n: the KL from the policy to its best-of-n is ``log n - (n - 1) / n`` (analytic; Gao
  et al. sec. 2.2, after Stiennon et al. 2020), so d = sqrt(KL) needs no estimate;
* RL: RLOO against the proxy (`rl_arm`), with the KL measured on samples.

Gold and proxy rewards, taken relative to the starting policy's, are fitted against d with Gao et
al.'s forms (their eqs. 1-2): ``R(d) = d (alpha - beta d)`` for best-of-n and
``R(d) = d (alpha - beta log d)`` for RL (`fit_gao`); where beta > 0 the gold reward peaks at
``d* = alpha / (2 beta)`` (best-of-n) or ``d* = exp(alpha / beta - 1)`` (RL), with intervals from
the bootstrap refits.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.errors import ConfigError
from alignlab.model.transformer import Transformer
from alignlab.oversight.process import StepRewardModel, _batch, best_of_n, step_ends
from alignlab.scaling._resample import (
    Resample,
    bootstrap_params,
    expanded_tail,
    method_name,
    percentile_estimate,
    resolve_scheme,
)
from alignlab.scaling._resample import Resampler as _Resampler
from alignlab.scaling._validate import FloatArray, check_level, check_n_boot, check_xy
from alignlab.scaling.fits import CurveFit, _shared_fields
from alignlab.stats import Estimate
from alignlab.tasks import stream_seed
from alignlab.tasks.op_chain import ChainProblem, TraceNoise, split_steps

# ---- gold -------------------------------------------------------------------------------------


def gold_reward(problem: ChainProblem, trace: str) -> float:
    """The gold score: steps written right and in place, over the longer of the canonical and
    the written trace (so padding a trace with extra steps costs as much as leaving steps out)."""
    written, canon = split_steps(trace), problem.steps()
    right = sum(i < len(canon) and s == canon[i] for i, s in enumerate(written))
    return right / max(len(canon), len(written), 1)


# ---- proxies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyData:
    """The proxy reward model's training data and fit.

    Attributes:
        n_pairs: preference pairs (two samples of the policy for one training problem each).
        label_temperature: the preference is drawn as P(a > b) = sigmoid((gold_a - gold_b) / t)
            (Bradley-Terry label noise; gold ties are coin flips). Gold steps are 1/3-1/5 apart,
            so 0.1 mislabels ~5-12% of pairs one step apart.
        epochs: passes over the pairs, between ``min_steps`` and ``max_steps`` optimiser steps.
        batch_size: pairs per step.
        lr_scale: AdamW peak learning rate as a fraction of the proxy size's own training rate
            (`alignlab.oversight.process.SIZE_LR`; `ProxyData.lr`).
    """

    n_pairs: int = 1000
    label_temperature: float = 0.1
    epochs: float = 2.0
    min_steps: int = 100
    max_steps: int = 600
    batch_size: int = 32
    # A fine-tune starts well below the rate its model was trained at. One rate for every size
    # (3e-3) left the al-100k proxies at chance (held-out pair accuracy 0.56 on 10,000 pairs,
    # 600 steps; 0.86 at 1e-3, 0.92 at 3e-4), since 3e-3 is al-100k's own peak; at 0.1 of each
    # size's rate al-30k reached 0.87 (0.78 at 3e-3) and al-100k 0.92 (seed 0, measured).
    lr_scale: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(
            "ProxyData",
            [
                check_int("n_pairs", self.n_pairs, lo=2, hi=10_000_000),
                check_real("label_temperature", self.label_temperature, lo=0.0, lo_open=True),
                check_real("epochs", self.epochs, lo=0.0, lo_open=True),
                check_int("min_steps", self.min_steps, lo=1, hi=1_000_000),
                check_int("max_steps", self.max_steps, lo=self.min_steps, hi=1_000_000),
                check_int("batch_size", self.batch_size, lo=1, hi=4096),
                check_real("lr_scale", self.lr_scale, lo=0.0, lo_open=True, hi=1.0),
            ],
        )

    def lr(self, size: str) -> float:
        """The peak learning rate of a proxy of ``size``."""
        from alignlab.oversight.process import SIZE_LR

        if size not in SIZE_LR:
            raise ConfigError(f"no learning rate for proxy size {size!r}; choose from {', '.join(SIZE_LR)}")
        return self.lr_scale * SIZE_LR[size]

    @property
    def steps(self) -> int:
        return int(
            min(self.max_steps, max(self.min_steps, round(self.epochs * self.n_pairs / self.batch_size)))
        )


def preference_labels(gold_a: ArrayLike, gold_b: ArrayLike, temperature: float, seed: int) -> np.ndarray:
    """1 where a is preferred: drawn with P = sigmoid((gold_a - gold_b) / temperature)."""
    a, b = np.asarray(gold_a, dtype=np.float64), np.asarray(gold_b, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-(a - b) / temperature))
    rng = np.random.default_rng(stream_seed("proxy-labels", seed) % (1 << 62))
    return (rng.random(a.shape) < p).astype(np.float64)


class ProxyRM(StepRewardModel):
    """A scalar reward model of the family: the sum of its verdict logits over the trace's steps
    (`alignlab.oversight.process.step_ends`), fitted to preferences between whole traces.

    Gao et al.'s reward models read one scalar at the last token. Read there, our proxies stayed at
    chance on held-out pairs (0.44-0.63 pair accuracy from 100 to 10,000 pairs, al-30k and
    al-100k, measured), as the outcome reward model did: one position of a two- or three-layer
    model cannot check every step. Summed over steps, each verdict is read where its step was
    computed, as a process reward model's are, while the training signal stays a preference
    between whole traces. A sum also rewards writing more steps, which the gold scorer marks
    down: a way to overoptimise that the proxy's data never shows.
    """

    def __init__(self, body: Transformer) -> None:
        super().__init__(body, "orm")

    @torch.no_grad()
    def rewards(
        self, problems: Sequence[ChainProblem], traces: Sequence[str], chunk: int = 512
    ) -> np.ndarray:
        parts = [
            self._rewards(problems[i : i + chunk], traces[i : i + chunk])
            for i in range(0, len(traces), chunk)
        ]
        return torch.cat(parts).numpy()

    def _rewards(self, problems: Sequence[ChainProblem], traces: Sequence[str]) -> torch.Tensor:
        b = _batch(problems, traces)
        assert b.attention_mask is not None and b.loss_mask is not None
        v = self.verdicts(b.tokens, b.attention_mask)
        return (v * step_ends(b.tokens, b.loss_mask)).sum(-1)


def train_proxy(
    init: Transformer,
    problems: Sequence[ChainProblem],
    pairs: Sequence[tuple[str, str]],
    labels: ArrayLike,
    data: ProxyData,
    seed: int,
    size: str,
) -> ProxyRM:
    """Fit a proxy from a copy of ``init`` (a model of ``size``) with the Bradley-Terry loss on
    labelled pairs (``labels[i]`` is 1 when ``pairs[i][0]`` is preferred)."""
    y = np.asarray(labels, dtype=np.float64)
    if not (len(problems) == len(pairs) == y.size) or y.size == 0:
        raise ConfigError(
            f"need one problem and one label per pair, got {len(problems)}, {len(pairs)}, {y.size}"
        )
    lr = data.lr(size)
    rm = ProxyRM(init.clone())
    rng = random.Random(stream_seed("proxy-fit", seed))
    torch.manual_seed(stream_seed("proxy-fit-torch", seed) % (1 << 62))
    opt = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, data.steps // 10)
    rm.train()
    for step in range(data.steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        idx = [rng.randrange(y.size) for _ in range(data.batch_size)]
        ps = [problems[i] for i in idx]
        r = rm._rewards(ps + ps, [pairs[i][0] for i in idx] + [pairs[i][1] for i in idx])
        margin = r[: len(idx)] - r[len(idx) :]
        sign = torch.tensor([2.0 * y[i] - 1.0 for i in idx])
        loss = -F.logsigmoid(sign * margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
    rm.eval().requires_grad_(False)
    return rm


def pair_accuracy(rm: ProxyRM, problems: Sequence[ChainProblem], pairs: Sequence[tuple[str, str]]) -> float:
    """Share of pairs with different gold scores that the proxy orders like the gold scorer."""
    ga = np.array([gold_reward(p, a) for p, (a, _) in zip(problems, pairs, strict=True)])
    gb = np.array([gold_reward(p, b) for p, (_, b) in zip(problems, pairs, strict=True)])
    keep = ga != gb
    if not keep.any():
        return float("nan")
    ra = rm.rewards(problems, [a for a, _ in pairs])
    rb = rm.rewards(problems, [b for _, b in pairs])
    return float(((ra > rb) == (ga > gb))[keep].mean())


# ---- best of n --------------------------------------------------------------------------------


def bon_kl(n: int | np.ndarray) -> np.ndarray:
    """KL(best-of-n || policy) = log n - (n - 1) / n nats (Gao et al. 2022, sec. 2.2)."""
    a = np.asarray(n, dtype=np.float64)
    if (a < 1).any():
        raise ConfigError(f"best-of-n needs n >= 1, got {a.min():g}")
    return np.asarray(np.log(a) - (a - 1) / a)


def bon_rewards(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]) -> dict[str, list[float]]:
    """Best-of-n by the proxy: mean proxy and gold reward of the pick over problems, for each n,
    with d = sqrt(KL) (`bon_kl`)."""
    return {
        "n": [int(n) for n in ns],
        "d": [float(math.sqrt(bon_kl(n))) for n in ns],
        "proxy": [float(best_of_n(proxy, proxy, n).mean()) for n in ns],
        "gold": [float(best_of_n(proxy, gold, n).mean()) for n in ns],
    }


# ---- Gao et al.'s functional forms ------------------------------------------------------------

Form = Literal["bon", "rl"]


@dataclass(frozen=True, eq=False)
class GaoFit(CurveFit):
    """Gao et al.'s (2022) reward-vs-distance forms, linear in (alpha, beta).

    Attributes:
        alpha: initial slope of reward per unit d = sqrt(KL).
        beta: curvature; > 0 means the reward turns down (overoptimisation).
        peak_d: where the fitted reward peaks (upper bound inf where refits have beta <= 0).
        peak_reward: the fitted reward there (relative to the starting policy).
    """

    alpha: Estimate
    beta: Estimate
    peak_d: Estimate
    peak_reward: Estimate

    kind: ClassVar[Form] = "bon"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "peak_d", "peak_reward")

    def _eta(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        return np.asarray(theta[..., 0:1] * x - theta[..., 1:2] * _curvature(x, self.kind), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class GaoBoNFit(GaoFit):
    """Best-of-n: R(d) = d (alpha - beta d)."""

    kind: ClassVar[Form] = "bon"
    form: ClassVar[str] = "gao-bon"
    formula: ClassVar[str] = "R(d) = d (alpha - beta d)"


@dataclass(frozen=True, eq=False)
class GaoRLFit(GaoFit):
    """RL: R(d) = d (alpha - beta log d)."""

    kind: ClassVar[Form] = "rl"
    form: ClassVar[str] = "gao-rl"
    formula: ClassVar[str] = "R(d) = d (alpha - beta log d)"


def _curvature(d: FloatArray, kind: str) -> FloatArray:
    return np.asarray(d * d if kind == "bon" else d * np.log(d), dtype=np.float64)


def _solve(d: FloatArray, r: FloatArray, kind: str) -> FloatArray:
    basis = np.stack([d, -_curvature(d, kind)], axis=1)
    theta, *_ = np.linalg.lstsq(basis, r, rcond=None)
    return np.asarray(theta, dtype=np.float64)


def peak(alpha: ArrayLike, beta: ArrayLike, kind: Form) -> tuple[np.ndarray, np.ndarray]:
    """``(d*, R(d*))`` of the fitted form over d >= 0; inf and NaN where beta <= 0 (no turn-down).

    A best-of-n fit with alpha <= 0 falls from the start: its peak is the starting policy (d* = 0,
    R = 0), not the vertex a / (2 b) < 0 of the parabola, which lies outside the curve's domain.
    """
    a, b = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "bon":
            d = np.where(b > 0, np.maximum(a, 0.0) / (2 * b), np.inf)
            r = np.where(b > 0, np.maximum(a, 0.0) ** 2 / (4 * b), np.nan)
        else:
            d = np.where(b > 0, np.exp(a / b - 1), np.inf)
            r = np.where(b > 0, b * d, np.nan)  # d (alpha - beta log d) = beta d at the peak
    return d, r


def fit_gao(
    d: ArrayLike,
    reward: ArrayLike,
    kind: Form,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    resample: Resample = "auto",
) -> GaoFit:
    """Fit ``R(d) = d (alpha - beta d)`` (``kind="bon"``) or ``d (alpha - beta log d)`` (``"rl"``).

    Args:
        d: sqrt(KL) of each point (> 0: the starting policy, d = 0, is the origin every curve
            passes through, not a point to fit).
        reward: reward minus the starting policy's, at each d.
        kind: "bon" or "rl".
        level, n_boot, seed, resample: the bootstrap of refits (see `alignlab.scaling.fits`);
            with several seeds at each d, ``"auto"`` resamples seeds within each d.

    Returns:
        `GaoFit` with alpha, beta and the peak's location and height as Estimates.

    Example:
        >>> d = np.linspace(0.2, 3, 12)
        >>> fit = fit_gao(d, d * (1.0 - 0.4 * d), "bon", n_boot=200)
        >>> round(fit.alpha.value, 3), round(fit.beta.value, 3), round(fit.peak_d.value, 2)
        (1.0, 0.4, 1.25)
    """
    if kind not in ("bon", "rl"):
        raise ConfigError(f"kind must be 'bon' or 'rl', got {kind!r}")
    xa, ya, _ = check_xy(d, reward, what=f"Gao {kind}", n_params=2)
    check_level(level)
    check_n_boot(n_boot)
    theta = _solve(xa, ya, kind)
    rs = _Resampler(xa, ya, resolve_scheme(xa, resample), min_distinct=3, seed=seed)
    boot = bootstrap_params(lambda i, yi: _solve(xa[i], yi, kind), rs, n_boot, 2)
    fitted = theta[0] * xa - theta[1] * _curvature(xa, kind)
    method = method_name(level, rs.scheme)
    tail = expanded_tail(level, xa.size, xa.size - 2, rs.scheme)

    def est(value: float, samples: FloatArray) -> Estimate:
        return percentile_estimate(value, samples, n=xa.size, level=level, method=method, tail=tail)

    pd, pr = peak(theta[0], theta[1], kind)
    bd, br = peak(boot[:, 0], boot[:, 1], kind)
    # A refit without a turn-down has its peak at infinity: kept (not dropped) so that the
    # interval's upper end says "no peak" when enough refits have none.
    bd = np.where(np.isfinite(bd), bd, np.finfo(np.float64).max)
    cls = GaoBoNFit if kind == "bon" else GaoRLFit
    return cls(
        **_shared_fields(xa, ya, fitted, np.ones_like(ya), theta, boot, rs, seed, level, tail),
        alpha=est(theta[0], boot[:, 0]),
        beta=est(theta[1], boot[:, 1]),
        peak_d=_peak_estimate(float(pd), bd, xa.size, level, method, tail),
        peak_reward=est(float(pr), br),
    )


def _peak_estimate(
    value: float, samples: FloatArray, n: int, level: float, method: str, tail: float
) -> Estimate:
    e = percentile_estimate(value, samples, n=n, level=level, method=method, tail=tail)
    big = np.finfo(np.float64).max
    return dataclasses.replace(e, lo=math.inf if e.lo >= big else e.lo, hi=math.inf if e.hi >= big else e.hi)


# ---- RL arm -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLArm:
    """RLOO against a proxy (Ahmadian et al. 2024), without a KL penalty as in Gao et al.'s main
    runs (they found a penalty acts like early stopping, sec. 3.6), measured along the run.

    Attributes:
        steps: policy-gradient steps (0: no RL arm).
        prompts: problems per step.
        samples: samples per problem (the leave-one-out baseline needs 2+).
        lr: AdamW learning rate.
        eval_every: steps between measurements of KL, proxy and gold reward.
        n_eval: held-out problems per measurement (one sample each).
    """

    steps: int = 0
    prompts: int = 8
    samples: int = 4
    lr: float = 3e-4
    eval_every: int = 20
    n_eval: int = 128

    def __post_init__(self) -> None:
        raise_problems(
            "RLArm",
            [
                check_int("steps", self.steps, lo=0, hi=1_000_000),
                check_int("prompts", self.prompts, lo=1, hi=4096),
                check_int("samples", self.samples, lo=2, hi=1024),
                check_real("lr", self.lr, lo=0.0, lo_open=True, hi=1.0),
                check_int("eval_every", self.eval_every, lo=1, hi=1_000_000),
                check_int("n_eval", self.n_eval, lo=2, hi=100_000),
            ],
        )


def rl_arm(
    policy: Transformer,
    proxy: ProxyRM,
    arm: RLArm,
    seed: int,
    noise: TraceNoise | None = None,
) -> list[dict[str, float]]:
    """RLOO on a copy of ``policy`` against ``proxy`` (`alignlab.oversight.process.rloo_chain`);
    rows of (step, KL, d, proxy, gold) measured every ``arm.eval_every`` steps on held-out
    problems, step 0 included; rewards are means over the measured samples."""
    from alignlab.oversight.process import rloo_chain

    def measure(problems: Sequence[ChainProblem], traces: Sequence[str]) -> dict[str, float]:
        gold = [gold_reward(p, t) for p, t in zip(problems, traces, strict=True)]
        return {"proxy": float(proxy.rewards(problems, traces).mean()), "gold": float(np.mean(gold))}

    return rloo_chain(
        policy,
        proxy.rewards,
        measure,
        arm.steps,
        arm.prompts,
        arm.samples,
        arm.lr,
        arm.eval_every,
        arm.n_eval,
        seed,
        noise,
    )
