"""Model behaviour: loss, loss masks, context limit, size family, config validation, generate."""

from __future__ import annotations

import itertools

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.model import MODEL_PRESETS, SIZES, ModelConfig, Transformer, lm_loss, model_preset

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model, random_tokens


def _manual_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-target negative log-likelihood ``[b, p-1]``: target t+1 predicted at position t."""
    logp = logits.double().log_softmax(-1)[:, :-1]
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0]


@pytest.mark.parametrize("name", ["neox-parallel", "llama-gqa"])
def test_loss_is_shifted_cross_entropy(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens = random_tokens(3, 16)
    logits = model(tokens)
    loss = model(tokens, return_type="loss")
    expected = _manual_nll(logits, tokens).mean()
    assert loss.ndim == 0
    # float32 log-softmax over 128 logits and a mean over 45 targets vs the same in float64: the
    # 128-term reduction's rounding, relative to the logits' size (the loss's terms).
    scale = float(logits.detach().abs().max())
    assert_close_rel(loss, expected, ulps=FORWARD_ULPS, what="loss", dtype=torch.float32, scale=scale)
    # A real model's loss is far from 0: guards against comparing two zeros.
    assert loss.item() > 1.0
    both_logits, both_loss = model(tokens, return_type="both")
    assert_close_rel(both_logits, logits, ulps=FORWARD_ULPS, what="logits of return_type=both")
    assert_close_rel(both_loss, loss, ulps=FORWARD_ULPS, what="loss of return_type=both", scale=scale)


def test_loss_mask_restricts_targets() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(2, 12, seed=3)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, 9:11] = True
    mask[:, 0] = True  # position 0 is never a target, even when marked
    logits = model(tokens)
    nll = _manual_nll(logits, tokens)
    target = mask[:, 1:]
    expected = nll[target].mean()
    loss = model(tokens, return_type="loss", loss_mask=mask)
    scale = float(logits.detach().abs().max())  # as in test_loss_is_shifted_cross_entropy
    assert_close_rel(loss, expected, ulps=FORWARD_ULPS, what="masked loss", dtype=torch.float32, scale=scale)
    # The mask must actually matter: the unmasked mean is different.
    assert abs(loss.item() - nll.mean().item()) > 1e-4
    # Integer masks behave like boolean ones.
    loss_int = model(tokens, return_type="loss", loss_mask=mask.long())
    assert_close_rel(loss_int, loss, ulps=FORWARD_ULPS, what="loss with an int mask", scale=scale)


def test_all_false_loss_mask_raises() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(2, 8)
    with pytest.raises(ValueError, match="loss_mask"):
        model(tokens, return_type="loss", loss_mask=torch.zeros(2, 8, dtype=torch.bool))
    # Only position 0 marked: still no targets.
    only_first = torch.zeros(2, 8, dtype=torch.bool)
    only_first[:, 0] = True
    with pytest.raises(ValueError, match="no target"):
        lm_loss(model(tokens), tokens, only_first)


def test_sequence_longer_than_n_ctx_raises() -> None:
    cfg = TINY_CFGS["neox-parallel"]
    model = make_model(cfg)
    assert model(random_tokens(1, cfg.n_ctx)).shape == (1, cfg.n_ctx, cfg.d_vocab)
    with pytest.raises(ValueError, match=r"n_ctx \(32\)") as info:
        model(random_tokens(1, cfg.n_ctx + 1))
    assert "33" in str(info.value)


def test_one_dim_tokens_are_one_sequence() -> None:
    model = make_model(TINY_CFGS["llama-gqa"])
    tokens = random_tokens(1, 10)
    assert_close_rel(model(tokens[0]), model(tokens), ulps=FORWARD_ULPS, what="1-d tokens")


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_param_counts_are_exact(name: str) -> None:
    cfg = MODEL_PRESETS[name]
    with torch.device("meta"):  # shapes only: the 10M model costs nothing
        model = Transformer(cfg)
    counts = cfg.param_counts()
    actual = sum(p.numel() for p in model.parameters())
    assert counts["total"] == actual
    embedding = model.embed.weight.numel() + model.unembed.weight.numel()
    assert counts["embedding"] == embedding
    assert counts["non_embedding"] == actual - embedding


@pytest.mark.parametrize("name", ["neox-sequential", "neox-attn-only", "llama-gqa", "llama-mha"])
def test_param_counts_tiny_variants(name: str) -> None:
    cfg = TINY_CFGS[name]
    model = Transformer(cfg)
    assert cfg.param_counts()["total"] == sum(p.numel() for p in model.parameters())


def test_size_family_spans_1e4_to_1e7() -> None:
    totals = [cfg.param_counts()["total"] for cfg in SIZES.values()]
    assert len(totals) >= 6
    assert all(a < b for a, b in itertools.pairwise(totals)), totals
    assert 5e3 <= totals[0] <= 3e4, totals[0]
    assert 5e6 <= totals[-1] <= 3e7, totals[-1]
    ratios = [b / a for a, b in itertools.pairwise(totals)]
    assert all(1.5 <= r <= 6 for r in ratios), ratios  # roughly x3 apart, no gaps
    for name, cfg in SIZES.items():
        assert model_preset(name) is cfg


def test_unknown_preset_is_config_error() -> None:
    with pytest.raises(ConfigError, match="al-10k"):
        model_preset("al-7b")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"arch": "neox", "n_heads": 4, "n_kv_heads": 2}, "n_kv_heads"),
        ({"rotary_pct": 1.5}, "rotary_pct"),
        ({"arch": "llama", "n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"arch": "gpt2"}, "arch"),
        ({"d_mlp": -1}, "d_mlp"),
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_dict_round_trip_and_unknown_key() -> None:
    cfg = TINY_CFGS["llama-gqa"]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="d_modle"):
        ModelConfig.from_dict({**cfg.to_dict(), "d_modle": 3})


def test_derived_dims() -> None:
    neox = TINY_CFGS["neox-parallel"]  # d_head 16, rotary_pct 0.25
    assert (neox.d_head, neox.rotary_dim, neox.mlp_width, neox.kv_heads) == (16, 4, 128, 2)
    llama = TINY_CFGS["llama-gqa"]  # llama rotates the whole head
    assert (llama.d_head, llama.rotary_dim, llama.kv_heads) == (8, 8, 2)
    assert llama.mlp_width % 8 == 0 and llama.mlp_width >= 8 * llama.d_model // 3


@pytest.mark.parametrize("name", ["neox-parallel", "llama-gqa"])
def test_greedy_generate_is_argmax_rollout(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    prompt = random_tokens(2, 5, seed=7)
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 11)
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(model.generate(prompt, max_new_tokens=6), out)  # deterministic
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("name", ["neox-parallel", "llama-gqa"])
def test_generate_left_padded_batch_matches_each_prompt_alone(name: str) -> None:
    cfg = TINY_CFGS[name]
    model = make_model(cfg)
    gen = torch.Generator().manual_seed(4)
    # The long prompt makes the batch slide past n_ctx while the short one does not, yet.
    prompts = [torch.randint(0, 128, (n,), generator=gen) for n in (cfg.n_ctx - 3, 5, 1)]
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), 99, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    out = model.generate(tokens, max_new_tokens=6, attention_mask=mask)
    assert out.shape == (3, width + 6)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=6)
        assert torch.equal(out[i, width:], alone[0, len(p) :]), i
    # Without the mask the padded rows would continue differently (the check has teeth).
    unmasked = model.generate(tokens, max_new_tokens=6)
    assert not torch.equal(unmasked[1:, width:], out[1:, width:])


def test_generate_slides_past_n_ctx_and_sampling_is_seeded() -> None:
    cfg = TINY_CFGS["neox-parallel"]
    model = make_model(cfg)
    prompt = random_tokens(1, cfg.n_ctx - 2)
    out = model.generate(prompt, max_new_tokens=5)  # crosses n_ctx: must crop, not raise
    assert out.shape == (1, cfg.n_ctx + 3)
    a = model.generate(prompt, 4, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 4, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_generate_stop_token_keeps_rows_aligned() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    prompt = random_tokens(2, 4, seed=11)
    free = model.generate(prompt, max_new_tokens=4)
    stop = int(free[0, 4])  # row 0 emits this as its first new token
    out = model.generate(prompt, max_new_tokens=4, stop_token=stop)
    # Rows do not interact, so each row is its free rollout up to its first stop, then stops.
    expected, finish = free.clone(), []
    for row in range(2):
        hits = (free[row, 4:] == stop).nonzero()
        if len(hits):
            first = 4 + int(hits[0])
            expected[row, first:] = stop
            finish.append(first + 1)
        else:
            finish.append(free.shape[1])
    assert finish[0] == 5
    assert torch.equal(out, expected[:, : max(finish)])
    assert (out[0, 4:] == stop).all()


def test_generate_several_stop_tokens_end_rows_and_pad_with_the_first() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    prompt = random_tokens(2, 4, seed=11)
    free = model.generate(prompt, max_new_tokens=4)
    # Row 0 emits the second stop token first; a row that stopped emits the first one after.
    stops = [(int(free[0, 4]) + 1) % model.cfg.d_vocab, int(free[0, 4])]
    out = model.generate(prompt, max_new_tokens=4, stop_token=stops)
    expected, finish = free.clone(), []
    for row in range(2):
        hits = torch.isin(free[row, 4:], torch.tensor(stops)).nonzero()
        if len(hits):
            first = 4 + int(hits[0])
            expected[row, first + 1 :] = stops[0]
            finish.append(first + 1)
        else:
            finish.append(free.shape[1])
    assert finish[0] == 5
    assert torch.equal(out, expected[:, : max(finish)])
    assert out.shape[1] > 5  # row 1 runs on, so row 0's padding is visible
    assert (out[0, 5:] == stops[0]).all() and int(out[0, 4]) == stops[1]
