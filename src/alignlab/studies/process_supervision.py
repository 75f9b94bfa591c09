"""Study ``process-supervision``: does rewarding each step, not only the final answer, keep the
selected reasoning right?

Uesato et al. (2022) found outcome- and process-supervised reward models reach similar final-answer
error when reranking, but the outcome one selects more solutions that are right for wrong reasons:
trace error 14.0% -> 3.4% with process supervision. Lightman et al. (2023) found the process
reward model also more accurate: ~78% vs ~72% best-of-1860 on MATH. Here, per seed: a step-task
generator trained on noisy traces (`alignlab.oversight.process`), an ORM and a PRM of each size
fitted on the same labelled samples, and best-of-N reranking of 64 samples per held-out problem.

Example:
    $ alignlab study process-supervision --preset quick
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab._validate import check_choice, check_int, check_real, raise_problems
from alignlab.model.config import SIZES
from alignlab.oversight.process import (
    GeneratorRecipe,
    RMTraining,
    StepRewardModel,
    bon_curve,
    bon_ns,
    chain_rates,
    check_all,
    flat,
    recipe_for,
    rloo_chain,
    rm_accuracy,
    sample_traces,
    summary_rates,
    train_generator,
    train_step_rm,
)
from alignlab.report import html as h
from alignlab.safety.overopt import RLArm
from alignlab.stats import Estimate, seed_interval
from alignlab.store import Run, Store
from alignlab.studies.registry import StudyDef, register_study
from alignlab.tasks.op_chain import ChainProblem, chain_problems

#: Uesato et al. (2022, table 2, GSM8K, final-answer RL + reranking): trace error of the
#: outcome-supervised and the process-supervised reward model.
UESATO_TRACE_ERROR = {"orm": 0.140, "prm": 0.034}
#: Lightman et al. (2023, fig. 3): best-of-1860 accuracy on MATH of their ORM and PRM.
LIGHTMAN_ACCURACY = {"orm": 0.724, "prm": 0.782}
#: The reward models: outcome labels read at the last step, outcome labels on the product of step
#: verdicts (the PRM's reading with the ORM's labels), and step labels (`alignlab.oversight.process`).
KINDS = ("orm", "orm-steps", "prm")
LABELS = {"orm": "ORM", "orm-steps": "ORM-steps", "prm": "PRM"}


@dataclass(frozen=True)
class ProcessSpec:
    """The process-supervision grid.

    Attributes:
        generator: the policy's recipe (size, steps, noise of its training traces).
        rm_sizes: reward-model sizes; each starts from the generator recipe's model of its size
            and seed (Uesato and Lightman start reward models from the base model).
        seeds: each trains its own generator, reward models and samples.
        n_labelled: generator samples labelled by the checker for each reward model (the same
            traces for ORM and PRM; only the labels differ).
        per_problem: labelled samples per training problem.
        rm: both reward models' fitting steps, learning rate and batch.
        n_test: held-out problems reranked.
        max_n: samples per held-out problem; best-of-N for N = 1, 2, 4, ... up to it.
        temperature: sampling temperature of the generator.
        rl: the RL arm: RLOO of the generator against its own size's ORM and PRM (``steps`` 0:
            none); cached apart from the best-of-N cell, so changing it reruns only the arm.
    """

    generator: GeneratorRecipe = dataclasses.field(default_factory=GeneratorRecipe)
    rm_sizes: tuple[str, ...] = ("al-30k", "al-100k")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_labelled: int = 2048
    per_problem: int = 2
    rm: RMTraining = dataclasses.field(default_factory=RMTraining)
    n_test: int = 100
    max_n: int = 64
    temperature: float = 1.0
    rl: RLArm = dataclasses.field(default_factory=lambda: RLArm(steps=100, eval_every=25))

    def __post_init__(self) -> None:
        raise_problems(
            "ProcessSpec",
            [
                None if self.rm_sizes else "rm_sizes must list at least one size",
                None if self.seeds else "seeds must list at least one seed",
                *(check_choice("rm_sizes", s, tuple(SIZES)) for s in self.rm_sizes),
                *(check_int("seeds", s, lo=0) for s in self.seeds),
                check_int("n_labelled", self.n_labelled, lo=8, hi=1_000_000),
                check_int("per_problem", self.per_problem, lo=1, hi=1024),
                check_int("n_test", self.n_test, lo=2, hi=100_000),
                check_int("max_n", self.max_n, lo=1, hi=4096),
                check_real("temperature", self.temperature, lo=0.0, lo_open=True, hi=10.0),
            ],
        )

    @property
    def ns(self) -> list[int]:
        return bon_ns(self.max_n)


def _presets() -> dict[str, tuple[ProcessSpec, str]]:
    return {
        "quick": (
            ProcessSpec(
                generator=GeneratorRecipe(size="al-30k", steps=600, lr=1e-2),
                rm_sizes=("al-30k",),
                seeds=(0, 1),
                n_labelled=256,
                rm=RMTraining(steps=60),
                rl=RLArm(steps=10, eval_every=5, n_eval=32),
                n_test=16,
                max_n=8,
            ),
            "smoke: al-30k (600 steps), 2 seeds, 16 problems x 8 samples, 10 RL steps",
        ),
        "default": (
            ProcessSpec(),
            "al-30k generator, three reward models at al-30k and al-100k, 3 seeds, 100 problems x 64 samples",
        ),
    }


# ---- one seed ---------------------------------------------------------------------------------


def run_seed(store: Store, spec: ProcessSpec, seed: int) -> dict[str, Any]:
    """Generator, labelled samples, ORM and PRM of each size, and their best-of-N curves for one
    seed; cached as a ``process-cell`` run of the store (same spec and seed = same cell)."""
    return _cell(store, spec, seed)[0]


def _cell(store: Store, spec: ProcessSpec, seed: int) -> tuple[dict[str, Any], Run]:
    """`run_seed`'s result and its run (which holds the generator-size reward models)."""
    cell_spec = _spec_dict(spec)
    cell_spec.pop("rl")  # the RL arm is cached on its own (`run_rl`)
    config = {"spec": cell_spec, "seed": seed}
    cell, run = store.cached_json(
        "process-cell", config, "cell.json", lambda run: _seed_cell(store, spec, seed, run.dir)
    )
    return dict(cell), run


