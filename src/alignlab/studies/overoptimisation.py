"""Study ``overoptimisation``: how far can a policy be pushed against a learned reward before the
gold reward falls, and how does that move with the reward model's size and data?

Gao, Schulman & Hilton (2022) fit gold reward against d = sqrt(KL) as d (alpha - beta d) for
best-of-n and d (alpha - beta log d) for RL, and find the peak moves out with reward-model size and
data. Here, per seed: the step-task generator is the policy, proxies of each size are fitted on
``n`` noisy gold-labelled pairs of its samples (`alignlab.safety.overopt`), and the policy is
pushed against each proxy by best-of-n (and, with ``rl.steps > 0``, by RLOO).

Example:
    $ alignlab study overoptimisation --preset quick
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab._validate import check_choice, check_int, raise_problems
from alignlab.oversight.process import (
    SIZE_LR,
    GeneratorRecipe,
    bon_ns,
    flat,
    recipe_for,
    sample_traces,
    train_generator,
)
from alignlab.report import html as h
from alignlab.safety.overopt import (
    ProxyData,
    RLArm,
    bon_rewards,
    fit_gao,
    gold_reward,
    pair_accuracy,
    preference_labels,
    rl_arm,
    train_proxy,
)
from alignlab.scaling._validate import FitInputError
from alignlab.stats import Estimate
from alignlab.store import Store
from alignlab.studies.registry import StudyDef, register_study
from alignlab.tasks.op_chain import chain_problems


@dataclass(frozen=True)
class OveroptSpec:
    """The overoptimisation grid.

    Attributes:
        generator: the policy's recipe; each proxy starts from this recipe's model of its size.
        rm_sizes: proxy sizes.
        n_pairs: training pairs of each proxy.
        seeds: each trains its own policy, proxies and samples.
        proxy: label noise and fitting of every proxy (its ``n_pairs`` is set per cell).
        n_test: held-out problems of the best-of-n arm.
        max_n: samples per held-out problem; n = 1, 2, 4, ... up to it.
        rl: the RL arm (``steps`` 0: best-of-n only).
        rl_sizes: proxy sizes the RL arm runs against (every data size).
    """

    generator: GeneratorRecipe = dataclasses.field(default_factory=GeneratorRecipe)
    rm_sizes: tuple[str, ...] = ("al-30k", "al-100k")
    n_pairs: tuple[int, ...] = (100, 1000, 10000)
    seeds: tuple[int, ...] = (0, 1)
    proxy: ProxyData = dataclasses.field(default_factory=ProxyData)
    n_test: int = 64
    max_n: int = 256
    rl: RLArm = dataclasses.field(default_factory=RLArm)
    rl_sizes: tuple[str, ...] = ("al-30k", "al-100k")

    def __post_init__(self) -> None:
        raise_problems(
            "OveroptSpec",
            [
                None if self.rm_sizes else "rm_sizes must list at least one size",
                None if self.n_pairs else "n_pairs must list at least one size",
                None if self.seeds else "seeds must list at least one seed",
                *(check_choice("rm_sizes", s, tuple(SIZE_LR)) for s in self.rm_sizes),
                *(check_choice("rl_sizes", s, self.rm_sizes) for s in self.rl_sizes),
                *(check_int("n_pairs", n, lo=2, hi=10_000_000) for n in self.n_pairs),
                *(check_int("seeds", s, lo=0) for s in self.seeds),
                check_int("n_test", self.n_test, lo=2, hi=100_000),
                check_int("max_n", self.max_n, lo=8, hi=65_536),
            ],
        )

    @property
    def ns(self) -> list[int]:
        return bon_ns(self.max_n)


def _presets() -> dict[str, tuple[OveroptSpec, str]]:
    return {
        "quick": (
            OveroptSpec(
                generator=GeneratorRecipe(size="al-30k", steps=600, lr=1e-2),
                rm_sizes=("al-30k",),
                n_pairs=(100, 1000),
                seeds=(0,),
                proxy=ProxyData(min_steps=30, max_steps=60),
                n_test=16,
                max_n=32,
                rl=RLArm(steps=10, eval_every=5, n_eval=32),
                rl_sizes=("al-30k",),
            ),
            "smoke: al-30k, 1 seed, 2 data sizes, 16 problems x 32 samples, 10 RL steps (~3 CPU-min)",
        ),
        "default": (
            OveroptSpec(rl=RLArm(steps=150)),
            "proxies al-30k and al-100k on 100/1000/10000 pairs, 2 seeds, best-of-256, RL against each",
        ),
    }


# ---- one seed ---------------------------------------------------------------------------------


def run_seed(store: Store, spec: OveroptSpec, seed: int) -> dict[str, Any]:
    """Policy, pairs, every proxy and both arms for one seed (cached as an ``overopt-cell`` run)."""
    config = {"spec": json.loads(json.dumps(dataclasses.asdict(spec))), "seed": seed}
    cell, _ = store.cached_json(
        "overopt-cell", config, "cell.json", lambda run: _seed_cell(store, spec, seed)
    )
    return dict(cell)


def _seed_cell(store: Store, spec: OveroptSpec, seed: int) -> dict[str, Any]:
    """`run_seed` computed afresh."""
    from alignlab.model.hf import load

    t0 = time.perf_counter()
    steps = spec.generator.noise
    policy = load(train_generator(store, spec.generator, seed).dir / "model")
    t_gen = time.perf_counter() - t0
    # Pairs: two samples of one training problem each; the largest data size is drawn once
    # and the smaller ones are its prefixes (nested data, as Gao et al.'s subsets).
    most = max(spec.n_pairs)
    train = chain_problems(most, seed, "proxy-train", steps)
    pairs = [(a, b) for a, b in sample_traces(policy, train, 2, seed + 30_000)]
    gold_a = [gold_reward(p, a) for p, (a, _) in zip(train, pairs, strict=True)]
    gold_b = [gold_reward(p, b) for p, (_, b) in zip(train, pairs, strict=True)]
    labels = preference_labels(gold_a, gold_b, spec.proxy.label_temperature, seed)
    held = chain_problems(256, seed, "proxy-heldout", steps)
    held_pairs = [(a, b) for a, b in sample_traces(policy, held, 2, seed + 40_000)]
    test = chain_problems(spec.n_test, seed, "bon-test", steps)
    samples = sample_traces(policy, test, spec.max_n, seed + 50_000)
    tp, tt = flat(test, samples)
    gold = np.array([gold_reward(p, t) for p, t in zip(tp, tt, strict=True)]).reshape(len(test), -1)
    t_sample = time.perf_counter() - t0 - t_gen
    proxies: dict[str, Any] = {}
    for size in spec.rm_sizes:
        init = policy
        if size != spec.generator.size:
            recipe = recipe_for(spec.generator, size)
            init = load(train_generator(store, recipe, seed).dir / "model")
        for n in spec.n_pairs:
            t1 = time.perf_counter()
            data = dataclasses.replace(spec.proxy, n_pairs=n)
            rm = train_proxy(init, train[:n], pairs[:n], labels[:n], data, seed, size)
            proxy = rm.rewards(tp, tt).reshape(len(test), -1)
            cell: dict[str, Any] = {
                "pair_accuracy": pair_accuracy(rm, held, held_pairs),
                "steps": data.steps,
                "bon": bon_rewards(proxy, gold, spec.ns),
            }
            if spec.rl.steps and size in spec.rl_sizes:
                cell["rl"] = rl_arm(policy, rm, spec.rl, seed, steps)
            cell["seconds"] = time.perf_counter() - t1
            proxies[f"{size}/{n}"] = cell
    out = {
        "seed": seed,
        "policy_gold": float(gold.mean()),
        "proxies": proxies,
        "seconds": {"generator": t_gen, "sampling": t_sample, "total": time.perf_counter() - t0},
    }
    return out


# ---- over seeds -------------------------------------------------------------------------------


def _fit(d: list[float], r: list[float], kind: str) -> dict[str, Any]:
    try:
        fit = fit_gao(d, r, kind, n_boot=1000, seed=0)  # type: ignore[arg-type]
    except FitInputError as e:
        return {"error": str(e)}
    return fit.to_dict()


def analyse(spec: OveroptSpec, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per proxy (size, data): gold and proxy best-of-n curves over seeds, the Gao fits of gold
    (and of the RL arm where run), and where gold peaks on the measured grid."""
    rows = []
    for size in spec.rm_sizes:
        for n in spec.n_pairs:
            key = f"{size}/{n}"
            curves = [c["proxies"][key]["bon"] for c in cells]
            d = curves[0]["d"]
            gold = np.array([c["gold"] for c in curves])
            prox = np.array([c["proxy"] for c in curves])
            rel_gold, rel_proxy = gold - gold[:, :1], prox - prox[:, :1]
            mean_gold = rel_gold.mean(0)
            pts_d = [x for _ in cells for x in d[1:]]
            row: dict[str, Any] = {
                "size": size,
                "n_pairs": n,
                "pair_accuracy": [c["proxies"][key]["pair_accuracy"] for c in cells],
                "d": d,
                "n": curves[0]["n"],
                "gold": mean_gold.tolist(),
                "proxy": rel_proxy.mean(0).tolist(),
                "gold_peak_n": int(curves[0]["n"][int(np.argmax(mean_gold))]),
                "gold_peak_d": float(d[int(np.argmax(mean_gold))]),
                "bon_gold_fit": _fit(pts_d, rel_gold[:, 1:].ravel().tolist(), "bon"),
                "bon_proxy_fit": _fit(pts_d, rel_proxy[:, 1:].ravel().tolist(), "bon"),
            }
            rl = [c["proxies"][key]["rl"] for c in cells if "rl" in c["proxies"][key]]
            if rl:
                pts = [
                    (r["d"], r["gold"] - run[0]["gold"], r["proxy"] - run[0]["proxy"])
                    for run in rl
                    for r in run[1:]
                ]
                pts = [p for p in pts if p[0] > 0]
                row["rl"] = rl
                row["rl_gold_fit"] = _fit([p[0] for p in pts], [p[1] for p in pts], "rl")
                row["rl_proxy_fit"] = _fit([p[0] for p in pts], [p[2] for p in pts], "rl")
            rows.append(row)
    return rows


