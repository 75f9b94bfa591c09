"""Study ``debate``: does debate raise a weak judge's accuracy?

1. Irving, Christiano & Amodei (2018) §3.1 on scikit-learn's 8x8 digits: a judge trained on ``k``
   random non-black pixels, then debates in which an honest and a lying player reveal those ``k``
   pixels. The anchor is their MNIST result, 59.4% -> 88.9% at 6 pixels and 48.2% -> 85.2% at 4.
2. Khan et al. (2024) on the family, reduced to one verified quote each: a small judge that never
   sees the story, naive vs consultancy vs debate, debater strength by best-of-N. The anchor: LLM
   judges 48% -> 76% with debate, higher with stronger debaters, lower with a more persuasive
   consultant.

Example:
    $ alignlab study debate --preset quick
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignlab._validate import check_int, raise_problems
from alignlab.oversight import DEBATE_CONDITIONS, DigitsDebateConfig, measure_digits_debate
from alignlab.oversight.debate_text import TextDebateConfig, measure_text_debate, train_story_judge
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
    """The digits debate grid and the text debate.

    Attributes:
        pixels: revealed pixels per judgement, one judge each.
        seeds: each draws a train/test split, a judge and the random reveals; for the text
            debate, the judge's base model (vendored seeds 0-2) and the questions.
        epochs: judge training epochs.
        hidden: judge hidden units.
        branch: pixels expanded per tree-search node.
        n_search: test images debated by tree search per seed (0 = all ~600).
        with_text: also run the text debate.
        text: the text debate's judge, questions and debater strengths.
    """

    pixels: tuple[int, ...] = (4, 6)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    hidden: int = 128
    branch: int = 3
    n_search: int = 200
    with_text: bool = True
    text: TextDebateConfig = field(default_factory=TextDebateConfig)

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
            DebateSpec(
                pixels=(4,),
                seeds=(0,),
                epochs=5,
                n_search=30,
                text=TextDebateConfig(judge_steps=20, questions=50, best_of=(1, 4)),
            ),
            "smoke: one 4-pixel judge, a 20-step text judge, <1 min",
        ),
        "default": (
            DebateSpec(),
            "4 and 6 pixels x 3 seeds (search on 200 images per seed) and the text debate: 3 CPU-min "
            "measured (19 min wall on the loaded 2-core machine)",
        ),
    }


def _over_seeds(cells: list[dict[str, Any]], pick: str) -> dict[str, Any]:
    """Interval over seeds of the counts at key path ``pick`` ("random" or a condition name)."""
    counts = [c["random"] if pick == "random" else c["debate"][pick] for c in cells]
    return rate_over_seeds([c["correct"] for c in counts], [c["n"] for c in counts]).to_dict()


def run_debate(store: Store, spec: DebateSpec) -> dict[str, Any]:
    """Measure every (pixels, seed) cell and pool each condition over seeds; then the text debate
    (its judges are stored runs in ``store``)."""
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
    text = _run_text(store, spec) if spec.with_text else None
    return {"answer": _answer(rows, text), "rows": rows, "text": text}


STORY_KINDS = {"plain": False, "lure": True}
TEXT_PROTOCOLS = ("consultancy", "honest_consultant", "dishonest_consultant", "debate")


def _rate(counts: list[dict[str, int]]) -> dict[str, Any]:
    return rate_over_seeds([c["correct"] for c in counts], [c["n"] for c in counts]).to_dict()


def _run_text(store: Store, spec: DebateSpec) -> dict[str, Any]:
    """Per story kind: naive, and each protocol per best-of-N, over judge seeds."""
    cells: dict[str, list[dict[str, Any]]] = {kind: [] for kind in STORY_KINDS}
    for seed in spec.seeds:
        judge = train_story_judge(store, spec.text.judge_size, spec.text.judge_steps, seed)
        for kind, lure in STORY_KINDS.items():
            cells[kind].append({"seed": seed, **measure_text_debate(judge, spec.text, seed, lure=lure)})
    out: dict[str, Any] = {"best_of": list(spec.text.best_of), "judge_size": spec.text.judge_size}
    for kind, per_seed in cells.items():
        pooled: dict[str, Any] = {"naive": _rate([c["naive"] for c in per_seed])}
        pooled["exact_quote"] = _rate([c["exact_quote"] for c in per_seed])
        if "lure_quote" in per_seed[0]:
            pooled["lure_quote"] = _rate([c["lure_quote"] for c in per_seed])
            pooled["exact_and_lure"] = _rate([c["exact_and_lure"] for c in per_seed])
        for protocol in TEXT_PROTOCOLS:
            pooled[protocol] = {
                str(n): _rate([c[protocol][str(n)] for c in per_seed]) for n in spec.text.best_of
            }
        out[kind] = {"pooled": pooled, "cells": per_seed}
    return out


def _answer(rows: list[dict[str, Any]], text: dict[str, Any] | None) -> str:
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
    digits = f"digits: {verdict} — random pixels -> debate ({HEADLINE}), over seeds: " + "; ".join(parts)
    if text is None:
        return digits
    top = str(max(text["best_of"]))
    kinds = []
    for kind in STORY_KINDS:
        p = text[kind]["pooled"]
        kinds.append(
            f"{kind} stories naive {Estimate.from_dict(p['naive'])}, consultancy "
            f"{Estimate.from_dict(p['consultancy'][top])}, debate {Estimate.from_dict(p['debate'][top])}"
        )
    return digits + f". Text (best-of-{top}): " + "; ".join(kinds)


def format_debate(result: dict[str, Any]) -> str:
    """Console text: the answer, then one line per (pixels, condition)."""
    lines = [result["answer"], ""]
    for r in result["rows"]:
        lines.append(f"{r['pixels']} pixels: random reveals {Estimate.from_dict(r['random'])}")
        for name, est in r["debate"].items():
            lines.append(f"  debate, {name}: {Estimate.from_dict(est)}")
    text = result.get("text")
    if text:
        for kind in STORY_KINDS:
            p = text[kind]["pooled"]
            lines.append(f"text, {kind} stories: naive judge {Estimate.from_dict(p['naive'])}")
            for n in text["best_of"]:
                cells = ", ".join(f"{pr} {Estimate.from_dict(p[pr][str(n)])}" for pr in TEXT_PROTOCOLS)
                lines.append(f"  best-of-{n}: {cells}")
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
        + (_text_html(result["text"]) if result.get("text") else "")
    )


def _text_html(text: dict[str, Any]) -> str:
    """The text-debate table per story kind: rows = debater strength, columns = protocols."""
    parts = [
        "<h2>Text debate (Khan et al. 2024, one verified quote each)</h2>"
        f"<p>Judge: {h.esc(text['judge_size'])} chat base fine-tuned to read quoted facts; it never "
        "sees the story. Accuracy over questions, t95 over judge seeds with a pooled Wilson floor. "
        "<i>plain</i>: the wrong answer has no support in the story; <i>lure</i>: a near-miss key "
        "(one letter off) carries it, a true but misleading quote for the liar. Anchor (Khan et "
        "al.): naive 48%, debate 76%, rising with debater strength; a more persuasive consultant "
        "lowers accuracy.</p>"
    ]
    head = ["best of N", "consultancy", "honest consultant", "dishonest consultant", "debate"]
    for kind in STORY_KINDS:
        p = text[kind]["pooled"]
        reads = f"naive judge {h.estimate(p['naive'])}; only the asked fact {h.estimate(p['exact_quote'])}"
        if "lure_quote" in p:
            reads += (
                f"; only the lure {h.estimate(p['lure_quote'])}; the asked fact and the lure "
                f"{h.estimate(p['exact_and_lure'])}"
            )
        rows = [[h.esc(n), *(h.estimate(p[pr][str(n)]) for pr in TEXT_PROTOCOLS)] for n in text["best_of"]]
        table = h.table(head, rows, numeric=range(1, 5))
        parts.append(f"<h3>{h.esc(kind)} stories</h3><p>{reads}</p>{table}")
    return "".join(parts)


register_study(
    StudyDef(
        name="debate",
        question="Does debate raise a weak judge's accuracy (digits: Irving 2018; text: Khan 2024)?",
        presets=_presets,
        run=run_debate,
        summary=format_debate,
        report=debate_html,
    )
)
