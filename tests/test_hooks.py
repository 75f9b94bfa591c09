"""Hook points: names, cache shapes and semantics, editing with run_with_hooks, cleanup."""

from __future__ import annotations

import pytest
import torch

from alignlab.model import ActivationCache, HookPoint, Transformer, _native

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model, max_abs_diff, random_tokens

# Written out literally: renaming or reordering a hook point breaks downstream analysis code.
NEOX_PARALLEL_2L_HOOKS = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_rot_q",
    "blocks.0.attn.hook_rot_k",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_pre",
    "blocks.1.ln1.hook_normalized",
    "blocks.1.attn.hook_q",
    "blocks.1.attn.hook_k",
    "blocks.1.attn.hook_v",
    "blocks.1.attn.hook_rot_q",
    "blocks.1.attn.hook_rot_k",
    "blocks.1.attn.hook_attn_scores",
    "blocks.1.attn.hook_pattern",
    "blocks.1.attn.hook_z",
    "blocks.1.hook_attn_out",
    "blocks.1.ln2.hook_normalized",
    "blocks.1.mlp.hook_pre",
    "blocks.1.mlp.hook_post",
    "blocks.1.hook_mlp_out",
    "blocks.1.hook_resid_post",
    "ln_final.hook_normalized",
]

B, P = 2, 10


def _with_resid_mid(names: list[str]) -> list[str]:
    out = []
    for n in names:
        out.append(n)
        if n.endswith(".hook_attn_out"):
            out.append(n.replace("hook_attn_out", "hook_resid_mid"))
    return out


def _no_hooks_attached(model: Transformer) -> bool:
    return all(not hp._forward_hooks for hp in model.hook_dict.values())


def _magnitude(*terms: torch.Tensor) -> float:
    """max of sum |term|: the scale of a sum's rounding error (its terms may cancel)."""
    return float(torch.stack([t.abs() for t in terms]).sum(0).max())


def test_hook_names_neox_parallel_exact() -> None:
    model = Transformer(TINY_CFGS["neox-parallel"])
    assert model.hook_names() == NEOX_PARALLEL_2L_HOOKS
    # Each name is the module path of a HookPoint whose .name agrees.
    modules = dict(model.named_modules())
    for name in NEOX_PARALLEL_2L_HOOKS:
        assert isinstance(modules[name], HookPoint)
        assert modules[name].name == name


@pytest.mark.parametrize("name", ["neox-sequential", "llama-gqa", "llama-mha"])
def test_hook_names_sequential_add_resid_mid(name: str) -> None:
    model = Transformer(TINY_CFGS[name])
    assert model.hook_names() == _with_resid_mid(NEOX_PARALLEL_2L_HOOKS)
    assert "blocks.1.hook_resid_mid" in model.hook_names()


@pytest.mark.parametrize("variant", ["parallel", "sequential", "llama"])
def test_hook_names_attn_only_have_no_mlp(variant: str) -> None:
    cfg = TINY_CFGS["neox-attn-only"]
    if variant == "sequential":
        cfg = cfg.replace(parallel_attn=False)
    elif variant == "llama":
        cfg = cfg.replace(arch="llama")
    model = make_model(cfg)
    names = model.hook_names()
    mlp_hooks = (".mlp.", "hook_mlp_out", ".ln2.")
    expected = [n for n in NEOX_PARALLEL_2L_HOOKS if not any(m in n for m in mlp_hooks)]
    # No resid_mid either: with no MLP it would equal resid_post.
    assert names == expected
    assert not any("mlp" in n or "resid_mid" in n for n in names)
    _, cache = model.run_with_cache(random_tokens(B, P))
    assert set(cache) == set(names)  # every hook point is on the forward path


@pytest.mark.parametrize("name", ["neox-parallel", "llama-gqa"])
def test_run_with_cache_shapes(name: str) -> None:
    cfg = TINY_CFGS[name]
    model = make_model(cfg)
    _, cache = model.run_with_cache(random_tokens(B, P))
    assert isinstance(cache, ActivationCache)
    assert set(cache) == set(model.hook_names())
    h, kv, dh, d = cfg.n_heads, cfg.kv_heads, cfg.d_head, cfg.d_model
    for i in range(cfg.n_layers):
        a = f"blocks.{i}.attn."
        assert cache[a + "hook_q"].shape == (B, P, h, dh)
        assert cache[a + "hook_rot_q"].shape == (B, P, h, dh)
        assert cache[a + "hook_k"].shape == (B, P, kv, dh)
        assert cache[a + "hook_rot_k"].shape == (B, P, kv, dh)
        assert cache[a + "hook_v"].shape == (B, P, kv, dh)
        assert cache[a + "hook_z"].shape == (B, P, h, dh)
        assert cache[a + "hook_attn_scores"].shape == (B, h, P, P)
        assert cache[a + "hook_pattern"].shape == (B, h, P, P)
        for r in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"):
            assert cache[f"blocks.{i}.{r}"].shape == (B, P, d)
        assert cache[f"blocks.{i}.ln1.hook_normalized"].shape == (B, P, d)
        assert cache[f"blocks.{i}.mlp.hook_pre"].shape == (B, P, cfg.mlp_width)
        assert cache[f"blocks.{i}.mlp.hook_post"].shape == (B, P, cfg.mlp_width)
    assert cache["hook_embed"].shape == (B, P, d)
    assert cache.stack("hook_resid_post").shape == (cfg.n_layers, B, P, d)
    with pytest.raises(KeyError, match="hook_nonexistent"):
        cache.stack("hook_nonexistent")


