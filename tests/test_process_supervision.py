"""Process vs outcome supervision: the step checker, trace error, PRM scores and best-of-N.

Hand-made traces pin down every label; a tiny untrained model checks that the PRM's score is the
product of the step probabilities it reports; best-of-N weights are checked against brute force
over every subset.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.model import ModelConfig, Transformer
from alignlab.oversight.process import (
    StepRewardModel,
    best_of_n,
    bon_curve,
    prm_score,
    selection_weights,
    step_targets,
)
from alignlab.tasks.arith_chain import (
    ChainProblem,
    TraceNoise,
    check_trace,
    noisy_trace,
    parse_prompt,
    trace_error,
)

# 2 a+4 b*3 c-1 (mod 5): 2+4=1, 1*3=3, 3-1=2.
P = ChainProblem(2, (("+", 4), ("*", 3), ("-", 1)))
CLEAN = "a:2+4=1;b:1*3=3;c:3-1=2"
CANCEL = "a:2+4=0;b:0*3=3;c:3-1=2"  # a wrong result, then a wrong step back onto the truth
SLIP = "a:2+4=0;b:0*3=0;c:0-1=4"  # a wrong result that propagates
SHORT = "a:2+4=1;b:1*3=3"  # stops early
LONG = CLEAN + ";d:2+0=2"  # one step too many, same final answer


def test_problem_and_prompt_round_trip() -> None:
    assert P.prompt == "2 a+4 b*3 c-1" and P.trace() == CLEAN and P.answer == 2
    assert parse_prompt(P.prompt) == P
    with pytest.raises(ValueError, match="not a chain prompt"):
        parse_prompt("copy abc")


def test_checker_labels_hand_made_traces() -> None:
    clean, cancel, slip = check_trace(P, CLEAN), check_trace(P, CANCEL), check_trace(P, SLIP)
    assert clean.step_ok == (True, True, True) and clean.steps_ok and clean.final_correct
    assert cancel.step_ok == (False, False, True) and cancel.final_correct and not cancel.steps_ok
    assert cancel.first_error == 0 and cancel.right_for_wrong_reasons
    assert slip.step_ok == (False, False, False) and not slip.final_correct and slip.final == 4
    short, long_ = check_trace(P, SHORT), check_trace(P, LONG)
    assert not short.final_correct and not short.steps_ok
    # The extra step is wrong although its result repeats the right answer: a trace error.
    assert (
        long_.final_correct and long_.step_ok == (True, True, True, False) and long_.right_for_wrong_reasons
    )
    assert check_trace(P, "").final is None and not check_trace(P, "garbage").final_correct


def test_trace_error_counts_only_final_correct_traces() -> None:
    checks = [check_trace(P, t) for t in (CLEAN, CLEAN, CANCEL, SLIP, SLIP, LONG)]
    # 4 traces end right (2 clean, cancel, long); 2 of them have a wrong step; slips don't count.
    assert trace_error(checks) == pytest.approx(2 / 4, rel=1e-12)
    assert math.isnan(trace_error([check_trace(P, SLIP)]))


def test_noisy_traces_have_the_promised_kinds() -> None:
    rng = random.Random(0)
    noise = TraceNoise(slip=0.3, cancel=0.3)
    checks = [check_trace(P, noisy_trace(P, rng, noise)) for _ in range(2000)]
    clean = sum(c.steps_ok for c in checks) / 2000
    cancel = sum(c.right_for_wrong_reasons for c in checks) / 2000
    # Binomial sd at n=2000 is ~0.01; a cancelling pair is always final-correct, a slip never is
    # (nothing after the slip can land back: + and - are bijective mod 5, and *k too for k != 0,
    # except *0, which the slips before it reach with the 1/5 chance of b = 0).
    assert abs(clean - 0.4) < 0.04
    assert 0.3 <= cancel < 0.3 + 0.3 * 0.3
    with pytest.raises(ConfigError, match="slip \\+ cancel"):
        TraceNoise(slip=0.7, cancel=0.5)


def test_step_targets_label_up_to_the_first_error() -> None:
    assert step_targets(check_trace(P, CANCEL), "prm") == [0.0, None, None]
    assert step_targets(check_trace(P, CLEAN), "prm") == [1.0, 1.0, 1.0]
    assert step_targets(check_trace(P, "a:2+4=1;b:1*3=4;c:4-1=3"), "prm") == [1.0, 0.0, None]
    assert step_targets(check_trace(P, CANCEL), "orm") == [None, None, 1.0]
    assert step_targets(check_trace(P, SLIP), "orm") == [None, None, 0.0]


def test_prm_score_is_the_product_of_its_step_probabilities() -> None:
    torch.manual_seed(0)
    body = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_ctx=96, init_std=0.3))
    prm, orm = StepRewardModel(body, "prm"), StepRewardModel(body, "orm")
    traces = [CLEAN, CANCEL, SHORT, LONG]
    probs = prm.step_probs([P] * 4, traces)
    assert [len(p) for p in probs] == [3, 3, 2, 4]  # one verdict per step (closing ';' or EOS)
    scores = prm.score([P] * 4, traces)
    # float32 logits through log-sigmoid and exp: agreement to a few ulps of float32 relative.
    np.testing.assert_allclose(scores, [prm_score(p) for p in probs], rtol=1e-5)
    np.testing.assert_allclose(orm.score([P] * 4, traces), [p[-1] for p in probs], rtol=1e-5)
    # A random model's steps are not all near 1, so the product differs from the last step alone.
    assert not np.allclose(scores, [p[-1] for p in probs], rtol=1e-3)
    assert prm_score([0.5, 0.5, 0.8]) == pytest.approx(0.2, rel=1e-12)


def test_best_of_n_weights_equal_brute_force_over_subsets() -> None:
    rng = np.random.default_rng(0)
    scores, outcome = rng.normal(size=(1, 7)), rng.random((1, 7))
    for n in (1, 2, 3, 7):
        subsets = list(itertools.combinations(range(7), n))
        brute = np.mean([outcome[0, max(s, key=lambda i: scores[0, i])] for s in subsets])
        # Exact combinatorics in float64: agreement to rounding of a sum of 35 terms.
        assert best_of_n(scores, outcome, n)[0] == pytest.approx(brute, rel=1e-10)
    assert selection_weights(7, 3).sum() == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ConfigError, match="1 <= n <= m"):
        selection_weights(4, 5)


def test_bon_curve_prm_avoids_right_for_wrong_reasons() -> None:
    # Two problems, four samples each: clean, cancel, slip, slip. A scorer that likes final
    # answers (ORM-like) ranks clean and cancel alike; a step scorer ranks cancel below clean.
    checks = [[check_trace(P, t) for t in (CLEAN, CANCEL, SLIP, SLIP)]] * 2
    orm_like = np.array([[0.9, 0.95, 0.1, 0.2]] * 2)
    prm_like = np.array([[0.9, 0.3, 0.1, 0.2]] * 2)
    o, p = bon_curve(orm_like, checks, [1, 4]), bon_curve(prm_like, checks, [1, 4])
    assert o["final_accuracy"][0] == pytest.approx(0.5) and o["trace_error"][0] == pytest.approx(0.5)
    assert o["final_accuracy"][1] == 1.0 and o["trace_error"][1] == 1.0  # picks the cancel trace
    assert p["final_accuracy"][1] == 1.0 and p["trace_error"][1] == 0.0
