"""Reward-model overoptimisation: gold scorer, best-of-n KL, Gao et al.'s fits and label noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from alignlab.errors import ConfigError
from alignlab.safety.overopt import bon_kl, bon_rewards, fit_gao, gold_reward, peak, preference_labels
from alignlab.tasks.op_chain import ChainProblem

P = ChainProblem(2, "+*-")  # +2=3;*3=1;-1=0 (mod 5)


def test_gold_reward_gives_partial_credit_and_penalises_padding() -> None:
    assert gold_reward(P, "+2=3;*3=1;-1=0") == 1.0
    assert gold_reward(P, "+2=3;*3=2;-2=1") == pytest.approx(1 / 3, rel=1e-12)
    assert gold_reward(P, "+2=3;*3=1;-1=0;+0=1") == pytest.approx(3 / 4, rel=1e-12)
    assert gold_reward(P, "") == 0.0


def test_bon_kl_formula() -> None:
    # KL(best-of-n || p) = log n - (n - 1) / n: 0 at n = 1, log 2 - 1/2 at n = 2.
    np.testing.assert_allclose(
        bon_kl(np.array([1, 2, 4])), [0.0, math.log(2) - 0.5, math.log(4) - 0.75], rtol=1e-12
    )
    # Against the definition on a finite support: best-of-n of a uniform over m outcomes picks
    # outcome i (ranked by a continuous score) with prob (i^n - (i-1)^n) / m^n; its KL to uniform
    # tends to the formula as m grows (the formula is the continuous-score limit).
    m, n = 20000, 8
    i = np.arange(1, m + 1, dtype=np.float64)
    q = (i / m) ** n - ((i - 1) / m) ** n
    kl = float(np.sum(q * np.log(q * m)))
    # Discretisation error of the sum is O(n / m) ~ 4e-4 relative here; 1e-3 leaves room.
    assert kl == pytest.approx(float(bon_kl(n)), rel=1e-3)
    with pytest.raises(ConfigError, match="n >= 1"):
        bon_kl(0)


@pytest.mark.parametrize("kind", ["bon", "rl"])
def test_fits_recover_known_alpha_beta(kind: str) -> None:
    rng = np.random.default_rng(1)
    d = np.repeat(np.sqrt(bon_kl(2 ** np.arange(1, 11))), 3)  # 10 d values x 3 seeds
    alpha, beta = 0.6, 0.25
    curve = d * (alpha - beta * (d if kind == "bon" else np.log(d)))
    fit = fit_gao(d, curve + rng.normal(0, 0.01, d.size), kind, n_boot=400)  # type: ignore[arg-type]
    # Noise sd 0.01 on rewards of ~0.3-0.5 over 30 points: the estimates land within a few
    # percent, and the 95% intervals must contain the truth.
    assert fit.alpha.value == pytest.approx(alpha, rel=0.05) and fit.alpha.lo <= alpha <= fit.alpha.hi
    assert fit.beta.value == pytest.approx(beta, rel=0.1) and fit.beta.lo <= beta <= fit.beta.hi
    true_peak = alpha / (2 * beta) if kind == "bon" else math.exp(alpha / beta - 1)
    assert fit.peak_d.value == pytest.approx(true_peak, rel=0.1)
    assert fit.peak_d.lo <= true_peak <= fit.peak_d.hi
    assert fit.to_dict()["form"] == f"gao-{kind}"


def test_peak_without_turn_down_is_infinite() -> None:
    d, r = peak(np.array([0.5, 0.5, -0.2]), np.array([0.2, -0.1, 0.1]), "bon")
    assert d[0] == pytest.approx(1.25, rel=1e-12) and r[0] == pytest.approx(0.3125, rel=1e-12)
    assert math.isinf(d[1]) and math.isnan(r[1])
    # Falling from the start (alpha < 0): the peak is the starting policy, not the vertex at d < 0.
    assert d[2] == 0.0 and r[2] == 0.0


def test_preference_labels_follow_bradley_terry_noise() -> None:
    n = 20000
    labels = preference_labels(np.full(n, 0.5), np.full(n, 0.3), 0.1, seed=0)
    expected = 1 / (1 + math.exp(-2.0))  # 0.881
    # Binomial sd at n = 20000 is 0.0023; four of them either side.
    assert abs(labels.mean() - expected) < 0.01
    ties = preference_labels(np.zeros(n), np.zeros(n), 0.1, seed=1)
    assert abs(ties.mean() - 0.5) < 0.015


def test_bon_rewards_gold_peak_under_an_exploitable_proxy() -> None:
    # A proxy that tracks gold in the bulk but overrates a rare kind of sample (e.g. padded
    # traces): best-of-n gold rises, then falls once n is large enough to find the rare ones.
    rng = np.random.default_rng(0)
    gold = rng.random((200, 256))
    proxy = gold + rng.normal(0, 0.1, gold.shape)
    rare = rng.random(gold.shape) < 0.01
    gold[rare], proxy[rare] = 0.0, 3.0
    curve = bon_rewards(proxy, gold, [1, 2, 4, 8, 16, 32, 64, 128, 256])
    g = np.array(curve["gold"])
    top = int(np.argmax(g))
    assert 0 < top < len(g) - 1 and g[-1] < g[top] - 0.1
    assert curve["proxy"] == sorted(curve["proxy"])  # proxy reward only rises with n


@pytest.mark.slow
def test_gold_peaks_on_a_tiny_run(tmp_path: Path) -> None:
    """The quick preset end to end (a 600-step al-30k policy, proxies on 100 and 1,000 noisy pairs,
    best-of-1..32): gold reward against the 100-pair proxy rises, then falls inside the range
    (measured: peak at best-of-4), and the study writes study.json answer-first. ~1 CPU-min."""
    from alignlab.store import Store
    from alignlab.studies.registry import get_study, run_registered

    spec = get_study("overoptimisation").preset("quick")
    run, result = run_registered(Store(tmp_path / "store"), "overoptimisation", spec)
    assert (run.dir / "study.json").exists() and result["answer"].startswith("Gold reward")
    row = next(r for r in result["rows"] if r["n_pairs"] == 100)
    top = int(np.argmax(row["gold"]))
    assert 0 < top < len(row["gold"]) - 1 and row["gold"][-1] < row["gold"][top]
    assert row["bon_gold_fit"]["params"]["beta"]["value"] > 0