@pytest.mark.parametrize("name", ["neox-parallel", "neox-sequential", "llama-gqa"])
def test_pattern_is_causal_and_normalised(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    _, cache = model.run_with_cache(random_tokens(B, P), names_filter=lambda n: "attn." in n)
    upper = torch.ones(P, P, dtype=torch.bool).triu(1)
    for i in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]
        # Softmax's sum of <= P exps, its division, and this sum of P probabilities: first order
        # <= (P - 1/2) eps, plus one rounding if it multiplies by 1/sum.
        ones = torch.ones(B, model.cfg.n_heads, P)
        assert_close_rel(pattern.sum(-1), ones, ulps=P + 1, what="pattern row sums")
        assert (pattern >= 0).all()
        assert (pattern[..., upper] == 0).all()  # exactly zero above the diagonal
        assert (pattern[..., ~upper] > 0).all()  # every allowed key gets some weight
        scores = cache[f"blocks.{i}.attn.hook_attn_scores"]
        assert torch.isneginf(scores[..., upper]).all()
        assert torch.isfinite(scores[..., ~upper]).all()
        # The first query can only see itself.
        assert (pattern[:, :, 0, 0] == 1).all()


@pytest.mark.parametrize("name", ["neox-parallel", "neox-sequential", "llama-gqa"])
def test_names_filter_forms(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens = random_tokens(B, P)
    _, c1 = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    assert list(c1) == ["blocks.1.hook_resid_post"]
    # A string is one exact name (TransformerLens semantics), not a substring pattern.
    _, c_sub = model.run_with_cache(tokens, names_filter="hook_resid_post")
    assert len(c_sub) == 0
    wanted = ["blocks.0.attn.hook_pattern", "hook_embed", "ln_final.hook_normalized"]
    _, c2 = model.run_with_cache(tokens, names_filter=wanted)
    assert set(c2) == set(wanted)
    _, c3 = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    assert set(c3) == {f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)}
    _, c4 = model.run_with_cache(tokens, names_filter=[])
    assert len(c4) == 0
    assert _no_hooks_attached(model)


