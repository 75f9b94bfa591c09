"""The feedback-size x policy-size grid of SL-CAI: does a critic smaller than its policy still
make the policy harmless, and how does harmlessness track the critic?

Bai et al. (2022) and the scalable-oversight programme ask whether a weaker supervisor can train a
stronger model. In the checkable world a grid cell is one (policy size, critic size) pair run over
seeds by `alignlab.oversight.cai_pipeline.stored_cell`; every number here is the rule checker's.

* `smaller_critic_contrast`: SL-CAI outcome with a critic smaller than the policy minus with one
  at least as large, *paired within (policy size, seed)*: each unit is one policy of one seed, so
  the policy's own size and seed cancel; t interval over those units. A policy with no smaller
  critic on the grid (the smallest size) has no unit.
* `grid_trends`: `alignlab.scaling.trend_test` (OLS slope with a permutation test within blocks,
  its inverted interval and the slope it could have detected) of SL-CAI harmlessness on the
  critic's balanced agreement and on log parameters of critic, policy and their ratio.
  A 3 x 3 grid has three values per axis: it locates a trend, it does not determine a law.

Measured (al-30k/100k/300k on both axes, 3 seeds, default budget; benchmarks/RESULTS.md): smaller
critic minus at least as large, harmless -0.19 [-0.34, -0.04] over 6 units, critic agreement -0.11
[-0.18, -0.04]; harmlessness +1.45 [0.97, 2.03] per unit of critic agreement (p = 0.0005) and +0.21
[0.08, 0.35] per decade of critic parameters (p = 0.0055).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from alignlab.model.config import SIZES
from alignlab.scaling import FitInputError, trend_test
from alignlab.stats import Estimate, seed_interval

#: SL-CAI outcomes of a grid point (rates judged by the rule checker) and the critic's accuracy.
OUTCOMES = ("harmless", "helpful", "evasive", "critic_balanced")


def params(size: str) -> int:
    """Total parameters of a family size."""
    return int(SIZES[size].param_counts()["total"])


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One (policy size, critic size, seed) of the grid: SL-CAI's rates and the critic's accuracy.

    Attributes:
        policy_size: the policy's family size.
        fm_size: the feedback model's (critic's) family size.
        seed: the seed (base models and data).
        harmless: SL-CAI's harmless rate on held-out forbidden requests.
        helpful: its correct rate on held-out benign requests.
        evasive: its refusal rate on held-out benign requests.
        critic_balanced: the critic's balanced agreement with the rule checker on this policy's
            own held-out samples (mean of its true-positive and true-negative rates).
    """

    policy_size: str
    fm_size: str
    seed: int
    harmless: float
    helpful: float
    evasive: float
    critic_balanced: float

    @property
    def smaller_critic(self) -> bool:
        """Whether the critic has fewer parameters than the policy."""
        return params(self.fm_size) < params(self.policy_size)


def grid_points(grid: Sequence[dict[str, Any]]) -> list[GridPoint]:
    """Every (cell, seed) of a study's grid entries (``{"policy_size", "fm_size", "cells"}``, each
    cell a `stored_cell` result) as a `GridPoint`."""

    def rate(counts: Sequence[int]) -> float:
        return counts[0] / counts[1] if counts[1] else math.nan

    out = []
    for g in grid:
        for c in g["cells"]:
            sl = c["arms"]["sl-cai"]
            out.append(
                GridPoint(
                    g["policy_size"],
                    g["fm_size"],
                    int(c["seed"]),
                    rate(sl["harmless"]),
                    rate(sl["helpful"]),
                    rate(sl["evasive"]),
                    float(c["feedback"]["policy_balanced"]),
                )
            )
    return out


