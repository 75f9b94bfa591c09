"""The circuit-agnostic copying test finds a copier that prefix matching cannot see.

Ground truth: a 2-layer attention-only model trained on `offset_repeats` with ``offset = -1``
(``x_1..x_n`` then ``x_n..x_1``): after ``x_i`` comes the token *before* the earlier ``x_i``. It
learns to copy through a layer-1 head attending to the earlier copy of the current token (offset
0, the "duplicate" position) that reads the token before it out of a layer-0 previous-token head
(V-composition), so the attention at prefix matching's offset (+1) stays near zero while the
model predicts the copied tokens. Measured (seed 0, 300 steps, ~20 s): copying accuracy gain
0.937 (copied 0.946, fresh 0.009), best prefix matching 0.019 (at most 0.11 over training),
layer-1 duplicate-token 0.86, layer-0 previous-token 0.64; phase change at step 225 on copying,
none on prefix matching. Seed 1: gain 0.941, step 250.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from alignlab.interp import (
    head_scores,
    icl_score,
    offset_repeat_batch,
    offset_repeats,
    repeat_probe,
    token_copying,
    track_training,
)
from alignlab.interp.phase import Trajectory
from alignlab.model import Transformer, model_preset
from alignlab.model import tokenizer as tk
from alignlab.train import TrainConfig

torch.set_num_threads(1)

SEQ = 32
OFFSET = -1
STEPS = 300
# Top-1 accuracy at chance is 1/|characters| (about 0.01); over the ~700 fresh and ~300 copied
# targets of a 64-sequence probe its standard error is under 0.01, so |gain| < 0.05 is "no
# copying" with room, and a gain > 0.7 cannot be chance.
NO_COPYING = 0.05
COPYING = 0.7


@pytest.fixture(scope="module")
def reverser(tmp_path_factory: pytest.TempPathFactory) -> Trajectory:
    cfg = TrainConfig(
        model=model_preset("attn-only-2l"),
        task="induction",
        steps=STEPS,
        batch_size=32,
        seq_len=SEQ,
        lr=3e-3,
        warmup_steps=30,
        min_lr_ratio=1.0,
        eval_every=0,
        threads=1,
        seed=0,
    )
    return track_training(
        cfg,
        tmp_path_factory.mktemp("reverser"),
        every=25,
        # Loss on the copied tokens only: with the full loss no copier formed in 400 steps.
        batch_fn=offset_repeat_batch(OFFSET, copied_only=True),
        probe=partial(offset_repeats, offset=OFFSET),
    )


def _model(traj: Trajectory) -> Transformer:
    assert traj.result is not None
    return traj.result.model


@pytest.mark.parametrize("offset", [1, 2, 3, -1, -2])
def test_offset_repeats_put_the_target_offset_from_the_match(offset: int) -> None:
    probe = offset_repeats(16, 40, seed=3, offset=offset)
    assert probe.tokens.shape == (16, 40) and bool((probe.tokens[:, 0] == tk.vocabulary()[tk.BOS]).all())
    assert not bool((probe.copied & probe.fresh).any()) and not bool(probe.copied[:, 0].any())
    assert bool((probe.copied | probe.fresh)[:, 1:].all())
    for row, copied in zip(probe.tokens.tolist(), probe.copied.tolist(), strict=True):
        targets = [p for p, c in enumerate(copied) if c]
        start = targets[0] - 1  # the second copy's first (unpredictable) token
        n_max = 39 // (abs(offset) + 1)  # content tokens; all but the second copy's first are copied
        assert n_max // 2 - 1 <= len(targets) <= n_max - 1
        for p in targets:
            # Some earlier x_i (before the second copy) has the target `offset` away from it.
            matches = [m for m in range(1, start) if row[m] == row[p - 1] and 0 < m + offset < start]
            assert any(row[m + offset] == row[p] for m in matches), (offset, p)


def test_repeat_probe_reproduces_the_icl_score() -> None:
    """On plain repeats the loss part of the test is `icl_score` (same tokens, same halves)."""
    model = Transformer(model_preset("attn-only-2l"))
    model.init_weights(seed=4)
    copy = token_copying(model, repeat_probe(32, SEQ))
    icl = icl_score(model, seq_len=SEQ)
    # Same float32 losses averaged in a different order: equal to a few float32 eps relative.
    assert copy.loss_fresh == pytest.approx(icl.loss_first_half, rel=1e-5)
    assert copy.loss_copied == pytest.approx(icl.loss_repeat_half, rel=1e-5)


def test_untrained_model_does_not_copy() -> None:
    """Negative control: no copying on either probe, no prefix matching."""
    model = Transformer(model_preset("attn-only-2l"))
    model.init_weights(seed=0)
    for probe in (offset_repeats(64, SEQ, seed=1, offset=OFFSET), repeat_probe(64, SEQ)):
        copy = token_copying(model, probe)
        assert abs(copy.accuracy_gain) < NO_COPYING, copy
        # Near-uniform logits at init: both losses within a tenth of a nat of each other.
        assert abs(copy.improvement) < 0.1, copy
    assert float(head_scores(model, seq_len=SEQ).prefix_matching.max()) < 0.1


def test_copying_is_found_where_prefix_matching_sees_none(reverser: Trajectory) -> None:
    model = _model(reverser)
    copy = token_copying(model, offset_repeats(64, SEQ, seed=1, offset=OFFSET))
    assert copy.accuracy_gain > COPYING, copy
    assert copy.loss_copied < 1.0, copy  # vs ln(96) = 4.6 nats for a blind guess
    scores = head_scores(model, seq_len=SEQ)
    assert float(scores.prefix_matching.max()) < 0.2, scores.prefix_matching
    # The non-canonical route: layer 1 attends to the duplicate, layer 0 to the previous token.
    layer, _, dup = scores.best("duplicate_token")
    assert layer == 1 and dup > 0.5, scores.duplicate_token
    layer, _, prev = scores.best("previous_token")
    assert layer == 0 and prev > 0.4, scores.previous_token
    # It copies backwards only: on plain repeats it does not copy.
    assert abs(token_copying(model, repeat_probe(64, SEQ)).accuracy_gain) < NO_COPYING


def test_phase_change_is_located_on_copying(reverser: Trajectory) -> None:
    phase = reverser.phase
    assert phase.step is not None and 100 <= phase.step <= STEPS, reverser.to_dict()
    assert phase.jump > COPYING
    # Before the fix this was the phase change: prefix matching never moved.
    assert phase.prefix_step is None and abs(phase.prefix_jump) < 0.3
    assert max(s.prefix_matching for s in reverser.snapshots) < 0.3
    assert phase.icl_step is not None and abs(phase.icl_step - phase.step) <= 50
    first, last = reverser.snapshots[0], reverser.snapshots[-1]
    assert first.step == 0 and abs(first.copying) < NO_COPYING and last.copying > COPYING
