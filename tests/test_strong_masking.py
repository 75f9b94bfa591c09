"""Completion-only loss, pinned by hand: the exact tokens and targets of one written-out chat
example, and the training loss against a manual cross-entropy over exactly those targets.

Issue 15 found that a completion mask shifted one token early passed every training and tokenizer
test. Here the mask positions are listed explicitly, and the loss is recomputed in float64 from
the logits at the listed positions only, so a mask one token early (the space before the answer
becomes a target) or late (the first answer character is dropped) changes the value by O(1 nat).
"""

from __future__ import annotations

import torch

from alignlab.model import lm_loss
from alignlab.model import tokenizer as tk
from alignlab.tasks.chat import Example, collate, encode_example
from alignlab.train.loop import _forward_loss

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model

BOS, EOS, PAD = 1, 2, 0
# The character table (alignlab.model.tokenizer.CHARS, offset 32): "\n" 32, "0"-"9" 33-42,
# "a"-"z" 43-68, "A"-"Z" 69-94, punctuation 95-126, " " 127. Written out by hand so that a change
# to the tokenizer or the chat template fails here, not silently in every trained model.
# "User: copy ab\nAssistant: " then the completion "ab" and EOS:
COPY_AB = [
    BOS,
    89, 61, 47, 60, 110, 127,  # "User: "
    45, 57, 58, 67, 127, 43, 44,  # "copy ab"
    32, 69, 61, 61, 51, 61, 62, 43, 56, 62, 110, 127,  # "\nAssistant: "
    43, 44, EOS,  # "ab" + EOS: the only targets
]  # fmt: skip
COPY_AB_TARGETS = [26, 27, 28]  # positions of "a", "b", EOS
# "User: add 1 2\nAssistant: 3": one answer character, then EOS.
ADD_1_2 = [
    BOS,
    89, 61, 47, 60, 110, 127,  # "User: "
    43, 46, 46, 127, 34, 127, 35,  # "add 1 2"
    32, 69, 61, 61, 51, 61, 62, 43, 56, 62, 110, 127,  # "\nAssistant: "
    36, EOS,  # "3" + EOS
]  # fmt: skip
ADD_1_2_TARGETS = [26, 27]


def test_chat_example_tokens_and_completion_mask_are_pinned() -> None:
    assert tk.vocabulary()[tk.BOS] == BOS and tk.vocabulary()[tk.EOS] == EOS
    for ex, ids, targets in (
        (Example("copy ab", "ab"), COPY_AB, COPY_AB_TARGETS),
        (Example("add 1 2", "3"), ADD_1_2, ADD_1_2_TARGETS),
    ):
        got_ids, got_mask = encode_example(ex)
        assert got_ids == ids
        assert [i for i, m in enumerate(got_mask) if m] == targets
        # The first target is the first completion character, right after "Assistant: ".
        assert tk.decode(got_ids[targets[0] - 2 : targets[0]]) == ": "


def test_collated_batch_pins_padding_attention_and_targets() -> None:
    batch = collate([Example("copy ab", "ab"), Example("add 1 2", "3")], seq_len=32)
    assert batch.tokens[0].tolist() == COPY_AB + [PAD] * 3
    assert batch.tokens[1].tolist() == ADD_1_2 + [PAD] * 4
    assert batch.loss_mask is not None and batch.attention_mask is not None
    assert torch.nonzero(batch.loss_mask).tolist() == [[0, t] for t in COPY_AB_TARGETS] + [
        [1, t] for t in ADD_1_2_TARGETS
    ]
    assert batch.attention_mask.sum(1).tolist() == [len(COPY_AB), len(ADD_1_2)]
    assert batch.attention_mask[0, : len(COPY_AB)].all() and not batch.attention_mask[0, len(COPY_AB) :].any()


def _manual_masked_loss(logits: torch.Tensor, rows: list[list[int]], targets: list[list[int]]) -> float:
    """Mean float64 cross-entropy over exactly the listed (row, position) targets: the token at
    position t is predicted from the logits at t - 1."""
    logp = logits.double().log_softmax(-1)
    terms = [-logp[b, t - 1, rows[b][t]].item() for b in range(len(rows)) for t in targets[b]]
    return sum(terms) / len(terms)


def test_training_loss_is_the_mean_cross_entropy_over_exactly_the_completion_targets() -> None:
    model = make_model(TINY_CFGS["llama-mha"], seed=3)
    batch = collate([Example("copy ab", "ab"), Example("add 1 2", "3")], seq_len=32)
    with torch.no_grad():
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
        loss = _forward_loss(model, batch).item()  # what train() and the safety loops minimise
        plain = lm_loss(logits, batch.tokens, batch.loss_mask).item()
    expected = _manual_masked_loss(logits, [COPY_AB, ADD_1_2], [COPY_AB_TARGETS, ADD_1_2_TARGETS])
    # One float32 log-softmax over 128 logits per term, mean of 5 terms, vs the same in float64:
    # the rounding of the 128-term reduction relative to the logits' size (as test_model's loss
    # tests).
    scale = float(logits.abs().max())
    f32 = torch.float32
    assert_close_rel(loss, expected, ulps=FORWARD_ULPS, what="training loss", dtype=f32, scale=scale)
    assert_close_rel(plain, expected, ulps=FORWARD_ULPS, what="lm_loss", dtype=f32, scale=scale)
    # The pinned targets matter on this model: a mask one token early or late gives a value
    # outside the tolerance by far (measured: +0.019 nat early, +0.90 late, +0.081 for the mean of
    # per-example means; the tolerance is 1.1e-4), so the comparisons above pin the positions.
    early = _manual_masked_loss(logits, [COPY_AB, ADD_1_2], [[25, 26, 27, 28], [25, 26, 27]])
    late = _manual_masked_loss(logits, [COPY_AB, ADD_1_2], [[27, 28], [27]])
    for other in (early, late):
        assert abs(other - expected) > 1e3 * torch.finfo(torch.float32).eps * scale, (other, expected)
    # Token-weighted mean over the batch (5 targets), not the mean of the two examples' means.
    per_example = (
        _manual_masked_loss(logits[:1], [COPY_AB], [COPY_AB_TARGETS])
        + _manual_masked_loss(logits[1:], [ADD_1_2], [ADD_1_2_TARGETS])
    ) / 2
    assert abs(per_example - expected) > 1e3 * torch.finfo(torch.float32).eps * scale
