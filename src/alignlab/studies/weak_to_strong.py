"""Study ``weak-to-strong``: how much of the gap to the ceiling does a student trained on weak labels recover?

Burns et al. (2023) on the family: the task is verifying the assistant's reply to copy and reverse
(`alignlab.tasks.verify`), which the competent base models learned latently by next-token
pretraining on correct exchanges. Weak supervisors are a bag-of-letters probe and the smaller base
models, each trained on ground truth; students are the larger base models, fine-tuned on the weak
soft labels with plain cross-entropy and with the auxiliary confidence loss. PGR is reported with a
t interval over seeds where the gap clears the guard (3 seed sds), else "not measurable".

Anchors (Burns et al.): naive PGR about 0.25-0.5 on NLP tasks, about 0.8 with the confidence loss
at large gaps, about 0.1 for reward modelling.

Example:
    $ alignlab study weak-to-strong --preset quick
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab._validate import check_int, check_real, raise_problems
from alignlab.model.config import SIZES
from alignlab.oversight.weak_to_strong import (
    GUARD_SDS,
    LOSSES,
    FinetuneConfig,
    model_supervisor,
    pgr_over_seeds,
    probe_supervisor,
    train_student,
    w2s_data,
)
from alignlab.report import html as h
from alignlab.stats import Estimate, seed_interval
from alignlab.store import Store
from alignlab.studies.registry import StudyDef, register_study

PROBE = "probe"


@dataclass(frozen=True)
class WeakToStrongSpec:
    """The weak x strong grid.

    Attributes:
        sizes: base-model sizes, smallest first; each is a student, all but the largest also a
            weak supervisor (besides the probe).
        seeds: base-model seeds (vendored: 0, 1, 2); each also draws the data and batch order.
        n_weak: weak supervisor's ground-truth examples.
        n_transfer: examples the weak supervisor labels for the student.
        n_test: held-out test examples.
        steps: fine-tuning steps of every model (batch 32).
        lr: fine-tuning peak learning rate.
        aux_coef: final weight of the student's own hardened predictions (confidence loss).
        skip_unmeasurable: train no students for a pair whose weak and ceiling accuracies already
            fail the guard (their PGR would not be reported anyway).
    """

    sizes: tuple[str, ...] = ("al-30k", "al-100k", "al-300k")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_weak: int = 2000
    n_transfer: int = 2000
    n_test: int = 1000
    steps: int = 60
    lr: float = 1e-3
    aux_coef: float = 0.5
    skip_unmeasurable: bool = True

    def __post_init__(self) -> None:
        raise_problems(
            "WeakToStrongSpec",
            [
                None if self.sizes else "sizes must list at least one size",
                None if self.seeds else "seeds must list at least one seed",
                *(
                    f"unknown size {s!r}; choose from {', '.join(SIZES)}"
                    for s in self.sizes
                    if s not in SIZES
                ),
                None if _ascending(self.sizes) else f"sizes must be distinct, smallest first: {self.sizes}",
                *(check_int("seeds", s, lo=0) for s in self.seeds),
                check_int("n_weak", self.n_weak, lo=20, hi=1_000_000),
                check_int("n_transfer", self.n_transfer, lo=20, hi=1_000_000),
                check_int("n_test", self.n_test, lo=20, hi=1_000_000),
                check_int("steps", self.steps, lo=1, hi=1_000_000),
                check_real("lr", self.lr, lo=0.0, hi=1.0, lo_open=True),
                check_real("aux_coef", self.aux_coef, lo=0.0, hi=1.0),
            ],
        )

    def finetune(self) -> FinetuneConfig:
        return FinetuneConfig(steps=self.steps, lr=self.lr, aux_coef=self.aux_coef)

    def pairs(self) -> list[tuple[str, str]]:
        """(weak, strong) cells: the probe under every size, each size under every larger one."""
        out = [(PROBE, s) for s in self.sizes]
        out += [(w, s) for i, w in enumerate(self.sizes) for s in self.sizes[i + 1 :]]
        return out


def _ascending(sizes: tuple[str, ...]) -> bool:
    order = list(SIZES)
    idx = [order.index(s) for s in sizes if s in SIZES]
    return idx == sorted(set(idx))


def _presets() -> dict[str, tuple[WeakToStrongSpec, str]]:
    quick = WeakToStrongSpec(
        sizes=("al-30k",), seeds=(0, 1), n_weak=200, n_transfer=200, n_test=200, steps=10
    )
    return {
        "quick": (quick, "smoke: probe -> al-30k, 2 seeds, 10 steps (~1 min)"),
        "default": (
            WeakToStrongSpec(),
            "probe, al-30k, al-100k -> al-30k/100k/300k x 3 seeds: 2.4 CPU-min measured (15 min wall "
            "on the loaded 2-core machine)",
        ),
    }


def _load_base(store: Store, size: str, seed: int) -> tuple[Any, bool]:
    """The vendored (or trained) competent base model and whether it passed its competence gate."""
    from alignlab.model.hf import load
    from alignlab.train.base_model import BaseSpec, base_run

    run, gates = base_run(store, size, seed, BaseSpec())
    return load(run.dir / "model"), all(g.passed for g in gates)


def _acc_interval(values: list[float]) -> dict[str, Any]:
    return seed_interval(values, bounds=(0.0, 1.0)).to_dict()


def run_weak_to_strong(store: Store, spec: WeakToStrongSpec) -> dict[str, Any]:
    """Supervisors and ceilings for every seed, then students for every measurable pair."""
    cfg = spec.finetune()
    t0 = time.perf_counter()
    data, models, gates = {}, {}, {}
    weak: dict[str, dict[int, dict[str, Any]]] = {PROBE: {}, **{s: {} for s in spec.sizes[:-1]}}
    labels: dict[tuple[str, int], Any] = {}
    ceiling: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in spec.sizes}
    for seed in spec.seeds:
        data[seed] = w2s_data(seed, spec.n_weak, spec.n_transfer, spec.n_test)
        weak[PROBE][seed], labels[PROBE, seed] = probe_supervisor(data[seed], seed)
        for size in spec.sizes:
            models[size, seed], gates[f"{size}/seed{seed}"] = _load_base(store, size, seed)
            if size in weak:
                weak[size][seed], labels[size, seed] = model_supervisor(
                    models[size, seed], data[seed], cfg, seed
                )
            ceiling[size][seed] = train_student(models[size, seed], data[seed], None, cfg, seed=seed)
    t1 = time.perf_counter()
    cells = []
    for w, s in spec.pairs():
        w_acc = [weak[w][seed]["accuracy"] for seed in spec.seeds]
        c_acc = [ceiling[s][seed]["accuracy"] for seed in spec.seeds]
        cell: dict[str, Any] = {"weak": w, "strong": s, "weak_acc": w_acc, "ceiling_acc": c_acc}
        sd = max(np.std(w_acc, ddof=1), np.std(c_acc, ddof=1)) if len(spec.seeds) > 1 else np.nan
        gap = float(np.mean(c_acc) - np.mean(w_acc))
        if spec.skip_unmeasurable and not gap > GUARD_SDS * sd:
            verdict = (
                f"not measurable: gap {gap:.3f} <= {GUARD_SDS:g} x seed sd {sd:.3f} (no students trained)"
            )
            unmeasured = {"estimate": None, "measurable": False, "verdict": verdict}
            cell["losses"] = {loss: {"pgr": unmeasured} for loss in LOSSES}
            cells.append(cell)
            continue
        cell["losses"] = {}
        for loss in LOSSES:
            runs = [
                train_student(models[s, seed], data[seed], labels[w, seed], cfg, loss=loss, seed=seed)
                for seed in spec.seeds
            ]
            s_acc = [r["accuracy"] for r in runs]
            cell["losses"][loss] = {
                "student_acc": s_acc,
                "by_kind": [r["by_kind"] for r in runs],
                "student": _acc_interval(s_acc),
                "pgr": pgr_over_seeds(w_acc, s_acc, c_acc).to_dict(),
            }
        cells.append(cell)
    t2 = time.perf_counter()
    result = {
        "supervisors": {w: {"acc": _acc_interval([v["accuracy"] for v in per.values()]),
                            "by_kind": [v["by_kind"] for v in per.values()]} for w, per in weak.items()},
        "ceilings": {s: {"acc": _acc_interval([v["accuracy"] for v in per.values()]),
                         "by_kind": [v["by_kind"] for v in per.values()]} for s, per in ceiling.items()},
        "cells": cells,
        "gates_passed": gates,
        "timing": {"supervisors_and_ceilings_s": t1 - t0, "students_s": t2 - t1},
    }  # fmt: skip
    result["answer"] = _answer(result)
    return result


def _pgr_text(loss_cell: dict[str, Any]) -> str:
    est = loss_cell["pgr"].get("estimate")
    return str(Estimate.from_dict(est)) if est else "not measurable"


def _answer(result: dict[str, Any]) -> str:
    measured = [c for c in result["cells"] if any(lc["pgr"].get("measurable") for lc in c["losses"].values())]
    if not measured:
        return "not measurable: no weak/strong pair had a ceiling-weak gap above 3 seed sds"
    parts = [
        f"{c['weak']} -> {c['strong']}: CE {_pgr_text(c['losses']['xent'])}, "
        f"conf {_pgr_text(c['losses']['logconf'])}"
        for c in measured
    ]
    skipped = len(result["cells"]) - len(measured)
    tail = f"; {skipped} pair(s) not measurable (gap within seed noise)" if skipped else ""
    return "PGR over seeds — " + "; ".join(parts) + tail


def format_weak_to_strong(result: dict[str, Any]) -> str:
    """Console text: the answer, then accuracies and PGR per pair."""
    lines = [result["answer"], ""]
    for w, v in result["supervisors"].items():
        lines.append(f"weak {w}: {Estimate.from_dict(v['acc'])}")
    for s, v in result["ceilings"].items():
        lines.append(f"ceiling {s}: {Estimate.from_dict(v['acc'])}")
    for c in result["cells"]:
        for loss, lc in c["losses"].items():
            student = Estimate.from_dict(lc["student"]) if "student" in lc else "not trained"
            lines.append(f"{c['weak']} -> {c['strong']} [{loss}]: student {student}; {lc['pgr']['verdict']}")
    return "\n".join(lines)


def weak_to_strong_html(result: dict[str, Any]) -> str:
    """The report section: the PGR grid for both losses, then the accuracies it is made of."""
    rows = []
    for c in result["cells"]:
        row = [h.esc(c["weak"]), h.esc(c["strong"])]
        row.append(h.estimate(result["supervisors"][c["weak"]]["acc"]))
        row.append(h.estimate(result["ceilings"][c["strong"]]["acc"]))
        for loss in LOSSES:
            lc = c["losses"][loss]
            row.append(h.estimate(lc["student"]) if "student" in lc else h.missing("not trained"))
            est = lc["pgr"].get("estimate")
            row.append(h.estimate(est) if est else h.missing(lc["pgr"]["verdict"]))
        rows.append(row)
    head = ["weak", "strong", "weak acc", "ceiling acc"]
    head += ["student (CE)", "PGR (CE)", "student (conf)", "PGR (conf)"]
    kinds = []
    for role, table in (("weak", result["supervisors"]), ("ceiling", result["ceilings"])):
        for name, v in table.items():
            mean = {k: float(np.mean([bk[k] for bk in v["by_kind"]])) for k in v["by_kind"][0]}
            kinds.append([h.esc(f"{role} {name}"), *(h.fmt_number(mean[k]) for k in sorted(mean))])
    kind_head = ["model", *sorted(result["supervisors"][PROBE]["by_kind"][0])]
    return (
        "<h2>Weak-to-strong generalisation (Burns et al. 2023)</h2>"
        "<p>Accuracy on held-out replies; intervals are t95 over seeds. PGR = (student - weak) / "
        f"(ceiling - weak), shown only where the gap exceeds {GUARD_SDS:g} seed standard deviations. "
        "Anchors: naive PGR about 0.25-0.5 on NLP tasks, about 0.8 with the confidence loss at "
        "large gaps.</p>"
        + h.table(head, rows, numeric=range(2, len(head)))
        + "<h3>Accuracy by kind of reply (mean over seeds)</h3>"
        + h.table(kind_head, kinds, numeric=range(1, len(kind_head)))
    )


register_study(
    StudyDef(
        name="weak-to-strong",
        question="How much of the weak-to-ceiling gap does a strong student trained on weak labels recover?",
        presets=_presets,
        run=run_weak_to_strong,
        summary=format_weak_to_strong,
        report=weak_to_strong_html,
    )
)
