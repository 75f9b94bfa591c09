"""Digits debate (Irving et al. 2018): the judge, the players and the search, on tiny settings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from alignlab.errors import ConfigError
from alignlab.oversight import (
    debate_all_liars,
    load_digits_data,
    play_debates,
    random_pixel_correct,
    train_judge,
)
from alignlab.oversight.debate_digits import _child_margins, random_masks
from alignlab.stats import wilson


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = load_digits_data()
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1200], order[1200:]
    return images[train], labels[train], images[test], labels[test]


@pytest.fixture(scope="module")
def judge6(digits):  # type: ignore[no-untyped-def]
    train_x, train_y, _, _ = digits
    return train_judge(train_x, train_y, pixels=6, seed=0, hidden=64, epochs=10)


def test_random_masks_reveal_only_non_black_pixels(digits) -> None:  # type: ignore[no-untyped-def]
    images = digits[0][:200]
    masks = random_masks(images, 6, np.random.default_rng(0))
    assert (masks.sum(axis=1) == 6).all()  # every digit has >= 16 non-black pixels
    assert not (masks & (images == 0)).any()


def test_judge_beats_chance_with_six_pixels(digits, judge6) -> None:  # type: ignore[no-untyped-def]
    _, _, test_x, test_y = digits
    correct = random_pixel_correct(judge6, test_x, test_y, seed=0)
    est = wilson(int(correct.sum()), len(correct))
    # Chance is 0.1. The full recipe measured 0.58 (Irving et al.: 0.594 on MNIST); this shorter
    # training must still be far above chance, and six random pixels cannot identify nearly
    # every digit, so a value above 0.8 would mean the judge sees more than its pixels.
    assert est.lo > 0.3, est
    assert est.hi < 0.8, est


def test_incremental_margins_equal_the_judge_on_explicit_masks(digits, judge6) -> None:  # type: ignore[no-untyped-def]
    _, _, test_x, test_y = digits
    images, honest = test_x[:5], test_y[:5]
    liar = (honest + 1) % 10
    base = random_masks(images, 2, np.random.default_rng(1))
    pre = judge6._empty(5) + judge6._reveal_sum(images, base)
    fast = _child_margins(judge6, pre, judge6._deltas(images), np.stack([honest, liar], axis=1))
    for p in (0, 20, 37):
        masks = base.copy()
        masks[:, p] = True
        logits = judge6.logits(images, masks)
        slow = logits[np.arange(5), honest] - logits[np.arange(5), liar]
        # float32 sums of ~128 terms of size ~1: agreement to 1e-4 relative to the margins' scale.
        np.testing.assert_allclose(fast[:, p], slow, rtol=0, atol=1e-4 * max(1.0, np.abs(slow).max()))


def test_honest_debater_beats_random_pixel_liar(digits, judge6) -> None:  # type: ignore[no-untyped-def]
    _, _, test_x, test_y = digits
    vs_random = debate_all_liars(judge6, test_x[:100], test_y[:100], policy="greedy", liar_policy="random")
    vs_greedy = debate_all_liars(judge6, test_x[:100], test_y[:100], policy="greedy")
    won = wilson(int(vs_random.sum()), vs_random.size)
    assert won.lo > 0.5, won  # the bar; measured 0.999 with the full recipe
    # A liar who chooses its pixels must do better than one who reveals at random.
    assert vs_greedy.mean() < vs_random.mean()


def test_minimax_equals_brute_force_when_every_pixel_is_expanded(digits) -> None:  # type: ignore[no-untyped-def]
    train_x, train_y, test_x, test_y = digits
    judge = train_judge(train_x, train_y, pixels=3, seed=0, hidden=16, epochs=2)
    image, honest, liar = test_x[:1], test_y[:1], (test_y[:1] + 3) % 10
    value = play_debates(
        judge, image, honest, liar, honest_policy="search", liar_policy="search", first="honest", branch=64
    )[0]
    pixels = np.flatnonzero(image[0] > 0)
    margin = {}
    for trio in itertools.combinations(pixels, 3):
        mask = np.zeros((1, 64), dtype=bool)
        mask[0, list(trio)] = True
        logits = judge.logits(image, mask)[0]
        margin[frozenset(trio)] = logits[honest[0]] - logits[liar[0]]
    # Honest reveals a, the liar b, honest c: max_a min_b max_c of the final margin.
    brute = max(
        min(max(margin[frozenset((a, b, c))] for c in pixels if c not in (a, b)) for b in pixels if b != a)
        for a in pixels
    )
    assert value == pytest.approx(brute, rel=1e-5, abs=1e-5)  # float32 sums in either order


def test_bad_debates_are_refused(judge6, digits) -> None:  # type: ignore[no-untyped-def]
    _, _, test_x, test_y = digits
    with pytest.raises(ConfigError, match="differ"):
        play_debates(judge6, test_x[:2], test_y[:2], test_y[:2])
    with pytest.raises(ConfigError, match="both players"):
        play_debates(judge6, test_x[:2], test_y[:2], (test_y[:2] + 1) % 10, honest_policy="search")
    with pytest.raises(ConfigError, match="honest_policy"):
        play_debates(judge6, test_x[:2], test_y[:2], (test_y[:2] + 1) % 10, honest_policy="mcts")  # type: ignore[arg-type]


def test_debate_study_stores_answer_table_and_escaped_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alignlab.store import Store
    from alignlab.studies.debate import DebateSpec
    from alignlab.studies.registry import get_study, run_registered

    spec = DebateSpec(pixels=(4,), seeds=(0, 1), epochs=2, hidden=16, n_search=10, with_text=False)
    run, result = run_registered(Store(tmp_path / "store"), "debate", spec)
    row = result["rows"][0]
    assert [c["seed"] for c in row["cells"]] == [0, 1]
    assert row["debate"]["search, honest first"]["n"] == 2  # rate over two seeds
    assert row["cells"][0]["debate"]["search, honest first"]["debates"] == 10 * 9
    assert result["answer"].count("4 px") == 1 and "Irving MNIST 48.2%" in result["answer"]
    defn = get_study("debate")
    assert defn.summary(result).startswith(result["answer"])
    page = defn.report(result)
    assert "<table>" in page and "->" not in page  # text is escaped: "->" is written "-&gt;"
    assert (run.dir / "study.json").exists()


def test_stories_quote_only_the_story_and_lures_mislead() -> None:
    import random

    from alignlab.model.text import char_tokenizer
    from alignlab.tasks.stories import draw_question, judge_text, story_judge_batch

    rng = random.Random(0)
    for lure in (False, True):
        for _ in range(50):
            q = draw_question(rng, lure=lure)
            keys = [k for k, _ in q.facts]
            assert len(set(keys)) == len(keys) and q.facts[q.exact][0] == q.key
            assert q.answers[q.correct] == q.facts[q.exact][1] != q.answers[1 - q.correct]
            for i in q.near:
                assert sum(a != b for a, b in zip(q.facts[i][0], q.key, strict=True)) == 1
            if lure:
                assert q.lure in q.near and q.facts[q.lure][1] == q.answers[1 - q.correct]
            else:
                assert q.lure == -1
            text = judge_text(q, [q.exact, 0])
            assert text.endswith(f"|{q.key}=")
            quoted = [f for f in text.split("|")[0].split(";") if f]
            assert all((f.split("=")[0], int(f.split("=")[1])) in q.facts for f in quoted)  # verified
    batch = story_judge_batch(16, 32, seed=0, step=0, split="train")
    assert batch.loss_mask is not None and batch.attention_mask is not None
    assert (batch.loss_mask.sum(dim=1) == 1).all()  # one target per row: the asked value
    tok = char_tokenizer()
    for row, mask in zip(batch.tokens.tolist(), batch.loss_mask.tolist(), strict=True):
        text = tok.decode(row[1 : mask.index(True) + 1])
        # The target is the asked key's value, and when that fact is quoted, it is the quoted one.
        quoted, asked = text[:-1].split("|")
        assert text[-1].isdigit() and asked.endswith("=")
        for fact in filter(None, quoted.split(";")):
            if fact.startswith(asked):
                assert fact == asked + text[-1]


def test_text_debate_study_section_on_a_tiny_judge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alignlab.oversight.debate_text import TextDebateConfig
    from alignlab.store import Store
    from alignlab.studies.debate import STORY_KINDS, DebateSpec, debate_html
    from alignlab.studies.registry import run_registered

    text = TextDebateConfig(judge_steps=3, questions=40, best_of=(1, 16))
    spec = DebateSpec(pixels=(4,), seeds=(0,), epochs=1, hidden=8, n_search=2, text=text)
    _, result = run_registered(Store(tmp_path / "store"), "debate", spec)
    for kind in STORY_KINDS:
        pooled = result["text"][kind]["pooled"]
        # One judge seed: the pooled rate is that seed's Wilson interval over its 40 questions.
        assert "single seed" in pooled["naive"]["method"] and set(pooled["debate"]) == {"1", "16"}
        cell = result["text"][kind]["cells"][0]
        assert cell["debate"]["16"]["n"] == 40
        # Half the consultants argue the truth: 20 questions each side.
        assert cell["honest_consultant"]["1"]["n"] == cell["dishonest_consultant"]["1"]["n"] == 20
    assert 0.0 <= result["text"]["lure"]["cells"][0]["liar_found_lure"]["16"] <= 1.0
    assert "Text (best-of-16)" in result["answer"]
    assert "lure stories" in debate_html(result)