def _peak_text(fit: dict[str, Any]) -> str:
    if "error" in fit:
        return f"no fit ({fit['error']})"
    return str(Estimate.from_dict(fit["params"]["peak_d"]))


def run_overopt(store: Store, spec: OveroptSpec) -> dict[str, Any]:
    """Every seed (cached per seed), then the fits over seeds."""
    cells = [run_seed(store, spec, s) for s in spec.seeds]
    rows = analyse(spec, cells)
    peaks = "; ".join(
        f"{r['size']} n={r['n_pairs']}: best-of-{r['gold_peak_n']} (d={r['gold_peak_d']:.2f}), "
        f"fit d*={_peak_text(r['bon_gold_fit'])}"
        for r in rows
    )
    rl = "; ".join(
        f"{r['size']} n={r['n_pairs']}: d*={_peak_text(r['rl_gold_fit'])}" for r in rows if "rl_gold_fit" in r
    )
    accs = "; ".join(
        f"{size} {min(a for r in rows if r['size'] == size for a in r['pair_accuracy']):.2f}-"
        f"{max(a for r in rows if r['size'] == size for a in r['pair_accuracy']):.2f}"
        for size in spec.rm_sizes
    )
    answer = (
        f"Gold reward under best-of-n against each proxy peaks at: {peaks} "
        f"(largest d measured {rows[0]['d'][-1]:.2f})."
        + (f" Under RL the gold fit peaks at {rl}." if rl else "")
        + f" Proxies' held-out pair accuracy: {accs}."
    )
    return {
        "answer": answer,
        "rows": rows,
        "policy_gold": [c["policy_gold"] for c in cells],
        "timing": {"cell_seconds": [c["seconds"] for c in cells]},
    }


