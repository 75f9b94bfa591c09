"""Ground truth: induction heads form in a 2-layer attention-only model, never in a 1-layer one.

Training data: repeated random segments whose period varies per sequence (`varied_repeat_batch`);
a fixed period (the "induction" task) lets a single layer copy positionally (measured: layer-0
heads reach prefix matching 0.9 there), which is not induction. ``n_heads=2`` (d_head 32): with the
preset's 8 heads of d_head 8 no induction head formed within 800 steps (measured).
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.interp import (
    direct_logit_attribution,
    head_scores,
    icl_score,
    patch_heads,
    patch_hook,
    repeat_probe,
    target_logprob_metric,
    token_copying,
    track_training,
    varied_repeat_batch,
)
from alignlab.interp.phase import Trajectory
from alignlab.model import Transformer, model_preset
from alignlab.model import tokenizer as tk
from alignlab.train import TrainConfig, train

from conftest import FORWARD_ULPS, assert_close_rel

torch.set_num_threads(1)

SEQ = 48
HALF = (SEQ - 1) // 2
# Copying "some token seen earlier" without induction is worth at most about log(|chars| / half)
# nats on the repeat (a 1-layer model learns this unigram shortcut).
UNIGRAM_BOUND = math.log(len(tk.char_ids()) / HALF)


def _cfg(layers: int, steps: int) -> TrainConfig:
    model = model_preset(f"attn-only-{layers}l")
    return TrainConfig(
        model=model,
        task="induction",
        steps=steps,
        batch_size=32,
        seq_len=SEQ,
        lr=3e-3,
        warmup_steps=30,
        min_lr_ratio=1.0,
        eval_every=0,
        threads=1,
        seed=0,
    )


@pytest.fixture(scope="module")
def two_layer(tmp_path_factory: pytest.TempPathFactory) -> Trajectory:
    return track_training(
        _cfg(2, 500), tmp_path_factory.mktemp("ind2"), every=50, batch_fn=varied_repeat_batch
    )


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory: pytest.TempPathFactory) -> Transformer:
    return train(
        _cfg(1, 500), tmp_path_factory.mktemp("ind1"), progress=False, batch_fn=varied_repeat_batch
    ).model


def _model(traj: Trajectory) -> Transformer:
    assert traj.result is not None
    return traj.result.model


def test_two_layer_model_has_an_induction_head(two_layer: Trajectory) -> None:
    scores = head_scores(_model(two_layer), seq_len=SEQ)
    layer, _head, value = scores.best("prefix_matching")
    assert layer == 1 and value >= 0.8, scores.prefix_matching
    assert scores.best("previous_token")[0] == 0  # ... composed with a layer-0 previous-token head
    assert float(scores.prefix_matching[0].max()) < 0.1
    icl = icl_score(_model(two_layer), seq_len=SEQ)
    assert icl.improvement > 2 * UNIGRAM_BOUND, icl
    # The circuit-agnostic test agrees (measured 0.94 accuracy gain; chance is 0).
    assert token_copying(_model(two_layer), repeat_probe(64, SEQ)).accuracy_gain > 0.7


def test_one_layer_model_has_neither(one_layer: Transformer) -> None:
    scores = head_scores(one_layer, seq_len=SEQ)
    assert float(scores.prefix_matching.max()) < 0.3, scores.prefix_matching
    icl = icl_score(one_layer, seq_len=SEQ)
    assert icl.improvement < UNIGRAM_BOUND + 0.2, icl
    # Only the "seen before" shortcut, which picks among ~HALF earlier tokens (measured 0.07).
    assert token_copying(one_layer, repeat_probe(64, SEQ)).accuracy_gain < 0.2


def test_phase_change(two_layer: Trajectory) -> None:
    phase = two_layer.phase
    assert phase.step is not None and 100 <= phase.step <= 450, two_layer.to_dict()
    # The canonical circuit: copying and prefix matching rise together (measured: 300 and 350,
    # prefix matching 0.445 at 300 just under its halfway 0.447).
    assert phase.prefix_step is not None and abs(phase.prefix_step - phase.step) <= 50
    # The loss drops and in-context learning appears at the same time (Olsson et al. 2022).
    assert phase.loss_drop_step is not None and abs(phase.loss_drop_step - phase.step) <= 50
    assert phase.icl_step is not None and abs(phase.icl_step - phase.step) <= 50
    before = [s for s in two_layer.snapshots if s.step < phase.step - 50]
    after = [s for s in two_layer.snapshots if s.step >= phase.step + 50]
    assert max(s.prefix_matching for s in before) < 0.3 < 0.8 < min(s.prefix_matching for s in after)


def _induction_pair() -> tuple[torch.Tensor, torch.Tensor]:
    from alignlab.interp.heads import induction_pair

    return induction_pair(16, SEQ)


def test_patching_the_induction_heads_restores_copying(two_layer: Trajectory) -> None:
    model = _model(two_layer)
    clean, corrupted = _induction_pair()
    metric = target_logprob_metric(clean, slice(HALF + 1, 2 * HALF))
    grid = patch_heads(model, clean, corrupted, metric)
    assert int(grid.argmax()) // grid.shape[1] == 1  # the best single patch is a layer-1 head
    layer1 = patch_hook(model, clean, corrupted, metric, "blocks.1.attn.hook_z")
    assert layer1 > 0.9, (layer1, grid)


def test_dla_credits_the_induction_head(two_layer: Trajectory) -> None:
    model = _model(two_layer)
    clean, _ = _induction_pair()
    pos = HALF + 5  # a repeat position; the answer is the token after it
    attr = direct_logit_attribution(model, clean, clean[:, pos + 1], pos=pos)
    assert attr.top(1)[0][0].startswith("L1H"), attr.top(4)
    # As in test_interp_exact.test_dla_sums_to_logit: rounding of the summands' size.
    summands = float((attr.values.abs().sum(0) + attr.norm_bias.abs()).max())
    total = attr.values.sum(0) + attr.norm_bias
    assert_close_rel(total, attr.logit, ulps=FORWARD_ULPS, what="DLA sum", scale=summands)
