"""Head scores on forced attention patterns (exact), copying scores, and phase-change logic."""

from __future__ import annotations

import pytest
import torch

from alignlab.interp.heads import attention_scores, copying_scores, repeated_tokens
from alignlab.interp.phase import Snapshot, detect_phase_change
from alignlab.model import ModelConfig, Transformer
from alignlab.model.hooks import HookPoint

torch.set_num_threads(1)


def _forced(p: int, offset_fn: str) -> torch.Tensor:
    half = (p - 1) // 2
    pat = torch.zeros(p, p)
    for q in range(p):
        # induction: the token after the earlier copy, on the repeat; itself elsewhere
        induction = q - half + 1 if half < q <= 2 * half else q
        k = max(q - 1, 0) if offset_fn == "prev" else induction
        pat[q, k] = 1.0
    return pat


def test_scores_of_forced_patterns() -> None:
    model = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=64, attn_only=True)).eval()
    tokens = repeated_tokens(4, 33)

    def force(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = t.clone()
        out[:, 1] = _forced(t.shape[-1], "prev" if hook.name.startswith("blocks.0") else "ind")
        return out

    with model.hooks([(lambda n: n.endswith("hook_pattern"), force)]):
        prev, dup, prefix = attention_scores(model, tokens)
    assert prev[0, 1] == 1.0 and prefix[1, 1] == 1.0
    assert prefix[0, 1] < 0.1 and prev[1, 1] < 0.1 and dup[1, 1] == 0.0
    assert prev.shape == (2, 4)


def test_copying_score_of_identity_circuit() -> None:
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_vocab=16, n_ctx=8, attn_only=True)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(16))
        model.unembed.weight.copy_(torch.eye(16))
        attn = model.blocks[0].attn
        attn.W_QKV.weight.zero_()
        attn.W_O.weight.zero_()
        for h, sign in ((0, 1.0), (1, -1.0)):
            # head h: V reads dims 8h..8h+7, O writes them back (sign +1 copies, -1 suppresses)
            attn.W_QKV.weight[32 + 8 * h : 40 + 8 * h, 8 * h : 8 * h + 8] = torch.eye(8)
            attn.W_O.weight[8 * h : 8 * h + 8, 8 * h : 8 * h + 8] = sign * torch.eye(8)
    scores = copying_scores(model, token_ids=list(range(16)))
    assert scores[0, 0] > 0.99 and scores[0, 1] < -0.99


def test_phase_change_detection() -> None:
    steps = list(range(0, 500, 25))
    prefix = [0.02 if s < 200 else 0.85 for s in steps]
    loss = [4.5 - (1.5 if s >= 200 else 0.0) - 0.001 * s for s in steps]
    snaps = [
        Snapshot(s, p, 0.1, 4.0 * (p > 0.5), lo, 0.9 * (p > 0.5))
        for s, p, lo in zip(steps, prefix, loss, strict=True)
    ]
    phase = detect_phase_change(snaps)
    assert phase.step == 200 and phase.loss_drop_step == 200 and phase.icl_step == 200
    assert phase.prefix_step == 200 and phase.jump == pytest.approx(0.9)
    assert phase.prefix_jump == pytest.approx(0.83)
    flat = [Snapshot(s, 0.03, 0.1, 0.0, 4.5, 0.0) for s in steps]
    assert detect_phase_change(flat).step is None and detect_phase_change(flat).prefix_step is None


def test_phase_change_without_prefix_matching() -> None:
    """Copying appears at step 300 through heads prefix matching does not see (issue 15): the
    phase change is still found; the prefix-matching step beside it is None."""
    steps = list(range(0, 500, 25))
    snaps = [Snapshot(s, 0.04, 0.1, 3.0 * (s >= 300), 4.5, 0.9 * (s >= 300)) for s in steps]
    phase = detect_phase_change(snaps)
    assert phase.step == 300 and phase.icl_step == 300 and phase.prefix_step is None
    # Prefix matching rising without any copying is not a phase change either.
    heads_only = [Snapshot(s, 0.02 + 0.8 * (s >= 300), 0.1, 0.0, 4.5, 0.0) for s in steps]
    assert detect_phase_change(heads_only).step is None and detect_phase_change(heads_only).prefix_step == 300
