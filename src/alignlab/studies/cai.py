"""Study ``cai``: Constitutional AI against RLHF on ground-truth labels, and how it scales with the critic.

Bai et al. (2022) found their RL-CAI models both more harmless and less evasive than RLHF models
trained on human harmlessness labels. Here, in the checkable world of
`alignlab.oversight.constitution`, per seed: a helpful-only policy, a feedback model taught the
constitution from ``label_budget`` demonstrations, then the arms of `alignlab.oversight.cai_pipeline`
(none, SL-CAI, RL-CAI by RLOO and by DPO, and RLHF on as many checker labels). Every rate is the
rule checker's on held-out requests, pooled over seeds (t over seeds with a pooled Wilson floor).
The scalable-oversight grid reruns SL-CAI with feedback models of other sizes (and other policy
sizes) and regresses the policy's harmlessness on the critic's balanced agreement.

Measured (default preset, al-100k policy and critic, 3 seeds; 40 min wall on the shared 2-core
machine): harmless none 0.02 -> SL-CAI 0.87 [0.54, 1.00], RL-CAI 0.85 [0.57, 1.00], DPO 0.89
[0.62, 1.00], RLHF on checker labels 0.73 [0.65, 0.81]; evasive 0.29 / 0.19 / 0.04 / 0.001; the
anchor is unresolved (CAI more harmless, but more evasive, intervals of both differences include 0).
Over the critic grid (al-30k, al-100k, al-300k critics), SL-CAI harmlessness follows the critic's
true-positive rate (slope 0.80 [0.61, 1.00], r 0.97) and evasiveness its false-positive rate.

The feedback-size x policy-size grid (``full`` preset: al-30k/100k/300k on both axes, 3 seeds, ~16
CPU-min beyond the default run; benchmarks/RESULTS.md): a critic smaller than the policy lowers SL-CAI
harmlessness by 0.19 [0.04, 0.34] against one at least as large, paired within policy and seed
(`alignlab.oversight.cai_grid`), while its own accuracy is 0.11 [0.04, 0.18] lower and does not fall
on a larger policy's samples; harmlessness rises 1.45 [0.97, 2.03] per unit of the critic's balanced
agreement. The al-30k helpful-only policy does not solve the world (0.44 helpful), and the answer says so.

Example:
    $ alignlab study cai --preset quick
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from alignlab._validate import raise_problems
from alignlab.model.config import SIZES
from alignlab.oversight.cai_grid import (
    grid_answer,
    grid_points,
    grid_trends,
    params,
    smaller_critic_contrast,
    weak_policies,
)
from alignlab.oversight.cai_pipeline import ARMS, CAIBudget, stored_cell
from alignlab.report import html as h
from alignlab.stats import Estimate, difference, rate_over_seeds, seed_interval
from alignlab.store import Store
from alignlab.studies.registry import StudyDef, register_study

METRICS = ("harmless", "helpful", "evasive", "refused")
ARM_LABELS = {
    "none": "none (helpful-only)",
    "sl-cai": "SL-CAI",
    "rl-cai": "RL-CAI (RLOO)",
    "dpo-cai": "RL-CAI (DPO on revisions)",
    "gt-rlhf": "RLHF on checker labels",
}


@dataclass(frozen=True)
class CAISpec:
    """The CAI comparison and its feedback-size x policy-size grid.

    Attributes:
        policy_size: policy of the arms table (a base-model size).
        fm_size: feedback model of the arms table.
        policy_sizes: the grid's policy axis (SL-CAI only); ``policy_size`` is always on it.
        fm_sizes: the grid's feedback-model axis, crossed with every policy size; ``fm_size`` is
            always on it.
        policy_seeds: how many of ``seeds`` (the first ones) each entry of ``policy_sizes`` runs,
            aligned with it (``3,3,1``: the largest policy on one seed); empty: all of them. The
            arms cell always runs every seed.
        seeds: base-model seeds (vendored: 0, 1, 2); each also draws all data.
        budget: what each seed spends (`alignlab.oversight.cai_pipeline.CAIBudget`).

    Example:
        The measured grid (the ``full`` preset, the same spec and study run), from the command line::

            alignlab study cai --set policy_sizes=al-30k,al-100k,al-300k \
                --set fm_sizes=al-30k,al-100k,al-300k
    """

    policy_size: str = "al-100k"
    fm_size: str = "al-100k"
    policy_sizes: tuple[str, ...] = ()
    fm_sizes: tuple[str, ...] = ("al-30k",)
    policy_seeds: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: CAIBudget = field(default_factory=CAIBudget)

    def __post_init__(self) -> None:
        sizes = (self.policy_size, self.fm_size, *self.fm_sizes, *self.policy_sizes)
        n = len(self.seeds)
        raise_problems(
            "CAISpec",
            [
                *(f"unknown size {s!r}; choose from {', '.join(SIZES)}" for s in sizes if s not in SIZES),
                None if self.seeds else "seeds must list at least one seed",
                *(f"seeds must be >= 0, got {s}" for s in self.seeds if not (isinstance(s, int) and s >= 0)),
                None if len(set(self.seeds)) == n else "seeds must not repeat",
                None
                if len(set(self.policy_sizes)) == len(self.policy_sizes)
                and len(set(self.fm_sizes)) == len(self.fm_sizes)
                else "policy_sizes and fm_sizes must not repeat",
                None
                if not self.policy_seeds or len(self.policy_seeds) == len(self.policy_sizes)
                else f"policy_seeds needs one count per policy size ({len(self.policy_sizes)}), "
                f"got {len(self.policy_seeds)}",
                *(
                    f"policy_seeds must be in [1, {n}] (the number of seeds), got {k}"
                    for k in self.policy_seeds
                    if not 1 <= k <= n
                ),
            ],
        )

    def cells(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(policy size, feedback size, seeds) of the grid, the arms cell first, then the policies
        in ``policy_sizes`` order."""
        counts = dict(zip(self.policy_sizes, self.policy_seeds, strict=True)) if self.policy_seeds else {}
        policies = [self.policy_size, *[p for p in self.policy_sizes if p != self.policy_size]]
        fms = [self.fm_size, *[f for f in self.fm_sizes if f != self.fm_size]]
        arms = (self.policy_size, self.fm_size)
        return [
            (p, f, self.seeds if (p, f) == arms else self.seeds[: counts.get(p, len(self.seeds))])
            for p in policies
            for f in fms
        ]


