"""Process vs outcome supervision: the step checker, trace error, PRM scores and best-of-N.

Hand-made traces pin down every label; a tiny untrained model checks that the PRM's score is the
product of the step probabilities it reports; best-of-N weights are checked against brute force
over every subset.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

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
from alignlab.tasks.op_chain import (
    ChainProblem,
    TraceNoise,
    check_trace,
    noisy_trace,
    parse_prompt,
    random_problem,
    trace_error,
)

# 2 +*- (mod 5): +2=3, *3=1, -1=0.
P = ChainProblem(2, "+*-")
CLEAN = "+2=3;*3=1;-1=0"
CANCEL = "+2=4;*4=1;-1=0"  # a wrong output, then a wrong step back onto the true value
SLIP = "+2=4;*4=3;-3=2"  # a wrong output that propagates
SHORT = "+2=3;*3=1"  # stops early
LONG = CLEAN + ";+4=0"  # one step too many, ending on the right answer


def test_problem_and_prompt_round_trip() -> None:
    assert P.prompt == "2 +*-" and P.trace() == CLEAN and P.answer == 0
    assert parse_prompt(P.prompt) == P
    for bad in ("copy abc", "7 +*", "2 +/", "2"):
        with pytest.raises(ValueError, match="not a chain prompt"):
            parse_prompt(bad)
    q = random_problem(random.Random(0), (3, 5))
    assert parse_prompt(q.prompt) == q and 3 <= q.k <= 5


def test_checker_labels_hand_made_traces() -> None:
    clean, cancel, slip = check_trace(P, CLEAN), check_trace(P, CANCEL), check_trace(P, SLIP)
    assert clean.step_ok == (True, True, True) and clean.steps_ok and clean.final_correct
    assert cancel.step_ok == (False, False, True) and cancel.final_correct and not cancel.steps_ok
    assert cancel.first_error == 0 and cancel.right_for_wrong_reasons
    assert slip.step_ok == (False, False, False) and not slip.final_correct and slip.final == 2
    short, long_ = check_trace(P, SHORT), check_trace(P, LONG)
    # Stopping early is the last written step's error, so a PRM labels it wrong.
    assert short.step_ok == (True, False) and not short.final_correct
    # The extra step is wrong although it ends on the right answer: a trace error.
    assert long_.final_correct and long_.step_ok == (True, True, True, False)
    assert long_.right_for_wrong_reasons
    assert check_trace(P, "").final is None and not check_trace(P, "garbage").final_correct


def test_trace_error_counts_only_final_correct_traces() -> None:
    checks = [check_trace(P, t) for t in (CLEAN, CLEAN, CANCEL, SLIP, SLIP, LONG)]
    # 4 traces end right (2 clean, cancel, long); 2 of them have a wrong step; slips don't count.
    assert trace_error(checks) == pytest.approx(2 / 4, rel=1e-12)
    assert math.isnan(trace_error([check_trace(P, SLIP)]))


def test_noisy_traces_have_the_promised_kinds() -> None:
    rng = random.Random(0)
    noise = TraceNoise(slip=0.3, cancel=0.3)
    problems = [random_problem(rng, (3, 5)) for _ in range(2000)]
    checks = [check_trace(p, noisy_trace(p, rng, noise)) for p in problems]
    # Binomial sd at n = 2000 is ~0.011: four of them either side. Every operation is one-to-one,
    # so a slip never lands back on the true value, and every cancelling pair ends on it.
    assert abs(sum(c.steps_ok for c in checks) / 2000 - 0.4) < 0.045
    assert abs(sum(c.right_for_wrong_reasons for c in checks) / 2000 - 0.3) < 0.045
    assert sum(c.final_correct for c in checks) == sum(
        c.steps_ok or c.right_for_wrong_reasons for c in checks
    )
    with pytest.raises(ConfigError, match="slip \\+ cancel"):
        TraceNoise(slip=0.7, cancel=0.5)


def test_step_targets_label_up_to_the_first_error() -> None:
    assert step_targets(check_trace(P, CANCEL), "prm") == [0.0, None, None]
    assert step_targets(check_trace(P, CLEAN), "prm") == [1.0, 1.0, 1.0]
    assert step_targets(check_trace(P, "+2=3;*3=2;-2=1"), "prm") == [1.0, 0.0, None]
    assert step_targets(check_trace(P, SHORT), "prm") == [1.0, 0.0]
    assert step_targets(check_trace(P, CANCEL), "orm") == [None, None, 1.0]
    assert step_targets(check_trace(P, SLIP), "orm") == [None, None, 0.0]


def test_prm_score_is_the_product_of_its_step_probabilities() -> None:
    torch.manual_seed(0)
    body = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_ctx=64, init_std=0.3))
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
    # The outcome-labelled product model scores like the PRM; only its training labels differ.
    np.testing.assert_allclose(StepRewardModel(body, "orm-steps").score([P] * 4, traces), scores, rtol=1e-6)
    with pytest.raises(ConfigError, match="kind must be one of"):
        StepRewardModel(body, "bogus")  # type: ignore[arg-type]


def test_product_loss_is_cross_entropy_of_the_product() -> None:
    from alignlab.oversight.process import _product_loss

    v = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    ends = torch.tensor([[True, True, True, False]])
    p = torch.sigmoid(v[0, :3]).prod()
    # float32 log-sigmoid sums and expm1: agreement to ~1e-6 relative.
    assert float(_product_loss(v, ends, torch.tensor([1.0]))) == pytest.approx(float(-p.log()), rel=1e-5)
    assert float(_product_loss(v, ends, torch.tensor([0.0]))) == pytest.approx(
        float(-(1 - p).log()), rel=1e-5
    )


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


def test_study_aggregates_over_seeds_and_reports_answer_first() -> None:
    from alignlab.studies.process_supervision import ProcessSpec, aggregate, format_process, process_html

    spec = ProcessSpec(rm_sizes=("al-30k",), seeds=(0, 1, 2), max_n=4)
    assert spec.ns == [1, 2, 4]

    def cell(seed: int) -> dict[str, object]:
        shift = 0.01 * seed
        rm = {
            "al-30k/orm": {
                "final_accuracy": [0.5, 0.6, 0.7],
                "trace_error": [0.2, 0.25, 0.3 + shift],
                "label_accuracy": 0.8,
            },
            "al-30k/orm-steps": {
                "final_accuracy": [0.5, 0.6, 0.7],
                "trace_error": [0.2, 0.2, 0.2],
                "label_accuracy": 0.85,
            },
            "al-30k/prm": {
                "final_accuracy": [0.5, 0.65, 0.75],
                "trace_error": [0.2, 0.1, 0.05 + shift],
                "label_accuracy": 0.9,
            },
        }
        rates = {"final_accuracy": 0.5, "steps_ok": 0.4, "trace_error": 0.2, "samples": 10}
        return {"seed": seed, "generator": rates, "rms": rm, "seconds": {"total": 1.0}}

    cells = [cell(s) for s in spec.seeds]
    rows = aggregate(spec, cells)["al-30k"]["rows"]
    last = rows[-1]
    assert last["orm_trace_error"]["value"] == pytest.approx(0.31, rel=1e-9)
    # PRM - ORM is the same in every seed: a zero-width interval at -0.25.
    assert last["prm_minus_orm_trace_error"]["value"] == pytest.approx(-0.25, rel=1e-9)
    assert last["prm_minus_orm_trace_error"]["hi"] == pytest.approx(-0.25, rel=1e-9)
    from alignlab.studies import process_supervision as ps

    result = {
        "answer": "ANSWER <x>",
        "generator": {
            k: ps._interval([0.5, 0.5, 0.5]) for k in ("final_accuracy", "steps_ok", "trace_error")
        },
        "by_size": aggregate(spec, cells),
    }
    assert format_process(result).startswith("ANSWER <x>")
    page = process_html(result)
    assert page.index("ANSWER &lt;x&gt;") < page.index("<table") and "<x>" not in page


def test_the_rl_arm_reuses_the_cells_reward_models_and_matches_a_refit(tmp_path: Path) -> None:
    """`run_rl` loads the generator-size reward models `run_seed` stored with its cell instead of
    fitting them again, and gets exactly what a refit (same data, same seed) gives. Tiny settings:
    the numbers mean nothing, only their equality does."""
    from alignlab import load
    from alignlab.oversight import process
    from alignlab.safety.overopt import RLArm
    from alignlab.store import Store
    from alignlab.studies import process_supervision as ps

    spec = ps.ProcessSpec(
        generator=process.GeneratorRecipe(size="al-30k", steps=20, lr=1e-2, batch_size=8),
        rm_sizes=("al-30k",),
        seeds=(0,),
        n_labelled=8,
        rm=process.RMTraining(steps=2, batch_size=4),
        n_test=2,
        max_n=2,
        rl=RLArm(steps=1, prompts=2, samples=2, eval_every=1, n_eval=2),
    )
    store = Store(tmp_path / "store")
    fits: list[str] = []
    real_fit = ps.train_step_rm

    def counted(*args: Any, **kwargs: Any) -> Any:
        fits.append(args[3])
        return real_fit(*args, **kwargs)

    ps.train_step_rm = counted  # type: ignore[assignment]
    try:
        ps.run_seed(store, spec, 0)
        assert sorted(fits) == sorted(ps.KINDS)  # one fit per kind, in the cell
        stored = ps.run_rl(store, spec, 0)
        assert sorted(fits) == sorted(ps.KINDS)  # none again for the RL arm
        _, cell_run = ps._cell(store, spec, 0)
        # The stored weights are a refit's exactly: same scores on the labelled traces (which
        # differ between traces, so the comparison is not of constants).
        gen = load(ps.train_generator(store, spec.generator, 0).dir / "model")
        lp, lt = ps._labelled_samples(gen, spec, 0)
        for kind in ps.KINDS:
            loaded = process.StepRewardModel(load(ps._rm_dir(cell_run.dir, kind)), kind)
            refitted = real_fit(gen, lp, lt, kind, 0, spec.rm)
            scores = loaded.score(lp, lt)
            assert np.ptp(scores) > 0 and np.array_equal(scores, refitted.score(lp, lt)), kind
            shutil.rmtree(ps._rm_dir(cell_run.dir, kind))
        refit = ps._rl_arms(store, spec, 0)  # a cell stored before the models were kept: refits
        assert len(fits) == 2 * len(ps.KINDS)
    finally:
        ps.train_step_rm = real_fit  # type: ignore[assignment]
    for kind in ps.KINDS:
        # JSON text: NaN (no right answer to judge a trace of) compares equal to itself there.
        assert json.dumps(stored[kind]) == json.dumps(refit[kind]), kind