@pytest.mark.parametrize("name", list(TINY_CFGS))
def test_caching_does_not_change_logits(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens = random_tokens(B, P, seed=5)
    plain = model(tokens)  # SDPA path
    cached_logits, cache = model.run_with_cache(tokens)  # explicit-attention path
    assert "blocks.0.attn.hook_pattern" in cache
    assert_close_rel(cached_logits, plain, ulps=FORWARD_ULPS, what="explicit vs SDPA attention")
    assert cached_logits.abs().max() > 0.1  # not comparing two near-zero tensors
    # The cache is detached by default; detach=False keeps the graph.
    assert not cache["blocks.0.hook_resid_post"].requires_grad
    _, live = model.run_with_cache(tokens, names_filter="hook_embed", detach=False)
    assert live["hook_embed"].requires_grad


def test_zero_ablation_changes_logits_and_matches_direct_path() -> None:
    cfg = TINY_CFGS["neox-parallel"]
    model = make_model(cfg)
    tokens = random_tokens(B, P)
    clean = model(tokens)
    last = cfg.n_layers - 1

    def zero(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return torch.zeros_like(t)

    some = [(f"blocks.{last}.hook_attn_out", zero)] + [
        (f"blocks.{i}.hook_mlp_out", zero) for i in range(cfg.n_layers)
    ]
    ablated = model.run_with_hooks(tokens, fwd_hooks=some)
    assert max_abs_diff(ablated, clean) > 1e-2

    # Ablating every attention and MLP output leaves only the direct path embed -> unembed.
    everything = [(lambda n: n.endswith(("hook_attn_out", "hook_mlp_out")), zero)]
    direct = model.run_with_hooks(tokens, fwd_hooks=everything)
    with torch.no_grad():
        expected = model.unembed(model.ln_final(model.embed(tokens)))
    assert_close_rel(direct, expected, ulps=FORWARD_ULPS, what="direct path")
    # Hooks are gone afterwards.
    assert _no_hooks_attached(model)
    assert max_abs_diff(model(tokens), clean) == 0.0


@pytest.mark.parametrize("name", ["neox-parallel", "llama-gqa"])
def test_zeroed_residual_makes_logits_token_independent(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    a, b = random_tokens(B, P, seed=1), random_tokens(B, P, seed=2)
    assert max_abs_diff(model(a), model(b)) > 1e-2  # different inputs normally differ

    def kill(resid: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return resid * 0

    hooks = [("blocks.0.hook_resid_pre", kill)]
    la = model.run_with_hooks(a, fwd_hooks=hooks)
    lb = model.run_with_hooks(b, fwd_hooks=hooks)
    assert_close_rel(la, lb, ulps=FORWARD_ULPS, what="logits from a zeroed residual")


def test_hook_returning_none_only_observes() -> None:
    model = make_model(TINY_CFGS["llama-gqa"])
    tokens = random_tokens(B, P)
    seen: list[tuple[str, tuple[int, ...]]] = []

    def observe(t: torch.Tensor, hook: HookPoint) -> None:
        seen.append((hook.name, tuple(t.shape)))

    out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", observe)])
    assert seen == [("blocks.1.hook_resid_mid", (B, P, 32))]
    assert max_abs_diff(out, model(tokens)) == 0.0


def test_editing_pattern_changes_output() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(B, P)
    clean = model(tokens)

    def uniform(pattern: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        allowed = torch.ones(P, P).tril()
        return (allowed / allowed.sum(-1, keepdim=True)).expand_as(pattern)

    edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert max_abs_diff(edited, clean) > 1e-3


def test_residual_decomposition_parallel() -> None:
    cfg = TINY_CFGS["neox-parallel"]
    model = make_model(cfg)
    _, cache = model.run_with_cache(random_tokens(B, P))
    assert max_abs_diff(cache["hook_embed"], cache["blocks.0.hook_resid_pre"]) == 0.0
    for i in range(cfg.n_layers):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{i}.hook_attn_out"], cache[f"blocks.{i}.hook_mlp_out"]
        # Two additions on each side, in either order: <= 2 roundings of eps/2 of the terms' size each.
        sum3 = pre + attn + mlp
        assert_close_rel(post, sum3, ulps=2, what="resid_post", scale=_magnitude(pre, attn, mlp))
        assert attn.abs().max() > 1e-2 and mlp.abs().max() > 1e-2  # both terms are real
        # Parallel: the MLP reads the block input (through ln2), not pre + attn.
        with torch.no_grad():
            mlp_of_pre = model.blocks[i].mlp(model.blocks[i].ln2(pre))
            assert_close_rel(mlp_of_pre, mlp, ulps=FORWARD_ULPS, what="mlp(ln2(resid_pre))")
        if i + 1 < cfg.n_layers:
            assert max_abs_diff(cache[f"blocks.{i + 1}.hook_resid_pre"], post) == 0.0


@pytest.mark.parametrize("name", ["neox-sequential", "llama-gqa"])
def test_residual_decomposition_sequential(name: str) -> None:
    cfg = TINY_CFGS[name]
    model = make_model(cfg)
    _, cache = model.run_with_cache(random_tokens(B, P))
    for i in range(cfg.n_layers):
        pre, mid = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_mid"]
        post = cache[f"blocks.{i}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{i}.hook_attn_out"], cache[f"blocks.{i}.hook_mlp_out"]
        # One addition: identical if the model adds the same tensors, else one rounding each side.
        assert_close_rel(mid, pre + attn, ulps=1, what="resid_mid", scale=_magnitude(pre, attn))
        assert_close_rel(post, mid + mlp, ulps=1, what="resid_post", scale=_magnitude(mid, mlp))
        with torch.no_grad():
            mlp_of_mid = model.blocks[i].mlp(model.blocks[i].ln2(mid))
            assert_close_rel(mlp_of_mid, mlp, ulps=FORWARD_ULPS, what="mlp(ln2(resid_mid))")


def test_residual_decomposition_attn_only() -> None:
    model = make_model(TINY_CFGS["neox-attn-only"])
    _, cache = model.run_with_cache(random_tokens(B, P))
    for i in range(2):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn = cache[f"blocks.{i}.hook_attn_out"]
        assert_close_rel(post, pre + attn, ulps=1, what="resid_post", scale=_magnitude(pre, attn))


def test_hooks_removed_even_if_hook_raises() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(B, P)
    clean = model(tokens)

    def boom(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        raise RuntimeError("hook exploded")

    def double(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return 2 * t

    hooks = [("hook_embed", double), ("blocks.1.hook_resid_post", boom)]
    with pytest.raises(RuntimeError, match="hook exploded"):
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert _no_hooks_attached(model)
    assert max_abs_diff(model(tokens), clean) == 0.0
    # run_with_cache after a failure caches normally and returns clean logits.
    logits, cache = model.run_with_cache(tokens, names_filter="hook_embed")
    assert_close_rel(logits, clean, ulps=FORWARD_ULPS, what="logits after a failed hook")
    assert list(cache) == ["hook_embed"]
    assert _no_hooks_attached(model)


def test_unknown_hook_name_is_key_error_and_leaves_no_hooks() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(B, P)

    def double(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return 2 * t

    with pytest.raises(KeyError, match=r"hook_names\(\)") as info:
        hooks = [("hook_embed", double), ("blocks.0.hook_resid_typo", double)]
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert "blocks.0.hook_resid_typo" in str(info.value)
    assert _no_hooks_attached(model)  # the valid hook attached first was removed too


def test_reset_hooks_and_context_manager() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(B, P)
    clean = model(tokens)

    def double(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return 2 * t

    with model.hooks([("hook_embed", double)]):
        assert model.hook_dict["hook_embed"].active
        assert max_abs_diff(model(tokens), clean) > 1e-3
    assert _no_hooks_attached(model)
    model.hook_dict["hook_embed"].add_hook(double)  # a permanent hook...
    assert max_abs_diff(model(tokens), clean) > 1e-3
    model.reset_hooks()  # ...is removed by reset_hooks
    assert _no_hooks_attached(model)
    assert max_abs_diff(model(tokens), clean) == 0.0


# Inference (no_grad) takes its own attention prologue: one head-major copy of q, k, v and an
# in-place rotation of q and k together. It must give the training path's values bit for bit,
# and must fall back to the general path when a hook replaces q, k or v. (The fused attention
# kernel, off here, rounds the pattern differently: tests/test_native_attention.py.)


@pytest.mark.parametrize("name", list(TINY_CFGS))
def test_no_grad_run_with_cache_is_bit_identical(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens = random_tokens(B, P, seed=7)
    mask = torch.ones(B, P, dtype=torch.long)
    mask[0, :3] = 0  # left padding exercises the per-row positions of the rotary tables
    for kwargs in ({}, {"attention_mask": mask}):
        logits_g, cache_g = model.run_with_cache(tokens, **kwargs)
        with torch.no_grad(), _native.disabled():
            logits_n, cache_n = model.run_with_cache(tokens, **kwargs)
            plain_n = model(tokens, **kwargs)
        assert torch.equal(logits_g, logits_n)
        assert torch.equal(plain_n, model(tokens, **kwargs))
        assert set(cache_g) == set(cache_n)
        for k in cache_g:
            assert cache_g[k].shape == cache_n[k].shape, k
            assert torch.equal(cache_g[k], cache_n[k]), k


@pytest.mark.parametrize("hook", ["hook_q", "hook_k", "hook_v"])
def test_no_grad_honours_edits_to_q_k_v(hook: str) -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(B, P, seed=8)

    def replace(t: torch.Tensor, _hook: HookPoint) -> torch.Tensor:
        return t * -2.0

    def in_place(t: torch.Tensor, _hook: HookPoint) -> None:
        t.mul_(-2.0)  # allowed without autograd only: q, k, v are views of one matmul output

    name = f"blocks.0.attn.{hook}"
    expected = model.run_with_hooks(tokens, fwd_hooks=[(name, replace)])
    with torch.no_grad():
        for edit in (replace, in_place):
            assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=[(name, edit)]), expected)
    assert max_abs_diff(expected, model(tokens)) > 1e-3  # the edit did take effect


@pytest.mark.parametrize("name", ["neox-parallel", "neox-sequential", "llama-gqa"])
def test_rotary_no_grad_matches_training_formula(name: str) -> None:
    rot = Transformer(TINY_CFGS[name]).blocks[0].attn.rotary
    cfg = TINY_CFGS[name]
    x = torch.randn(3, 11, cfg.n_heads, cfg.d_head, generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([[0] * 4 + list(range(7)), list(range(11)), list(range(3, 14))])
    for pos in (None, positions):
        expected = rot(x, pos)
        with torch.no_grad():
            got = rot(x, pos)
        assert torch.equal(got, expected)
        assert max_abs_diff(got, x) > 1e-3  # something was rotated