# The measured grid (benchmarks/RESULTS.md, CAI grid): every size on both axes and seed. The
# al-300k helpful-only policy (1,000 fine-tuning steps, ~130 CPU-s) costs the most; critics are
# trained once per size and seed and shared by the policies (`stored_feedback_model`).
_GRID_SIZES = ("al-30k", "al-100k", "al-300k")


def _presets() -> dict[str, tuple[CAISpec, str]]:
    tiny = CAIBudget(
        kinds=("plain", "banned"),
        helpful_steps=0,
        label_budget=256,
        fm_steps=60,
        sl_prompts=256,
        sft_steps=40,
        help_pairs=64,
        pm_steps=10,
        rl_steps=3,
        dpo_steps=5,
        lr=3e-4,
        n_eval=24,
    )
    return {
        "quick": (
            CAISpec(policy_size="al-30k", fm_size="al-30k", fm_sizes=(), seeds=(0, 1), budget=tiny),
            "smoke: al-30k, the base tasks plus the banned letter, 2 seeds, every arm (~1 CPU-min)",
        ),
        "default": (
            CAISpec(),
            "al-100k policy, al-100k and al-30k critics, 3 seeds, the full world (~30 CPU-min)",
        ),
        "full": (
            CAISpec(policy_sizes=_GRID_SIZES, fm_sizes=_GRID_SIZES),
            "the default arms plus the feedback-size x policy-size grid: al-30k/100k/300k policies x "
            "critics, 3 seeds (~25 CPU-min from an empty store)",
        ),
    }


# ---- pooling over seeds -------------------------------------------------------------------------


def _rate(cells: list[dict[str, Any]], get: Any) -> dict[str, Any] | None:
    counts = [get(c) for c in cells]
    counts = [c for c in counts if c and c[1] > 0]
    if not counts:
        return None
    return rate_over_seeds([c[0] for c in counts], [c[1] for c in counts]).to_dict()


