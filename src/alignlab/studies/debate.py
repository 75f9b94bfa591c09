"""Study ``debate``: does debate raise a sparse judge's accuracy over random reveals?

Irving, Christiano & Amodei (2018) §3.1 on scikit-learn's 8x8 digits: a judge trained on ``k``
random non-black pixels, then debates in which an honest and a lying player reveal those ``k``
pixels. The anchor is their MNIST result, 59.4% -> 88.9% at 6 pixels and 48.2% -> 85.2% at 4.

Example:
    $ alignlab study debate --preset quick
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignlab._validate import check_int, raise_problems
from alignlab.oversight import DEBATE_CONDITIONS, DigitsDebateConfig, measure_digits_debate
from alignlab.report import html as h
from alignlab.stats import Estimate, rate_over_seeds, wilson
from alignlab.store import Store
from alignlab.studies.registry import StudyDef, register_study

# Irving et al. (2018), Table 1 (MNIST, pre-committed liar): judge accuracy on random pixels, and
# the honest player's win rate against the best of the nine liars.
IRVING_MNIST = {4: (0.482, 0.852), 6: (0.594, 0.889)}
HEADLINE = "search, honest first"


@dataclass(frozen=True)
class DebateSpec:
    """The digits debate grid.

    Attributes:
        pixels: revealed pixels per judgement, one judge each.
        seeds: each draws a train/test split, a judge and the random reveals.
        epochs: judge training epochs.
        hidden: judge hidden units.
        branch: pixels expanded per tree-search node.
        n_search: test images debated by tree search per seed (0 = all ~600).
    """

    pixels: tuple[int, ...] = (4, 6)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    hidden: int = 128
    branch: int = 3
    n_search: int = 200

    def __post_init__(self) -> None:
        raise_problems(
            "DebateSpec",
            [
                None if self.pixels else "pixels must list at least one count",
                None if self.seeds else "seeds must list at least one seed",
                *(check_int("pixels", k, lo=1, hi=16) for k in self.pixels),
                *(check_int("seeds", s, lo=0) for s in self.seeds),
            ],
        )

    def cell(self, pixels: int) -> DigitsDebateConfig:
        return DigitsDebateConfig(
            pixels=pixels, hidden=self.hidden, epochs=self.epochs, branch=self.branch, n_search=self.n_search
        )


def _presets() -> dict[str, tuple[DebateSpec, str]]:
    return {
        "quick": (
            DebateSpec(pixels=(4,), seeds=(0,), epochs=5, n_search=30),
            "smoke: one 4-pixel judge, <1 min",
        ),
        "default": (DebateSpec(), "4 and 6 pixels x 3 seeds, search on 200 images per seed (~5 CPU-min)"),
    }


def _over_seeds(cells: list[dict[str, Any]], pick: str) -> dict[str, Any]:
    """Interval over seeds of the counts at key path ``pick`` ("random" or a condition name)."""
    counts = [c["random"] if pick == "random" else c["debate"][pick] for c in cells]
    return rate_over_seeds([c["correct"] for c in counts], [c["n"] for c in counts]).to_dict()


def run_debate(store: Store, spec: DebateSpec) -> dict[str, Any]:
    """Measure every (pixels, seed) cell and pool each condition over seeds."""
    del store  # the judges are seconds of scikit-learn; nothing is worth a stored run
    rows: list[dict[str, Any]] = []
    for k in spec.pixels:
        cells = [measure_digits_debate(spec.cell(k), seed) for seed in spec.seeds]
        for c in cells:
            c["random"]["wilson"] = wilson(c["random"]["correct"], c["random"]["n"]).to_dict()
            for d in c["debate"].values():
                d["wilson"] = wilson(d["correct"], d["n"]).to_dict()
                d["debate_win_rate"] = wilson(d["won"], d["debates"]).to_dict()
        row = {
            "pixels": k,
            "irving_mnist": IRVING_MNIST.get(k),
            "random": _over_seeds(cells, "random"),
            "debate": {name: _over_seeds(cells, name) for name, *_ in DEBATE_CONDITIONS},
            "cells": cells,
        }
        rows.append(row)
    return {"answer": _answer(rows), "rows": rows}


def _answer(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        base = Estimate.from_dict(r["random"])
        deb = Estimate.from_dict(r["debate"][HEADLINE])
        anchor = r["irving_mnist"]
        mnist = f" (Irving MNIST {anchor[0]:.1%} -> {anchor[1]:.1%})" if anchor else ""
        parts.append(f"{r['pixels']} px: {base} -> {deb}{mnist}")
    gained = all(
        Estimate.from_dict(r["debate"][HEADLINE]).lo > Estimate.from_dict(r["random"]).hi for r in rows
    )
    verdict = "yes, debate raised judge accuracy" if gained else "not clearly: the intervals overlap"
    return f"{verdict} — random pixels -> debate ({HEADLINE}), over seeds: " + "; ".join(parts)


def format_debate(result: dict[str, Any]) -> str:
    """Console text: the answer, then one line per (pixels, condition)."""
    lines = [result["answer"], ""]
    for r in result["rows"]:
        lines.append(f"{r['pixels']} pixels: random reveals {Estimate.from_dict(r['random'])}")
        for name, est in r["debate"].items():
            lines.append(f"  debate, {name}: {Estimate.from_dict(est)}")
    return "\n".join(lines)


def debate_html(result: dict[str, Any]) -> str:
    """The report section: the digits table beside Irving et al.'s MNIST numbers, then per seed."""
    head = [
        "pixels",
        "judge, random pixels",
        *[f"debate: {name}" for name, *_ in DEBATE_CONDITIONS],
        "Irving MNIST random -> debate",
    ]
    rows = []
    for r in result["rows"]:
        anchor = r["irving_mnist"]
        rows.append(
            [
                h.esc(r["pixels"]),
                h.estimate(r["random"]),
                *[h.estimate(r["debate"].get(name)) for name, *_ in DEBATE_CONDITIONS],
                h.esc(f"{anchor[0]:.1%} -> {anchor[1]:.1%}") if anchor else h.missing("no anchor"),
            ]
        )
    seed_rows = []
    for r in result["rows"]:
        for c in r["cells"]:
            seed_rows.append(
                [
                    h.esc(r["pixels"]),
                    h.esc(c["seed"]),
                    h.estimate(c["random"]["wilson"]),
                    *[
                        f"{h.estimate(c['debate'][n]['wilson'])}<br><span class='muted'>per debate "
                        f"{h.estimate(c['debate'][n]['debate_win_rate'])}</span>"
                        for n, *_ in DEBATE_CONDITIONS
                    ],
                ]
            )
    return (
        "<h2>Digits debate (Irving et al. 2018, §3.1)</h2>"
        "<p>Accuracy = share of test digits whose honest player beat all nine pre-committed liars "
        "(the random-pixel baseline: the judge's 10-way answer from random non-black pixels). "
        "Intervals: t over seeds with a pooled Wilson floor.</p>"
        + h.table(head, rows, numeric=range(1, len(head) - 1))
        + "<h3>Per seed (Wilson 95% over test images; below, the rate over single debates)</h3>"
        + h.table([*head[:1], "seed", *head[1:-1]], seed_rows, numeric=range(2, len(head)))
    )


register_study(
    StudyDef(
        name="debate",
        question="Does debate raise a sparse judge's accuracy over random reveals (Irving et al. 2018)?",
        presets=_presets,
        run=run_debate,
        summary=format_debate,
        report=debate_html,
    )
)
