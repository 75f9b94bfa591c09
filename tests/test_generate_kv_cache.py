"""Generation's KV cache: each step's logits must be those of a full forward on the sequence so far."""

from __future__ import annotations

import pytest
import torch

from alignlab.model import HookPoint
from alignlab.model.transformer import KVCache, LayerKV

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model, random_tokens


def _left_padded(lengths: list[int], vocab: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    width = max(lengths)
    tokens = torch.full((len(lengths), width), 3, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, width - n :] = torch.randint(0, vocab, (n,), generator=gen)
        mask[i, width - n :] = 1
    return tokens, mask


@pytest.mark.parametrize("name", list(TINY_CFGS))
@pytest.mark.parametrize("padded", [False, True])
def test_cached_step_logits_match_full_forward(name: str, padded: bool) -> None:
    model = make_model(TINY_CFGS[name])
    if padded:
        tokens, mask = _left_padded([7, 3, 1])
    else:
        tokens, mask = random_tokens(3, 7, seed=2), torch.ones(3, 7, dtype=torch.long)
    cache = KVCache([LayerKV() for _ in model.blocks])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = model._forward_cached(tokens, mask.bool(), cache)
        for _ in range(5):
            full = model(tokens, attention_mask=mask)
            real = mask.bool()  # padding positions' logits are never used
            # One query row over cached keys vs the whole causal matrix: the same sums in
            # another order, so rounding only (FORWARD_ULPS); a wrong position or mask is O(1).
            assert_close_rel(logits[real], full[real], ulps=FORWARD_ULPS, what="cached step logits")
            new = torch.randint(0, 128, (3, 1), generator=gen)
            tokens = torch.cat((tokens, new), dim=1)
            mask = torch.cat((mask, torch.ones_like(new)), dim=1)
            logits = torch.cat(
                (logits, model._forward_cached(new, torch.ones_like(new, dtype=torch.bool), cache)), 1
            )
    kv_heads = TINY_CFGS[name].kv_heads
    assert cache.layers[0].k is not None and cache.layers[0].k.shape[:3] == (3, kv_heads, tokens.shape[1])


@pytest.mark.parametrize("name", ["neox-sequential", "llama-gqa"])
def test_cached_and_uncached_generation_agree(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens, mask = _left_padded([9, 4, 6])
    cached = model.generate(tokens, max_new_tokens=8, attention_mask=mask)
    uncached = model.generate(tokens, max_new_tokens=8, attention_mask=mask, kv_cache=False)
    assert torch.equal(cached, uncached)
    sample = {"temperature": 1.0, "attention_mask": mask}
    a = model.generate(tokens, 8, generator=torch.Generator().manual_seed(3), **sample)
    b = model.generate(tokens, 8, generator=torch.Generator().manual_seed(3), kv_cache=False, **sample)
    assert torch.equal(a, b)


def test_hooks_see_the_prompt_then_one_position_per_step() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    prompt = random_tokens(2, 6, seed=1)
    seen: list[tuple[int, ...]] = []

    def record(t: torch.Tensor, hook: HookPoint) -> None:
        seen.append(tuple(t.shape))

    with model.hooks([("blocks.1.attn.hook_pattern", record)]):
        model.generate(prompt, max_new_tokens=3)
        assert seen == [(2, 2, 6, 6), (2, 2, 1, 7), (2, 2, 1, 8)]
        seen.clear()
        model.generate(prompt, max_new_tokens=3, kv_cache=False)
        assert seen == [(2, 2, 6, 6), (2, 2, 7, 7), (2, 2, 8, 8)]


def test_a_hook_edit_persists_in_the_cache() -> None:
    """An edit to keys at prefill stays in the cache, as it would in the rerun sequence."""
    model = make_model(TINY_CFGS["neox-parallel"])
    prompt = random_tokens(1, 6, seed=9)

    def flip(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return -t

    plain = model.generate(prompt, max_new_tokens=6)
    with model.hooks([("blocks.0.attn.hook_rot_k", flip)]):
        cached = model.generate(prompt, max_new_tokens=6)
        uncached = model.generate(prompt, max_new_tokens=6, kv_cache=False)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)