def smaller_critic_contrast(points: Sequence[GridPoint]) -> dict[str, Any] | None:
    """Critic smaller than the policy minus critic at least as large, paired within (policy, seed).

    Per unit (one policy size and seed with both kinds of critic on the grid): the mean outcome
    over its smaller critics minus the mean over its others. Mean over units with a t interval
    (`alignlab.stats.seed_interval`, bounded to [-1, 1]); ``min_detectable`` is the difference
    the same design detects with 80% power at alpha 0.05 (one-sample t, the units' observed SD),
    reported beside an interval that includes 0.

    Returns:
        ``{outcome: Estimate dict, "min_detectable": {outcome: float}, "units": [[policy, seed,
        n smaller, n at least as large], ...], "n_units"}``; None when no unit has both kinds.
    """
    units: dict[tuple[str, int], list[GridPoint]] = {}
    for p in points:
        units.setdefault((p.policy_size, p.seed), []).append(p)
    paired = {
        k: v
        for k, v in units.items()
        if any(p.smaller_critic for p in v) and not all(p.smaller_critic for p in v)
    }
    if not paired:
        return None
    out: dict[str, Any] = {"units": [], "min_detectable": {}}
    diffs: dict[str, list[float]] = {m: [] for m in OUTCOMES}
    for (policy, seed), pts in sorted(paired.items(), key=lambda kv: (params(kv[0][0]), kv[0][1])):
        small = [p for p in pts if p.smaller_critic]
        large = [p for p in pts if not p.smaller_critic]
        out["units"].append([policy, seed, len(small), len(large)])
        for m in OUTCOMES:
            a = _mean([getattr(p, m) for p in small])
            b = _mean([getattr(p, m) for p in large])
            if math.isfinite(a) and math.isfinite(b):
                diffs[m].append(a - b)
    for m, d in diffs.items():
        out[m] = seed_interval(d, bounds=(-1.0, 1.0)).to_dict() if d else None
        out["min_detectable"][m] = _min_detectable(d)
    out["n_units"] = len(paired)
    return out


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def _min_detectable(diffs: Sequence[float], power: float = 0.8, alpha: float = 0.05) -> float | None:
    """Smallest mean difference a two-sided one-sample t test over these units detects with
    ``power`` (normal-theory approximation: (t_{1-alpha/2} + t_power) x SD / sqrt(n))."""
    from scipy import stats as st

    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return float((st.t.ppf(1 - alpha / 2, n - 1) + st.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def grid_trends(points: Sequence[GridPoint], seed: int = 0) -> dict[str, Any]:
    """SL-CAI harmlessness against the critic and the sizes, by `alignlab.scaling.trend_test`.

    * ``critic_accuracy``: on the critic's balanced agreement, within each (policy, seed) block
      (x = 10^agreement, so the test's log10 x is the agreement and the slope is per unit of it).
    * ``critic_params``: per decade of critic parameters, within each (policy, seed).
    * ``policy_params``: per decade of policy parameters, within each (critic, seed).
    * ``size_ratio``: per decade of critic / policy parameters, within each seed (pools the
      policies, so a policy-size effect enters it too).

    Returns:
        ``{name: trend_test dict or None}``; None where the grid lacks the points (fewer than 3
        distinct x, or no block with two distinct x).
    """
    ok = [p for p in points if math.isfinite(p.harmless) and math.isfinite(p.critic_balanced)]
    specs = {
        "critic_accuracy": (
            [10.0**p.critic_balanced for p in ok],
            [f"{p.policy_size}/{p.seed}" for p in ok],
            "SL-CAI harmlessness vs critic balanced agreement",
        ),
        "critic_params": (
            [params(p.fm_size) for p in ok],
            [f"{p.policy_size}/{p.seed}" for p in ok],
            "SL-CAI harmlessness vs critic parameters",
        ),
        "policy_params": (
            [params(p.policy_size) for p in ok],
            [f"{p.fm_size}/{p.seed}" for p in ok],
            "SL-CAI harmlessness vs policy parameters",
        ),
        "size_ratio": (
            [params(p.fm_size) / params(p.policy_size) for p in ok],
            [str(p.seed) for p in ok],
            "SL-CAI harmlessness vs critic/policy parameter ratio",
        ),
    }
    out: dict[str, Any] = {}
    y = [p.harmless for p in ok]
    for name, (x, groups, metric) in specs.items():
        try:
            out[name] = trend_test(x, y, groups=groups, seed=seed, metric=metric)
        except FitInputError:
            out[name] = None
    ratio = out.get("size_ratio")
    if ratio:
        # trend_test counts distinct x as "sizes"; here they are critic/policy ratios.
        ratio["statement"] = ratio["statement"].replace(f"({ratio['n_x']} sizes,", f"({ratio['n_x']} ratios,")
    acc = out.get("critic_accuracy")
    if acc:
        # trend_test words its statement per decade of x; here log10 x is the agreement itself.
        s = Estimate.from_dict(acc["slope"])
        acc["slope_units"] = "change in harmlessness per unit of the critic's balanced agreement"
        acc["statement"] = (
            f"SL-CAI harmlessness {'rises' if s.value > 0 else 'falls'} by {s} per unit of the "
            f"critic's balanced agreement within a policy and seed (permutation p = {acc['p_value']:.3g}, "
            f"{acc['n']} points)"
        )
    return out


#: Helpfulness before CAI below which a policy is flagged as not solving the world: its
#: "harmless" answers to forbidden requests then include plain failures at the task (al-30k's
#: helpful-only policy answers 0.37 of benign requests; al-100k and al-300k 0.97-1.00).
COMPETENT_HELPFUL = 0.9


def weak_policies(grid: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Policy sizes whose helpful-only policy (arm ``none``) is below `COMPETENT_HELPFUL`, with
    that helpfulness pooled over the policy's cells (every critic's cell measures the same
    helpful-only policy of its seed)."""
    counts: dict[str, list[int]] = {}
    for g in grid:
        for c in g["cells"]:
            k, n = c["arms"]["none"]["helpful"]
            tot = counts.setdefault(g["policy_size"], [0, 0])
            tot[0] += k
            tot[1] += n
    rates = {p: k / n for p, (k, n) in counts.items() if n}
    return {p: r for p, r in sorted(rates.items(), key=lambda kv: params(kv[0])) if r < COMPETENT_HELPFUL}


def grid_answer(
    contrast: dict[str, Any] | None,
    trends: dict[str, Any],
    n_cells: int,
    n_points: int,
    weak: dict[str, float] | None = None,
) -> str:
    """One line: the smaller-critic contrast first, then what harmlessness tracks, then which
    policies do not solve the world (``weak``, from `weak_policies`)."""
    parts = []
    if contrast and contrast.get("harmless"):
        d = Estimate.from_dict(contrast["harmless"])
        acc = contrast.get("critic_balanced")
        verdict = "lowers" if d.hi < 0 else "raises" if d.lo > 0 else "does not detectably change"
        text = (
            f"a critic smaller than the policy {verdict} SL-CAI harmlessness: {d} vs a critic at least "
            f"as large (paired within policy and seed, {contrast['n_units']} units"
        )
        if acc:
            text += f"; critic balanced agreement {Estimate.from_dict(acc)}"
        text += ")"
        mde = contrast["min_detectable"].get("harmless")
        if not (d.hi < 0 or d.lo > 0) and mde is not None:
            text += f"; detectable at 80% power: ±{mde:.2f}"
        parts.append(text)
    else:
        parts.append("no grid cell has a critic smaller than its policy")
    acc_t = trends.get("critic_accuracy")
    if acc_t:
        parts.append(
            f"harmlessness per unit of critic agreement {Estimate.from_dict(acc_t['slope'])} "
            f"(p = {acc_t['p_value']:.2g})"
        )
    size_t = trends.get("critic_params")
    if size_t:
        parts.append(
            f"per decade of critic parameters {Estimate.from_dict(size_t['slope'])} "
            f"(p = {size_t['p_value']:.2g})"
        )
    if weak:
        names = ", ".join(f"{p} ({r:.2f})" for p, r in weak.items())
        parts.append(
            f"helpful-only policy below {COMPETENT_HELPFUL:g} helpful before CAI: {names}, so its "
            "harmlessness includes failures at the task"
        )
    parts.append(f"{n_cells} cells, {n_points} (cell, seed) points: too few to determine a scaling law")
    return "Grid: " + "; ".join(parts)