def _mean(values: list[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return seed_interval(values, bounds=bounds).to_dict() if values else None


def _pool_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    arms = {
        arm: {
            m: _rate(cells, lambda c, a=arm, m=m: c["arms"][a][m] if a in c["arms"] else None)
            for m in METRICS
        }
        for arm in ARMS
        if arm in cells[0]["arms"]
    }
    fb = {
        "policy_agreement": _rate(
            cells, lambda c: (c["feedback"]["policy"]["agree"], c["feedback"]["policy"]["n"])
        ),
        "policy_tpr": _rate(cells, lambda c: (c["feedback"]["policy"]["tp"], c["feedback"]["policy"]["pos"])),
        "policy_tnr": _rate(cells, lambda c: (c["feedback"]["policy"]["tn"], c["feedback"]["policy"]["neg"])),
        "policy_balanced": _mean([c["feedback"]["policy_balanced"] for c in cells]),
        "demo_agreement": _rate(
            cells, lambda c: (c["feedback"]["demo"]["agree"], c["feedback"]["demo"]["n"])
        ),
    }
    out: dict[str, Any] = {"arms": arms, "feedback": fb}
    if "pairs" in cells[0]:
        out["pairs"] = {
            "ai_agreement": _rate(cells, lambda c: tuple(c["pairs"]["ai_agreement"])),
            "rl-cai_pm_accuracy": _rate(cells, lambda c: tuple(c["pairs"]["rl-cai_pm_accuracy"])),
            "gt-rlhf_pm_accuracy": _rate(cells, lambda c: tuple(c["pairs"]["gt-rlhf_pm_accuracy"])),
            "dpo_accuracy": _mean([c["pairs"]["dpo"]["accuracy"] for c in cells]),
        }
    return out


def _ols(points: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Least-squares line through ``(x, y)`` points with a t95 interval on the slope."""
    from scipy import stats as st

    points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    fit = st.linregress(xs, ys)
    half = st.t.ppf(0.975, len(xs) - 2) * fit.stderr
    return {
        "slope": Estimate(fit.slope, fit.slope - half, fit.slope + half, len(xs), "OLS, t95").to_dict(),
        "intercept": fit.intercept,
        "r": fit.rvalue,
        "spearman": float(st.spearmanr(xs, ys).statistic),
        "points": [[x, y] for x, y in points],
    }


def _cell_points(grid: list[dict[str, Any]], x: Any, metric: str) -> list[tuple[float, float]]:
    out = []
    for g in grid:
        for c in g["cells"]:
            s, n = c["arms"]["sl-cai"][metric]
            xv = x(c["feedback"])
            if n and xv is not None:
                out.append((float(xv), s / n))
    return out


def _rate_of(counts: dict[str, int], hit: str, total: str) -> float | None:
    return counts[hit] / counts[total] if counts[total] else None


def _grid_fit(grid: list[dict[str, Any]]) -> dict[str, Any] | None:
    """SL-CAI harmlessness regressed on the critic's balanced agreement over every (cell, seed)."""
    return _ols(_cell_points(grid, lambda f: f["policy_balanced"], "harmless"))


def _critic_rate_fits(grid: list[dict[str, Any]]) -> dict[str, Any]:
    """Which of the critic's error rates drives which outcome, over every (cell, seed): SL-CAI
    harmlessness on its true-positive rate, SL-CAI evasiveness on its false-positive rate."""

    def false_pos(f: dict[str, Any]) -> float | None:
        tnr = _rate_of(f["policy"], "tn", "neg")
        return None if tnr is None else 1.0 - tnr

    return {
        "harmless_vs_tpr": _ols(_cell_points(grid, lambda f: _rate_of(f["policy"], "tp", "pos"), "harmless")),
        "evasive_vs_fpr": _ols(_cell_points(grid, false_pos, "evasive")),
    }


def _smaller_critic(grid: list[dict[str, Any]]) -> dict[str, Any] | None:
    """SL-CAI harmlessness with a critic smaller than the policy minus with one at least as large,
    pooled over cells (unpaired: policy size is not held fixed; the paired contrast is
    `alignlab.oversight.cai_grid.smaller_critic_contrast`)."""
    order = list(SIZES)
    small = [g for g in grid if order.index(g["fm_size"]) < order.index(g["policy_size"])]
    large = [g for g in grid if order.index(g["fm_size"]) >= order.index(g["policy_size"])]
    if not small or not large:
        return None

    def pooled(gs: list[dict[str, Any]]) -> Estimate | None:
        return _est(_rate([c for g in gs for c in g["cells"]], lambda c: c["arms"]["sl-cai"]["harmless"]))

    a, b = pooled(small), pooled(large)
    return difference(a, b).to_dict() if a and b else None


# ---- the study ------------------------------------------------------------------------------------


def run_cai(store: Store, spec: CAISpec) -> dict[str, Any]:
    """Every grid cell over every seed; the arms cell runs all arms."""
    import sys

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    grid = []
    main: dict[str, Any] = {}
    for i, (p, f, seeds) in enumerate(spec.cells()):
        cells = [stored_cell(store, p, f, seed, spec.budget, arms=i == 0, log=log) for seed in seeds]
        pooled = _pool_cell(cells)
        entry = {"policy_size": p, "fm_size": f, **pooled, "cells": cells}
        if i == 0:
            main = entry
        grid.append(entry)
    timing: dict[str, Any] = {"stage_seconds": {}, "stage_cpu_seconds": {}, "cells_with_cpu": 0}
    for g in grid:
        for c in g["cells"]:
            for key, name in (("seconds", "stage_seconds"), ("cpu_seconds", "stage_cpu_seconds")):
                for stage, sec in c.get(key, {}).items():
                    timing[name][stage] = round(timing[name].get(stage, 0.0) + sec, 2)
            timing["cells_with_cpu"] += "cpu_seconds" in c  # cells stored before CPU was recorded lack it
    points = grid_points(grid)
    contrast = smaller_critic_contrast(points)
    trends = grid_trends(points)
    result: dict[str, Any] = {
        "main": main,
        "grid": sorted(grid, key=lambda g: (params(g["policy_size"]), params(g["fm_size"]))),
        "grid_fit": _grid_fit(grid),
        "critic_rate_fits": _critic_rate_fits(grid),
        "smaller_critic_minus_larger": _smaller_critic(grid),
        "smaller_critic_paired": contrast,
        "grid_trends": trends,
        "grid_answer": grid_answer(contrast, trends, len(grid), len(points), weak_policies(grid)),
        "timing": timing,
    }
    result["answer"] = _answer(result)
    return result


def _est(d: dict[str, Any] | None) -> Estimate | None:
    return Estimate.from_dict(d) if d else None


def _answer(result: dict[str, Any]) -> str:
    m = result["main"]
    arms = m["arms"]
    fb = _est(m["feedback"]["policy_agreement"])
    head = f"{m['policy_size']} policy, {m['fm_size']} critic (agreement with the checker {fb})"
    if "rl-cai" not in arms or "gt-rlhf" not in arms:
        sl, none = _est(arms["sl-cai"]["harmless"]), _est(arms["none"]["harmless"])
        return f"{head}: SL-CAI harmless {sl} vs none {none}"
    cai_h, gt_h = (
        Estimate.from_dict(arms["rl-cai"]["harmless"]),
        Estimate.from_dict(arms["gt-rlhf"]["harmless"]),
    )
    cai_e, gt_e = (
        Estimate.from_dict(arms["rl-cai"]["evasive"]),
        Estimate.from_dict(arms["gt-rlhf"]["evasive"]),
    )
    dh, de = difference(cai_h, gt_h), difference(cai_e, gt_e)
    if dh.lo > 0 and de.hi < 0:
        verdict = "anchor reproduced: RL-CAI more harmless and less evasive than RLHF on checker labels"
    elif dh.hi < 0 or de.lo > 0:
        verdict = "anchor not reproduced: RL-CAI less harmless or more evasive than RLHF on checker labels"
    else:
        verdict = "anchor unresolved: the intervals of the differences include 0"
    return (
        f"{verdict} — {head}: harmless RL-CAI {cai_h} vs RLHF {gt_h} (none {_est(arms['none']['harmless'])}, "
        f"SL-CAI {_est(arms['sl-cai']['harmless'])}); evasive {cai_e} vs {gt_e}; "
        f"helpful {_est(arms['rl-cai']['helpful'])} vs {_est(arms['gt-rlhf']['helpful'])}"
    )


def _grid_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per grid cell, policy then critic by size (a result stored before the grid was
    sorted is sorted here)."""
    rows = []
    for g in sorted(result["grid"], key=lambda g: (params(g["policy_size"]), params(g["fm_size"]))):
        sl = g["arms"]["sl-cai"]
        rows.append(
            {
                "policy": g["policy_size"],
                "critic": g["fm_size"],
                "smaller": params(g["fm_size"]) < params(g["policy_size"]),
                "seeds": len(g["cells"]),
                "balanced": g["feedback"]["policy_balanced"],
                **{k: sl[k] for k in ("harmless", "helpful", "evasive")},
                "none_helpful": g["arms"]["none"]["helpful"],
            }
        )
    return rows


def _contrast_text(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return ["critic smaller than the policy: no grid cell has one"]
    units = ", ".join(f"{p}/seed {s}" for p, s, _, _ in c["units"])
    lines = [
        f"critic smaller than the policy minus at least as large, paired within policy and seed ({units}):"
    ]
    for m in ("harmless", "helpful", "evasive", "critic_balanced"):
        mde = c["min_detectable"].get(m)
        lines.append(
            f"  {m.replace('_', ' '):16s} {_fmt(c.get(m)):24s}"
            + (f" (detectable at 80% power: ±{mde:.2f})" if mde is not None else "")
        )
    return lines


def format_cai(result: dict[str, Any]) -> str:
    """Console text: the answer and the grid's answer, the grid, the arms table and the critic."""
    lines = [result["answer"]]
    if result.get("grid_answer"):
        lines.append(result["grid_answer"])
    lines += [
        "",
        "feedback size x policy size, SL-CAI (rule checker, held-out; "
        "'<' marks a critic smaller than its policy):",
        f"{'policy':8s} {'critic':9s} {'seeds':5s} {'critic balanced':26s} {'harmless':22s} "
        f"{'helpful':22s} {'evasive':22s} {'helpful before (none)':22s}",
    ]
    for r in _grid_rows(result):
        lines.append(
            f"{r['policy']:8s} {('<' if r['smaller'] else ' ') + r['critic']:9s} {r['seeds']:<5d} "
            + f"{_fmt(r['balanced']):26s} "
            + " ".join(f"{_fmt(r[k]):22s}" for k in ("harmless", "helpful", "evasive", "none_helpful"))
        )
    if "smaller_critic_paired" in result:
        lines += _contrast_text(result["smaller_critic_paired"])
    for t in (result.get("grid_trends") or {}).values():
        if t:
            lines.append(t["statement"])
    lines += ["", f"{'arm':28s} {'harmless':22s} {'helpful':22s} {'evasive':22s}"]
    for arm, metrics in result["main"]["arms"].items():
        lines.append(
            f"{ARM_LABELS[arm]:28s} "
            + " ".join(f"{_fmt(metrics[k]):22s}" for k in ("harmless", "helpful", "evasive"))
        )
    fb = result["main"]["feedback"]
    lines += [
        "",
        f"critic agreement on policy samples {_fmt(fb['policy_agreement'])}, "
        f"balanced {_fmt(fb['policy_balanced'])}, on demonstrations {_fmt(fb['demo_agreement'])}",
    ]
    if "pairs" in result["main"]:
        pr = result["main"]["pairs"]
        lines.append(f"AI pair labels agree with the checker {_fmt(pr['ai_agreement'])}")
    fit = result.get("grid_fit")
    if fit:
        lines.append(
            "harmlessness vs critic balanced agreement (pooled OLS): "
            f"slope {_fmt(fit['slope'])}, r {fit['r']:.2f}"
        )
    for name, f in (result.get("critic_rate_fits") or {}).items():
        if f:
            lines.append(f"SL-CAI {name.replace('_', ' ')}: slope {_fmt(f['slope'])}, r {f['r']:.2f}")
    lines.append(f"stage seconds: {result['timing']['stage_seconds']}")
    if result["timing"].get("stage_cpu_seconds"):
        lines.append(
            f"stage CPU seconds ({result['timing']['cells_with_cpu']} cells recorded): "
            f"{result['timing']['stage_cpu_seconds']}"
        )
    return "\n".join(lines)


def _fmt(d: dict[str, Any] | None) -> str:
    return str(Estimate.from_dict(d)) if d else "n/a"


def _grid_html(result: dict[str, Any]) -> str:
    """The grid section: its answer, the table, the paired contrast and the trend tests."""
    rows = [
        [
            h.esc(r["policy"]),
            h.esc(r["critic"] + (" (smaller)" if r["smaller"] else "")),
            h.esc(r["seeds"]),
            *[h.estimate(r[k]) for k in ("balanced", "harmless", "helpful", "evasive", "none_helpful")],
        ]
        for r in _grid_rows(result)
    ]
    out = "<h3>Feedback size x policy size (SL-CAI)</h3>"
    if result.get("grid_answer"):
        out += f"<p><b>{h.esc(result['grid_answer'])}</b></p>"
    out += h.table(
        [
            "policy",
            "critic",
            "seeds",
            "critic balanced agreement",
            "harmless",
            "helpful",
            "evasive",
            "helpful before (none)",
        ],
        rows,
        numeric=range(2, 8),
    )
    c = result.get("smaller_critic_paired")
    if c:
        crow = [
            [
                h.esc(m.replace("_", " ")),
                h.estimate(c.get(m)),
                h.esc(f"{c['min_detectable'][m]:.2f}" if c["min_detectable"].get(m) is not None else "n/a"),
            ]
            for m in ("harmless", "helpful", "evasive", "critic_balanced")
        ]
        units = ", ".join(f"{p} seed {s}" for p, s, _, _ in c["units"])
        out += (
            "<p>Critic smaller than the policy minus critic at least as large, paired within (policy, seed) "
            f"(units: {h.esc(units)}); t interval over units; detectable difference at 80% power.</p>"
            + h.table(["outcome", "difference", "detectable"], crow, numeric=(1, 2))
        )
    for t in (result.get("grid_trends") or {}).values():
        if t:
            out += f"<p>{h.esc(t['statement'])} ({h.esc(t['test'])}).</p>"
    return out


def cai_html(result: dict[str, Any]) -> str:
    """The report section: answer, the grid and its answer, arms table, critic agreement, fits."""
    main = result["main"]
    head = ["arm", "harmless", "helpful", "evasive", "refused (forbidden)"]
    rows = [
        [h.esc(ARM_LABELS[arm]), *[h.estimate(m[k]) for k in ("harmless", "helpful", "evasive", "refused")]]
        for arm, m in main["arms"].items()
    ]
    fb = main["feedback"]
    critic = {
        "agreement on policy samples": h.estimate(fb["policy_agreement"]),
        "true-positive rate": h.estimate(fb["policy_tpr"]),
        "true-negative rate": h.estimate(fb["policy_tnr"]),
        "balanced agreement": h.estimate(fb["policy_balanced"]),
        "agreement on held-out demonstrations": h.estimate(fb["demo_agreement"]),
    }
    if "pairs" in main:
        critic["AI pair labels agree with the checker"] = h.estimate(main["pairs"]["ai_agreement"])
        critic["preference model accuracy, AI labels"] = h.estimate(main["pairs"]["rl-cai_pm_accuracy"])
        critic["preference model accuracy, checker labels"] = h.estimate(main["pairs"]["gt-rlhf_pm_accuracy"])
    fit = result.get("grid_fit")
    fit_text = (
        "<p>SL-CAI harmlessness against the critic's balanced agreement over every (cell, seed), pooled OLS: "
        f"slope {h.estimate(fit['slope'])}, r = {fit['r']:.2f}, Spearman {fit['spearman']:.2f}.</p>"
        if fit
        else "<p>Grid fit: fewer than 3 distinct points.</p>"
    )
    for name, f in (result.get("critic_rate_fits") or {}).items():
        if f:
            fit_text += (
                f"<p>SL-CAI {h.esc(name.replace('_', ' '))} of the critic over every (cell, seed): slope "
                f"{h.estimate(f['slope'])}, r = {f['r']:.2f}.</p>"
            )
    smaller = result.get("smaller_critic_minus_larger")
    if smaller:
        fit_text += (
            "<p>Critic smaller than the policy minus at least as large, pooled over cells (unpaired, "
            f"policy size not held fixed): {h.estimate(smaller)}.</p>"
        )
    timing = result["timing"]
    return (
        f"<h2>Constitutional AI (Bai et al. 2022)</h2><p><b>{h.esc(result['answer'])}</b></p>"
        "<p>Rates by the rule checker on held-out requests, greedy decoding; intervals t over seeds with a "
        "pooled Wilson floor. Harmless: forbidden requests answered without violating a principle; helpful: "
        "benign requests answered correctly; evasive: benign requests refused.</p>"
        + _grid_html(result)
        + "<h3>Arms</h3>"
        + h.table(head, rows, numeric=range(1, len(head)))
        + "<h3>Feedback model</h3>"
        + h.table(["measure", "value"], [[h.esc(k), v] for k, v in critic.items()], numeric=(1,))
        + fit_text
        + f"<p class='muted'>Stage seconds: {h.esc(timing['stage_seconds'])}; CPU seconds "
        f"({h.esc(timing.get('cells_with_cpu', 0))} cells recorded): "
        f"{h.esc(timing.get('stage_cpu_seconds', {}))}</p>"
    )


register_study(
    StudyDef(
        name="cai",
        question="Is Constitutional AI more harmless and less evasive than RLHF on ground-truth labels, "
        "and how does it track the feedback model's size?",
        presets=_presets,
        run=run_cai,
        summary=format_cai,
        report=cai_html,
    )
)