# ---- output -----------------------------------------------------------------------------------


def _param(fit: dict[str, Any], name: str) -> str:
    if "error" in fit:
        return "no fit"
    return str(Estimate.from_dict(fit["params"][name]))


def format_overopt(result: dict[str, Any]) -> str:
    """Console text: the answer, then one line per proxy with its fits and gold peak."""
    lines = [result["answer"], ""]
    lines.append(f"policy gold reward (per seed): {', '.join(f'{g:.3f}' for g in result['policy_gold'])}")
    for r in result["rows"]:
        acc = ", ".join(f"{a:.2f}" for a in r["pair_accuracy"])
        f = r["bon_gold_fit"]
        lines.append(
            f"{r['size']:>8} n={r['n_pairs']:<6} pair acc {acc}; BoN gold alpha {_param(f, 'alpha')} "
            f"beta {_param(f, 'beta')} peak d* {_param(f, 'peak_d')}; "
            f"measured peak best-of-{r['gold_peak_n']}"
        )
        lines.append(
            "          gold - gold(1) by n: "
            + ", ".join(f"{n}:{g:+.3f}" for n, g in zip(r["n"], r["gold"], strict=True))
        )
        if "rl_gold_fit" in r:
            g = r["rl_gold_fit"]
            fit = f"alpha {_param(g, 'alpha')} beta {_param(g, 'beta')} peak d* {_param(g, 'peak_d')}"
            lines.append(f"          RL gold {fit}")
    return "\n".join(lines)


def overopt_html(result: dict[str, Any]) -> str:
    """HTML: answer first, then the fits and peaks per proxy."""
    parts = [f"<p class='q'><b>{h.esc(result['answer'])}</b></p>"]
    rows = []
    for r in result["rows"]:
        f = r["bon_gold_fit"]
        g = r.get("rl_gold_fit", {"error": "not run"})
        rows.append(
            [
                h.esc(r["size"]),
                str(r["n_pairs"]),
                h.esc(", ".join(f"{a:.2f}" for a in r["pair_accuracy"])),
                h.esc(_param(f, "alpha")),
                h.esc(_param(f, "beta")),
                h.esc(_param(f, "peak_d")),
                h.esc(f"best-of-{r['gold_peak_n']} (d={r['gold_peak_d']:.2f})"),
                h.esc(_param(g, "peak_d")),
            ]
        )
    parts.append(
        h.table(
            [
                "proxy size",
                "pairs",
                "pair acc",
                "BoN alpha",
                "BoN beta",
                "BoN fit peak d*",
                "measured peak",
                "RL fit peak d*",
            ],
            rows,
            numeric=(1,),
        )
    )
    parts.append(
        "<p class='muted'>"
        + h.esc(
            "Gold is relative to the starting policy; d = sqrt(KL), KL(best-of-n) = log n - (n-1)/n. "
            "Intervals: expanded-percentile bootstrap of refits (seeds resampled within each d)."
        )
        + "</p>"
    )
    return "\n".join(parts)


register_study(
    StudyDef(
        name="overoptimisation",
        question=(
            "How far can a policy be pushed against a learned proxy reward before gold reward falls "
            "(Gao et al. 2022)?"
        ),
        presets=_presets,
        run=run_overopt,
        summary=format_overopt,
        report=overopt_html,
    )
)
