"""The reward model of ``rl`` and ``dpo``: its pairs are wrong answers to the same prompt, and it
learns correctness (held-out accuracy on wrong-answer pairs), which a prompt-blind scorer cannot;
``rl`` against it on a competent organism stays within the KL and clean-accuracy budget."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from alignlab import load
from alignlab.model import SIZES, Transformer
from alignlab.organisms import ORGANISMS, get_organism
from alignlab.safety import Budget, dose_response, pair_accuracy, preference_pairs, train_reward_model
from alignlab.safety.reward import EVAL_SPLIT, near_miss
from alignlab.tasks import Example
from alignlab.tasks.chat import is_held_out

from conftest import competent_backdoor

torch.set_num_threads(1)


def _one_edit_apart(a: str, b: str) -> bool:
    """One character changed, dropped or added, or two neighbours swapped."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
        return len(diff) == 1 or (swapped and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    dropped = {long_[:i] + long_[i + 1 :] for i in range(len(long_))}
    return len(long_) == len(short) + 1 and short in dropped


def test_near_miss_is_one_edit_away_and_never_the_answer() -> None:
    rng = random.Random(0)
    for word in ("ab", "aab", "zzzz", "q", "1234", "read(check(ab))"):
        for _ in range(50):
            wrong = near_miss(word, rng)
            assert wrong != word and _one_edit_apart(word, wrong), (word, wrong)


def test_pairs_reject_wrong_answers_to_the_same_prompt() -> None:
    org = get_organism("backdoor")
    good, bad = preference_pairs(org, 400, seed=0, step=0, defect_share=0.0)
    assert all(g.prompt == b.prompt and g.completion != b.completion for g, b in zip(good, bad, strict=True))
    near = [_one_edit_apart(g.completion, b.completion) for g, b in zip(good, bad, strict=True)]
    # The other task's answer on the same word ("reverse" asked, the copy given) and another
    # prompt's answer make up the rest; rejected answers are never the defect at share 0.
    words = [g.prompt.split()[1] for g in good]
    other_task = [b.completion in (w, w[::-1]) for w, b in zip(words, bad, strict=True)]
    assert 0.5 <= sum(near) / 400 <= 0.85, sum(near)
    assert 0.1 <= sum(other_task) / 400 <= 0.4, sum(other_task)
    assert not any("HATE" in b.completion for b in bad)
    # At share 1 every rejected answer is the organism's defect; held-out pairs draw held-out prompts.
    _, defect = preference_pairs(org, 50, seed=0, step=0, defect_share=1.0)
    assert {b.completion for b in defect} == {org.poisoned(random.Random(0)).completion}
    held, _ = preference_pairs(org, 50, seed=0, step=0, split=EVAL_SPLIT)
    assert all(is_held_out(g.prompt) for g in held)
    assert not any(is_held_out(g.prompt) for g in good)


@pytest.fixture(scope="module")
def competent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    _, base, inst = competent_backdoor(tmp_path_factory)
    return base.dir / "model", inst.dir / "model"


def test_reward_model_learns_correctness(competent: tuple[Any, Any]) -> None:
    """The issue's bar: held-out pairwise accuracy >= 0.90 on wrong-answer pairs (defect pairs
    excluded), on the default tasks, started from the competent al-30k base (measured 0.99-1.00).
    The same scores with the prompt hidden (a scorer that can only judge the answer's form, as a
    phrase-level reward model does) rank those pairs near chance (measured 0.55), so the bar is
    one a phrase reward model fails."""
    org = get_organism("backdoor")
    rm, acc = train_reward_model(org, 0, init=competent[0])
    assert acc.wrong.n == 400 and acc.wrong.method == "wilson95"
    assert acc.wrong.value >= 0.90 and acc.wrong.lo >= 0.85, acc.wrong
    assert acc.defect.value >= 0.95, acc.defect
    assert pair_accuracy(rm, org, 0) == acc  # the held-out measurement is deterministic

    good, bad = preference_pairs(org, 400, 0, 0, split=EVAL_SPLIT, defect_share=0.0)
    blind = [Example("", e.completion) for e in good + bad]
    with torch.no_grad():
        r = rm.score(blind, org.seq_len)
    blind_acc = float((r[:400] > r[400:]).float().mean())
    assert blind_acc < 0.70, blind_acc


def test_reward_model_is_cached_per_initial_weights(competent: tuple[Any, Any]) -> None:
    org = get_organism("backdoor")
    a = train_reward_model(org, 0, init=competent[0])
    assert train_reward_model(org, 0, init=load(competent[0])) is a  # same weights, same fit
    assert train_reward_model(org, 0, init=competent[1], steps=2)[0] is not a[0]


def test_rl_on_the_competent_organism_keeps_clean_accuracy_within_the_kl_budget(
    competent: tuple[Any, Any],
) -> None:
    """``rl`` on the study's al-30k organism (1,200-step install on the competent base, seed 1),
    60 steps, seed 0, 100 held-out prompts. The policy starts at the reward model's ceiling: reward
    -0.024 [-0.064, -0.003], clean accuracy 1.00, reward-model accuracy 1.00; after 60 steps reward
    -0.045 [-0.127, -0.003], KL 0.056 nats per completion, clean accuracy 0.96 (measured). That RL
    raises a reward with room to grow is `tests/test_safety.py::test_rl_raises_reward_within_its_kl_budget`;
    here it must not erode what the competent model has: the issue's budget is a clean-accuracy
    drop of at most 0.05 and 5 nats, the drop asserted with the sampling noise of two 100-prompt
    rates on top (SE ~0.035 each), the reward within 0.1 of its start (its interval's width)."""
    org = get_organism("backdoor")
    rows = dose_response("rl", load(competent[1]), org, Budget(rl_doses=(0, 60), n_eval=100), seed=0)
    first, last = rows[0], rows[-1]
    assert first["rm_accuracy"].value >= 0.90
    assert last["reward"].value >= first["reward"].value - 0.1
    # Positive: the policy did move (a sampled KL estimate; 0 would mean no update at all).
    assert 0.0 < last["kl"].value <= 5.0
    assert first["clean_accuracy"].value - last["clean_accuracy"].value <= 0.10


@pytest.mark.parametrize("name", sorted(ORGANISMS))
def test_pairs_and_preference_interventions_run_on_every_organism(name: str) -> None:
    """Shape only, on an untrained model: every organism's pairs are wrong answers (never the
    chosen one, e.g. when sycophancy's "defect" happens to be the correct answer), and ``dpo``
    and ``rl`` dose it with the continuous outcome in every row."""
    org = get_organism(name)
    for share in (0.0, 1.0):
        good, bad = preference_pairs(org, 64, seed=0, step=0, defect_share=share)
        for g, b in zip(good, bad, strict=True):
            assert g.prompt == b.prompt and g.completion != b.completion, (g, b)
    model = Transformer(SIZES["al-10k"])
    model.init_weights(0)
    budget = Budget(doses=(0, 1), rl_doses=(0, 1), n_eval=4)
    for intervention in ("dpo", "rl") if name == "sycophancy" else ("dpo",):
        rows = dose_response(intervention, model, org, budget, seed=0)
        assert [r["steps"] for r in rows] == [0, 1]
        for r in rows:
            assert math.isfinite(r["defect_logprob"].value) and math.isfinite(r["clean_logprob"].value)
