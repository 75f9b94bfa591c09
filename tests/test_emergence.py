"""Emergence detection: phase changes are flagged with the right breakpoint; smooth curves and
pure noise are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignlab.scaling import (
    EMERGENCE_TEST,
    FitInputError,
    detect_emergence,
    plot_emergence,
    predictability_and_surprise,
    save_emergence,
)

STEPS = np.arange(0.0, 1000.0, 20.0)  # 50 checkpoints


def icl_curve(seed: int, center: float = 300.0, width: float = 8.0) -> np.ndarray:
    """An induction-head-like bump in in-context-learning score (Olsson et al. 2022)."""
    rng = np.random.default_rng(seed)
    return 0.1 + 0.6 / (1 + np.exp(-(STEPS - center) / width)) + rng.normal(0, 0.03, STEPS.size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phase_change_is_flagged_with_breakpoint_interval_covering_it(seed: int) -> None:
    res = detect_emergence(STEPS, icl_curve(seed), scale="linear", n_boot=200, seed=seed)
    assert res.emergent
    assert res.delta_bic >= res.threshold
    assert res.abrupt_model == "step"
    assert res.breakpoint.lo <= 300.0 <= res.breakpoint.hi
    # The interval is local: a few checkpoints wide, not the whole run.
    assert res.breakpoint.hi - res.breakpoint.lo <= 100.0
    assert res.change == pytest.approx(0.6, abs=0.1)


def test_phase_change_off_the_sampling_grid() -> None:
    # The jump falls between checkpoints (at 510): the interval is the gap that contains it.
    y = 0.2 + 0.5 * (STEPS > 510) + np.random.default_rng(7).normal(0, 0.05, STEPS.size)
    res = detect_emergence(STEPS, y, scale="linear", n_boot=200)
    assert res.emergent
    assert res.breakpoint.lo <= 510 <= res.breakpoint.hi
    assert res.breakpoint.value == pytest.approx(510.0)


def test_kink_across_scale_is_flagged_as_broken_stick() -> None:
    # Accuracy at chance until 1e8 parameters, then climbing linearly in log N (Wei et al. 2022).
    n = np.repeat(np.geomspace(1e6, 1e10, 13), 2)
    t = np.log10(n)
    acc = 0.25 + 0.25 * np.maximum(t - 8.0, 0) + np.random.default_rng(3).normal(0, 0.015, n.size)
    res = detect_emergence(n, acc, n_boot=200)
    assert res.emergent
    assert res.abrupt_model == "broken_stick"
    assert res.breakpoint.lo <= 1e8 <= res.breakpoint.hi
    assert res.change > 0


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_smooth_power_law_is_not_flagged(scale: str) -> None:
    rng = np.random.default_rng(5)
    if scale == "linear":
        x = STEPS + 20.0
        y = 0.2 + 2.0 * x**-0.3 + rng.normal(0, 0.01, x.size)
    else:
        x = np.repeat(np.geomspace(1e6, 1e10, 12), 2)
        y = 1.69 + 406.4 * x**-0.34 + rng.normal(0, 0.01, x.size)
    res = detect_emergence(x, y, scale=scale, n_boot=50)  # type: ignore[arg-type]
    assert not res.emergent
    assert res.delta_bic < 0
    assert res.smooth_model == "offset_power"


def test_gradual_sigmoid_is_not_flagged() -> None:
    # A transition spanning half of the range is smooth by the stated definition.
    n = np.geomspace(1e6, 1e10, 30)
    y = 0.25 + 0.5 / (1 + np.exp(-1.1 * (np.log(n) - np.log(1e8))))
    y = y + np.random.default_rng(8).normal(0, 0.02, n.size)
    res = detect_emergence(n, y, n_boot=50)
    assert not res.emergent


def test_pure_noise_false_positive_rate_at_most_10_percent() -> None:
    flagged = []
    for seed in range(20):
        y = np.random.default_rng(500 + seed).normal(0.3, 0.05, STEPS.size)
        flagged.append(detect_emergence(STEPS, y, scale="linear", n_boot=20, seed=seed).emergent)
    assert np.mean(flagged) <= 0.10
    # Also across scale, with replicate seeds at each of 10 sizes.
    n = np.repeat(np.geomspace(1e6, 1e10, 10), 3)
    flagged = [
        detect_emergence(n, np.random.default_rng(900 + s).normal(0.5, 0.05, n.size), n_boot=20).emergent
        for s in range(20)
    ]
    assert np.mean(flagged) <= 0.10


def test_predictability_and_surprise_smooth_loss_abrupt_metric() -> None:
    rng = np.random.default_rng(11)
    n = np.repeat(np.geomspace(1e6, 1e9, 12), 2)
    loss = (1.7 + 400 * n**-0.34) * np.exp(rng.normal(0, 0.005, n.size))
    acc = 0.25 + 0.5 * (n > 3e7) + rng.normal(0, 0.02, n.size)
    res = predictability_and_surprise(n, loss, acc, metric_name="3-digit addition", n_boot=50)
    assert res.loss_smooth and res.metric_abrupt and res.surprise
    assert res.loss_fit.r2 > 0.95
    bp = res.metric_emergence.breakpoint
    assert bp.lo <= 3e7 <= bp.hi
    assert "3-digit addition changes abruptly" in res.statement
    json.dumps(res.to_dict(), allow_nan=False)

    # A metric that improves smoothly with the loss is not a surprise.
    smooth_acc = 0.9 - 0.3 * (loss - 1.7) + rng.normal(0, 0.005, n.size)
    res = predictability_and_surprise(n, loss, smooth_acc, n_boot=50)
    assert res.loss_smooth and not res.metric_abrupt and not res.surprise
    assert "no abrupt change" in res.statement


def test_result_states_its_test_and_serialises() -> None:
    res = detect_emergence(STEPS, icl_curve(0), scale="linear", n_boot=50)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["test"] == EMERGENCE_TEST and "BIC" in d["test"]
    assert set(d["bic"]) == {"linear", "quadratic", "offset_power", "wide_sigmoid", "step", "broken_stick"}
    assert d["change_kind"] == "jump"
    assert d["breakpoint"]["method"] == "residual-bootstrap95-cells"
    # Seeded: the same call gives the same interval.
    again = detect_emergence(STEPS, icl_curve(0), scale="linear", n_boot=50)
    assert again.breakpoint == res.breakpoint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": [1, 1, 2, 2, 3, 3, 4, 4], "y": [0, 0, 0, 0, 1, 1, 1, 1]}, "distinct x"),
        ({"x": [1, 2, 3, 4, 5], "y": [0, 0, 1, 1, 1]}, "at least 6 points"),
        ({"x": [0, 1, 2, 3, 4, 5, 6], "y": [0, 0, 0, 1, 1, 1, 1]}, "x > 0"),
        ({"x": [1, 2, 3, 4, 5, 6], "y": [0, 0, 0, 1, 1, 1], "scale": "sqrt"}, "scale"),
        ({"x": [1, 2, 3, 4, 5, 6], "y": [0, 0, 0, 1, 1, float("inf")]}, "NaN or infinity"),
        ({"x": [1, 2, 3, 4, 5, 6], "y": [0, 0, 0, 1, 1, 1], "min_segment": 1}, "min_segment"),
    ],
)
def test_emergence_inputs_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(FitInputError, match=message):
        detect_emergence(**kwargs)


def test_emergence_plot_and_json_are_written(tmp_path: Path) -> None:
    y = icl_curve(0)
    res = detect_emergence(STEPS, y, scale="linear", n_boot=20)
    paths = plot_emergence(res, STEPS, y, tmp_path / "icl", xlabel="step", formats=("png",))
    out = save_emergence(res, STEPS, y, tmp_path / "store", "icl", xlabel="step")
    paths += [out["png"], out["svg"], out["json"]]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    data = json.loads(out["json"].read_text())
    assert data["emergence"]["emergent"] is True
    assert len(data["curve"]["abrupt"]) == len(data["curve"]["x"])
