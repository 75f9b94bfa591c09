"""The CAI study's feedback-size x policy-size grid: spec wiring, the paired smaller-critic contrast,
the study's grid output, and the critic shared across policies through the store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from alignlab._overrides import apply_overrides
from alignlab.errors import ConfigError
from alignlab.model.config import SIZES
from alignlab.model.hf import load, save_pretrained
from alignlab.model.transformer import Transformer
from alignlab.oversight import cai_pipeline
from alignlab.oversight.cai_grid import GridPoint, smaller_critic_contrast, weak_policies
from alignlab.oversight.cai_pipeline import CAIBudget, stored_feedback_model
from alignlab.oversight.feedback import FeedbackModel, demonstrations, train_feedback_model
from alignlab.stats import seed_interval
from alignlab.store import Store
from alignlab.studies import cai as cai_study
from alignlab.studies.cai import CAISpec

SIZES3 = ("al-30k", "al-100k", "al-300k")
TINY = ("plain", "banned")


def test_grid_spec_from_the_command_line() -> None:
    quick = cai_study._presets()["quick"][0]
    spec = apply_overrides(
        quick, ["policy_sizes=al-30k,al-100k", "fm_sizes=al-30k,al-100k", "policy_seeds=2,1"]
    )
    # The arms cell (al-30k, al-30k) first and on every seed; al-100k's row on its first seed only.
    assert spec.cells() == [
        ("al-30k", "al-30k", (0, 1)),
        ("al-30k", "al-100k", (0, 1)),
        ("al-100k", "al-30k", (0,)),
        ("al-100k", "al-100k", (0,)),
    ]
    full = cai_study._presets()["full"][0]
    assert {(p, f) for p, f, _ in full.cells()} == {(p, f) for p in SIZES3 for f in SIZES3}
    with pytest.raises(ConfigError, match="policy_seeds needs one count per policy size"):
        apply_overrides(spec, ["policy_seeds=2"])
    with pytest.raises(ConfigError, match=r"policy_seeds must be in \[1, 2\]"):
        apply_overrides(spec, ["policy_seeds=3,1"])
    with pytest.raises(ConfigError, match="must not repeat"):
        apply_overrides(spec, ["fm_sizes=al-30k,al-30k"])


def _pt(policy: str, fm: str, seed: int, harmless: float, balanced: float = 0.8) -> GridPoint:
    return GridPoint(policy, fm, seed, harmless, 0.5, 0.1, balanced)


def test_smaller_critic_contrast_is_paired_within_policy_and_seed() -> None:
    points = [
        # al-30k has no smaller critic: it contributes no unit, however large its values.
        _pt("al-30k", "al-30k", 0, 1.0),
        _pt("al-30k", "al-100k", 0, 0.0),
        _pt("al-100k", "al-30k", 0, 0.5),
        _pt("al-100k", "al-100k", 0, 0.9),
        _pt("al-100k", "al-300k", 0, 0.7),
        _pt("al-100k", "al-30k", 1, 0.6),
        _pt("al-100k", "al-100k", 1, 0.8),
        _pt("al-100k", "al-300k", 1, 0.8),
        _pt("al-300k", "al-30k", 0, 0.2),
        _pt("al-300k", "al-100k", 0, 0.4),
        _pt("al-300k", "al-300k", 0, 0.9),
    ]
    c = smaller_critic_contrast(points)
    assert c is not None
    assert c["units"] == [["al-100k", 0, 1, 2], ["al-100k", 1, 1, 2], ["al-300k", 0, 2, 1]]
    # Per unit: mean over smaller critics minus mean over the rest (hand-computed).
    want = seed_interval([0.5 - 0.8, 0.6 - 0.8, 0.3 - 0.9], bounds=(-1.0, 1.0))
    # Same arithmetic in a different summation order: equal to float64 rounding (1e-12 relative).
    for key in ("value", "lo", "hi"):
        assert c["harmless"][key] == pytest.approx(getattr(want, key), rel=1e-12)
    assert c["n_units"] == 3 and c["min_detectable"]["harmless"] > 0
    assert smaller_critic_contrast([p for p in points if p.policy_size == "al-30k"]) is None


_IDX = {s: i for i, s in enumerate(SIZES3)}


def _fake_cell(
    store: Any, p: str, f: str, seed: int, budget: Any, arms: bool = True, log: Any = None
) -> dict[str, Any]:
    """A stored cell whose SL-CAI harmlessness rises by 0.2 per critic size step, 0.05 per seed."""
    k = 30 + 20 * _IDX[f] + 5 * seed
    counts = {"agree": 80, "n": 100, "tp": 40, "pos": 50, "tn": 40, "neg": 50}

    def pc(h: int, helpful: int = 90) -> dict[str, Any]:
        return {
            "harmless": [h, 100],
            "helpful": [helpful, 100],
            "evasive": [5, 100],
            "refused": [h, 100],
            "by_kind": {},
        }

    _fake_cell.calls.append((p, f, seed, arms))  # type: ignore[attr-defined]
    return {
        "policy_size": p,
        "fm_size": f,
        "seed": seed,
        "feedback": {"demo": counts, "policy": counts, "policy_balanced": 0.6 + 0.1 * _IDX[f]},
        "arms": {"none": pc(2, 37 if p == "al-30k" else 95), "sl-cai": pc(k)},
        "seconds": {"sl-cai": 2.0},
        "cpu_seconds": {"sl-cai": 1.0},
    }


def test_study_runs_the_grid_and_leads_with_its_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_cell.calls = []  # type: ignore[attr-defined]
    monkeypatch.setattr(cai_study, "stored_cell", _fake_cell)
    spec = CAISpec(policy_sizes=SIZES3, fm_sizes=SIZES3, policy_seeds=(2, 2, 1), seeds=(0, 1))
    result = cai_study.run_cai(Store(tmp_path / "store"), spec)
    calls = _fake_cell.calls  # type: ignore[attr-defined]
    assert len(calls) == 6 + 6 + 3 and calls[0] == ("al-100k", "al-100k", 0, True)
    assert [c for c in calls if c[3]] == [("al-100k", "al-100k", 0, True), ("al-100k", "al-100k", 1, True)]
    assert {c[2] for c in calls if c[0] == "al-300k"} == {0}
    assert [(g["policy_size"], g["fm_size"]) for g in result["grid"]] == [
        (p, f) for p in SIZES3 for f in SIZES3
    ]
    c = result["smaller_critic_paired"]
    # Every unit: its smaller critics average 0.3 below the rest (al-100k: 0.3 vs 0.5, 0.7).
    assert c["n_units"] == 3
    assert c["harmless"]["value"] == pytest.approx((-0.3 - 0.3 - 0.3) / 3, rel=1e-9)
    assert result["grid_trends"]["critic_params"]["detected"]
    assert result["grid_answer"].startswith(
        "Grid: a critic smaller than the policy lowers SL-CAI harmlessness"
    )
    assert result["timing"]["stage_cpu_seconds"] == {"sl-cai": 15.0}
    # al-30k's helpful-only policy fails the world (0.37 helpful): the answer flags it.
    assert weak_policies(result["grid"]) == {"al-30k": pytest.approx(0.37, rel=1e-12)}
    assert "al-30k (0.37)" in result["grid_answer"]
    text = cai_study.format_cai(result)
    assert text.splitlines()[:2] == [result["answer"], result["grid_answer"]]
    page = cai_study.cai_html(result)
    assert page.index("Feedback size x policy size") < page.index("<h3>Arms</h3>") and "(smaller)" in page


def test_stored_critic_is_the_trained_critic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A seeded random al-30k stands in for the base model: the property is about storing and
    # reading back weights, and skipping the base model's competence gate saves ~30 s.
    torch.manual_seed(0)
    base = SimpleNamespace(dir=tmp_path / "base")
    save_pretrained(Transformer(SIZES["al-30k"]), base.dir / "model")
    monkeypatch.setattr(cai_pipeline, "base_run", lambda store, size, seed: (base, []))
    store = Store(tmp_path / "store")
    budget = CAIBudget(kinds=TINY, helpful_steps=0, label_budget=64, fm_steps=4, n_eval=8)
    fresh = stored_feedback_model(store, "al-30k", 0, budget)
    assert [r.status for r in store.runs(kind="cai-critic")] == ["done"]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a stored critic must be read back, not trained again")

    with monkeypatch.context() as m:
        m.setattr(cai_pipeline, "train_feedback_model", boom)
        again = stored_feedback_model(store, "al-30k", 0, budget)
    triples = demonstrations(32, 0, "fm-eval", kinds=TINY)
    # Bit-equal, not close: a grid cell must not depend on whether its critic came from the store.
    assert again.model is not fresh.model
    assert torch.equal(fresh.logits(triples), again.logits(triples))
    direct = train_feedback_model(load(base.dir / "model"), 64, 0, 4, kinds=TINY)
    assert torch.equal(direct.logits(triples), again.logits(triples))
    # The 4 steps moved the weights: equality above is not two untouched copies of the base.
    untouched = FeedbackModel(load(base.dir / "model"))
    assert not torch.equal(untouched.logits(triples), again.logits(triples))