def _rm_dir(cell_dir: Path, kind: str) -> Path:
    """Where a cell keeps its generator-size reward model of ``kind`` (for `run_rl`)."""
    return cell_dir / f"rm-{kind}"


def _seed_cell(store: Store, spec: ProcessSpec, seed: int, out_dir: Path) -> dict[str, Any]:
    """`run_seed` computed afresh; the generator-size reward models are saved in ``out_dir``."""
    from alignlab.model.hf import load

    t0 = time.perf_counter()
    gen_run = train_generator(store, spec.generator, seed)
    gen = load(gen_run.dir / "model")
    t_gen = time.perf_counter() - t0
    test = chain_problems(spec.n_test, seed, "bon-test", spec.generator.noise)
    samples = sample_traces(gen, test, spec.max_n, seed, spec.temperature)
    checks = check_all(test, samples)
    lp, lt = _labelled_samples(gen, spec, seed)
    held = chain_problems(128, seed, "rm-heldout", spec.generator.noise)
    hp, ht = flat(held, sample_traces(gen, held, 2, seed + 20_000, spec.temperature))
    tp, tt = flat(test, samples)
    t_sample = time.perf_counter() - t0 - t_gen
    rms: dict[str, Any] = {}
    for size in spec.rm_sizes:
        init = gen
        if size != spec.generator.size:
            init = load(train_generator(store, recipe_for(spec.generator, size), seed).dir / "model")
        for kind in KINDS:
            t1 = time.perf_counter()
            rm = train_step_rm(init, lp, lt, kind, seed, spec.rm)  # type: ignore[arg-type]
            if size == spec.generator.size:
                rm.body.save_pretrained(str(_rm_dir(out_dir, kind)))
            scores = rm.score(tp, tt).reshape(len(test), spec.max_n)
            rms[f"{size}/{kind}"] = {
                **bon_curve(scores, checks, spec.ns),
                "label_accuracy": rm_accuracy(rm, hp, ht),
                "seconds": time.perf_counter() - t1,
            }
    cell = {
        "seed": seed,
        "generator_run": gen_run.id,
        "generator": summary_rates(checks),
        "labelled": summary_rates(check_all(lp, [[t] for t in lt])),
        "rms": rms,
        "seconds": {"generator": t_gen, "sampling": t_sample, "total": time.perf_counter() - t0},
    }
    return cell


def _spec_dict(spec: ProcessSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _labelled_samples(gen: Any, spec: ProcessSpec, seed: int) -> tuple[list[ChainProblem], list[str]]:
    """The reward models' training samples of one seed (prompts, traces): the same in `run_seed`
    and in `run_rl` when it has to refit a reward model (a cell stored before they were kept)."""
    train = chain_problems(spec.n_labelled // spec.per_problem, seed, "rm-train", spec.generator.noise)
    return flat(train, sample_traces(gen, train, spec.per_problem, seed + 10_000, spec.temperature))


def run_rl(store: Store, spec: ProcessSpec, seed: int) -> dict[str, Any]:
    """The RL arm for one seed: RLOO of the generator against the ORM and the PRM of its own size
    (the ones `run_seed` fitted and stored with its cell), with final accuracy, all-steps-right
    rate and trace error of its samples along the run; cached as a ``process-rl`` run."""
    config = {"spec": _spec_dict(spec), "seed": seed}
    out, _ = store.cached_json("process-rl", config, "rl.json", lambda run: _rl_arms(store, spec, seed))
    return dict(out)


def _rl_arms(store: Store, spec: ProcessSpec, seed: int) -> dict[str, Any]:
    """`run_rl` computed afresh."""
    from alignlab.model.hf import load

    t0 = time.perf_counter()
    gen = load(train_generator(store, spec.generator, seed).dir / "model")
    _, cell_run = _cell(store, spec, seed)
    out: dict[str, Any] = {"seed": seed}
    for kind in KINDS:
        stored = _rm_dir(cell_run.dir, kind)
        if stored.is_dir():
            # The same weights a refit gives (same data, same seed), without its 60-110 s.
            rm = StepRewardModel(load(stored), kind).eval().requires_grad_(False)  # type: ignore[arg-type]
        else:
            lp, lt = _labelled_samples(gen, spec, seed)
            rm = train_step_rm(gen, lp, lt, kind, seed, spec.rm)  # type: ignore[arg-type]
        a = spec.rl
        out[kind] = rloo_chain(
            gen,
            rm.score,
            chain_rates,
            a.steps,
            a.prompts,
            a.samples,
            a.lr,
            a.eval_every,
            a.n_eval,
            seed,
            spec.generator.noise,
        )
    out["seconds"] = time.perf_counter() - t0
    return out


def aggregate_rl(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind, the measured rows over seeds (mean with t interval at each measurement)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        rows = []
        for i in range(min(len(a[kind]) for a in arms)):
            pts = [a[kind][i] for a in arms]
            rows.append(
                {
                    "step": pts[0]["step"],
                    **{
                        k: _interval([p[k] for p in pts])
                        for k in ("kl", "final_accuracy", "steps_ok", "trace_error")
                    },
                }
            )
        out[kind] = rows
    return out


# ---- over seeds -------------------------------------------------------------------------------


def _interval(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return Estimate(math.nan, math.nan, math.nan, 0, "not measured in any seed").to_dict()
    lo = min(0.0, *vals)
    return seed_interval(vals, bounds=(lo, 1.0) if max(vals) <= 1 else None).to_dict()


def aggregate(spec: ProcessSpec, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per RM size, kind and N: final accuracy and trace error over seeds, and PRM minus each ORM
    (paired within seed)."""
    out: dict[str, Any] = {}
    for size in spec.rm_sizes:
        rows = []
        for i, n in enumerate(spec.ns):
            row: dict[str, Any] = {"n": n}
            for kind in KINDS:
                for metric in ("final_accuracy", "trace_error"):
                    row[f"{kind}_{metric}"] = _interval(
                        [c["rms"][f"{size}/{kind}"][metric][i] for c in cells]
                    )
            for other in ("orm", "orm-steps"):
                for metric in ("final_accuracy", "trace_error"):
                    diffs = [
                        c["rms"][f"{size}/prm"][metric][i] - c["rms"][f"{size}/{other}"][metric][i]
                        for c in cells
                    ]
                    vals = [d for d in diffs if math.isfinite(d)]
                    row[f"prm_minus_{other}_{metric}"] = (
                        seed_interval(vals).to_dict() if vals else _interval([])
                    )
            rows.append(row)
        out[size] = {
            "rows": rows,
            "label_accuracy": {
                k: _interval([c["rms"][f"{size}/{k}"]["label_accuracy"] for c in cells]) for k in KINDS
            },
        }
    return out


def _answer(
    spec: ProcessSpec, by_size: dict[str, Any], rl: dict[str, Any] | None, gen: dict[str, Any], seeds: int
) -> str:
    """The headline: reward models of the generator's size (as Uesato and Lightman start theirs
    from the policy's base) at the N where the PRM's mean accuracy peaks, and at the largest N."""
    size = spec.generator.size if spec.generator.size in by_size else spec.rm_sizes[0]
    rows = by_size[size]["rows"]
    best = max(rows, key=lambda r: r["prm_final_accuracy"]["value"])
    last = rows[-1]

    def trio(r: dict[str, Any], metric: str) -> str:
        return ", ".join(f"{LABELS[k]} {_e(r[f'{k}_{metric}'])}" for k in ("prm", "orm-steps", "orm"))

    text = (
        f"{size} reward models, {seeds} seeds, generator alone {_e(gen['final_accuracy'])} right with trace "
        f"error {_e(gen['trace_error'])}: at N={best['n']} final accuracy {trio(best, 'final_accuracy')}; "
        f"trace error {trio(best, 'trace_error')} (Lightman PRM 78% vs ORM 72%; Uesato 3.4% vs 14.0%); at "
        f"N={last['n']} accuracy {trio(last, 'final_accuracy')}; trace error {trio(last, 'trace_error')}."
    )
    if rl:
        ends = "; ".join(
            f"{LABELS[k]} accuracy {_e(v[-1]['final_accuracy'])}, trace error {_e(v[-1]['trace_error'])}"
            for k, v in rl.items()
        )
        text += f" RL for {rl['prm'][-1]['step']:.0f} steps against each: {ends}."
    return text


def run_process(store: Store, spec: ProcessSpec) -> dict[str, Any]:
    """Every seed (cached per seed), then intervals over seeds."""
    cells = [run_seed(store, spec, s) for s in spec.seeds]
    by_size = aggregate(spec, cells)
    rl = aggregate_rl([run_rl(store, spec, s) for s in spec.seeds]) if spec.rl.steps else None
    gen = {
        k: _interval([c["generator"][k] for c in cells])
        for k in ("final_accuracy", "steps_ok", "trace_error")
    }
    answer = _answer(spec, by_size, rl, gen, len(cells))
    return {
        "answer": answer,
        "ns": spec.ns,
        "generator": gen,
        "by_size": by_size,
        "rl": rl,
        "cells": cells,
        "anchors": {"uesato_trace_error": UESATO_TRACE_ERROR, "lightman_accuracy": LIGHTMAN_ACCURACY},
        "timing": {"cell_seconds": [c["seconds"] for c in cells]},
    }


# ---- output -----------------------------------------------------------------------------------


def _e(d: dict[str, Any]) -> str:
    return str(Estimate.from_dict(d))


def format_process(result: dict[str, Any]) -> str:
    """Console text: the answer, then per RM size the best-of-N table."""
    lines = [result["answer"], ""]
    g = result["generator"]
    lines.append(
        f"Generator samples: final accuracy {_e(g['final_accuracy'])}, all steps right {_e(g['steps_ok'])}, "
        f"trace error {_e(g['trace_error'])}"
    )
    for size, block in result["by_size"].items():
        acc = ", ".join(f"{LABELS[k]} {_e(v)}" for k, v in block["label_accuracy"].items())
        kinds = [k for k in KINDS if f"{k}_final_accuracy" in block["rows"][0]]
        lines.append(f"\n{size} reward models (accuracy on their own held-out labels: {acc}):")
        heads = [f"{LABELS[k]} {m}" for m in ("final acc", "trace err") for k in kinds]
        lines.append(f"  {'N':>4}  " + " ".join(f"{x:<20}" for x in heads))
        for r in block["rows"]:
            cols = [_e(r[f"{k}_{m}"]) for m in ("final_accuracy", "trace_error") for k in kinds]
            lines.append(f"  {r['n']:>4}  " + " ".join(f"{c:<20}" for c in cols))
    for kind, rows in (result.get("rl") or {}).items():
        lines.append(f"\nRL (RLOO, no KL penalty) against the generator-size {LABELS.get(kind, kind)}:")
        for r in rows:
            lines.append(
                f"  step {r['step']:>4.0f}  KL {_e(r['kl']):<18} final acc {_e(r['final_accuracy']):<20} "
                f"steps right {_e(r['steps_ok']):<20} trace error {_e(r['trace_error'])}"
            )
    lines.append(
        "\nAnchors: Uesato et al. 2022 trace error ORM 14.0%, PRM 3.4%; "
        "Lightman et al. 2023 best-of-N ORM 72.4%, PRM 78.2%."
    )
    return "\n".join(lines)


def process_html(result: dict[str, Any]) -> str:
    """HTML: answer first, then the best-of-N table per RM size beside the anchors."""
    parts = [f"<p class='q'><b>{h.esc(result['answer'])}</b></p>"]
    g = result["generator"]
    parts.append(
        h.kv_table(
            {
                "generator final accuracy": _e(g["final_accuracy"]),
                "generator all steps right": _e(g["steps_ok"]),
                "generator trace error": _e(g["trace_error"]),
            }
        )
    )
    for size, block in result["by_size"].items():
        parts.append(f"<h3>{h.esc(size)} reward models</h3>")
        kinds = [k for k in KINDS if f"{k}_final_accuracy" in block["rows"][0]]
        diffs = [k for k in ("orm", "orm-steps") if f"prm_minus_{k}_trace_error" in block["rows"][0]]
        heads = ["N"] + [f"{LABELS[k]} {m}" for m in ("final acc", "trace error") for k in kinds]
        heads += [f"PRM - {LABELS[k]} trace error" for k in diffs]
        rows = [
            [str(r["n"])]
            + [h.estimate(r[f"{k}_{m}"]) for m in ("final_accuracy", "trace_error") for k in kinds]
            + [h.estimate(r[f"prm_minus_{k}_trace_error"]) for k in diffs]
            for r in block["rows"]
        ]
        parts.append(h.table(heads, rows, numeric=(0,)))
    for kind, rows in (result.get("rl") or {}).items():
        parts.append(f"<h3>RL against the {h.esc(LABELS.get(kind, kind))} (RLOO, no KL penalty)</h3>")
        parts.append(
            h.table(
                ["step", "KL (nats)", "final acc", "all steps right", "trace error"],
                [
                    [
                        f"{r['step']:.0f}",
                        h.estimate(r["kl"]),
                        h.estimate(r["final_accuracy"]),
                        h.estimate(r["steps_ok"]),
                        h.estimate(r["trace_error"]),
                    ]
                    for r in rows
                ],
                numeric=(0,),
            )
        )
    parts.append(
        "<p class='muted'>"
        + h.esc(
            "Anchors: Uesato et al. 2022 trace error 14.0% (ORM) -> 3.4% (PRM); Lightman et al. 2023 "
            "best-of-N accuracy 72.4% (ORM) vs 78.2% (PRM). Intervals: t over seeds."
        )
        + "</p>"
    )
    return "\n".join(parts)


register_study(
    StudyDef(
        name="process-supervision",
        question=(
            "Does process supervision (rewarding each step) select fewer right-for-wrong-reasons "
            "solutions than outcome supervision?"
        ),
        presets=_presets,
        run=run_process,
        summary=format_process,
        report=process_html,
    )
)
