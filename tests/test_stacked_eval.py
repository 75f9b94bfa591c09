"""Stacked evaluation, generation and caching: each member computes what its own model does.

A stacked member runs `Transformer`'s maths in another summation order (batched matmuls over the
member axis, the layer norm's affine apart from its normalisation), so values agree to float32
rounding: FORWARD_ULPS of the quantity's scale, the budget conftest justifies for any reordered
forward of these tiny models. Members are distinct seeds of perturbed models, so a row taken from
the wrong member, a wrong layout, position or mask moves values by O(scale), ~10^7 times that.
"""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.model import Transformer
from alignlab.train import StackedModel, TrainConfig, evaluate, evaluate_stacked

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model, random_tokens

ARCHS = ["neox-parallel", "llama-gqa"]  # GPT-NeoX (parallel, biases, partial rotary), Llama (GQA)


def _models(arch: str, n: int = 3, n_ctx: int = 32) -> list[Transformer]:
    cfg = TINY_CFGS[arch].replace(n_ctx=n_ctx)
    return [make_model(cfg, seed=s) for s in range(n)]


def _left_padded(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    tokens = torch.full((len(lengths), width), 3, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, width - n :] = torch.randint(0, 128, (n,), generator=gen)
        mask[i, width - n :] = 1
    return tokens, mask


def test_hook_names_are_the_transformers() -> None:
    for arch, cfg in TINY_CFGS.items():
        stack = StackedModel.of([make_model(cfg, seed=s) for s in range(2)])
        assert stack.hook_names() == Transformer(cfg).hook_names(), arch


@pytest.mark.parametrize("arch", sorted(TINY_CFGS))
@pytest.mark.parametrize("shared", [True, False])
def test_logits_and_loss_match_each_member(arch: str, shared: bool) -> None:
    models = _models(arch)
    stack = StackedModel.of(models)
    tokens, mask = _left_padded([12, 5, 9, 12], seed=1)
    loss_mask = mask.bool() & (torch.arange(12) >= 8)  # the last 4 real tokens: completions
    if shared:  # every member on the same batch (a dose curve's measurement)
        per = [(tokens, mask, loss_mask)] * 3
        logits = stack.logits(tokens, mask)
        loss = stack.loss(tokens, loss_mask, mask)
    else:  # each member on its own batch (seeds with their own data)
        per = [(tokens.roll(m, 0), mask.roll(m, 0), loss_mask.roll(m, 0)) for m in range(3)]
        logits = stack.logits(*(torch.stack([p[k] for p in per]) for k in (0, 1)))
        loss = stack.loss(*(torch.stack([p[k] for p in per]) for k in (0, 2, 1)))
    assert logits.shape == (3, 4, 12, 128) and loss.shape == (3,)
    for m, (model, (t, a, lm)) in enumerate(zip(models, per, strict=True)):
        with torch.no_grad():
            want = model(t, attention_mask=a)
            want_loss = model(t, return_type="loss", loss_mask=lm, attention_mask=a)
        real = a.bool()  # padding positions' logits are never used
        assert_close_rel(logits[m][real], want[real], ulps=FORWARD_ULPS, what=f"{arch} logits {m}")
        assert_close_rel(loss[m], want_loss, ulps=FORWARD_ULPS, what=f"{arch} loss {m}")


def _close_scores(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Attention scores: -inf exactly where the mask forbids a key, the rest to rounding."""
    blocked = want == float("-inf")
    assert torch.equal(got == float("-inf"), blocked), what
    assert_close_rel(
        got.masked_fill(blocked, 0.0), want.masked_fill(blocked, 0.0), ulps=FORWARD_ULPS, what=what
    )


@pytest.mark.parametrize("arch", sorted(TINY_CFGS))
@pytest.mark.parametrize("padded", [False, True])
def test_run_with_cache_matches_each_member(arch: str, padded: bool) -> None:
    models = _models(arch)
    stack = StackedModel.of(models)
    if padded:
        tokens, mask = _left_padded([10, 4, 7], seed=2)
    else:
        tokens, mask = random_tokens(3, 10, seed=2), None
    logits, cache = stack.run_with_cache(tokens, attention_mask=mask)
    assert sorted(cache) == sorted(stack.hook_names())
    for m, model in enumerate(models):
        want_logits, want = model.run_with_cache(tokens, attention_mask=mask)
        real = torch.ones(3, 10, dtype=torch.bool) if mask is None else mask.bool()
        assert_close_rel(logits[m][real], want_logits[real], ulps=FORWARD_ULPS, what=f"{arch} logits {m}")
        for name, act in want.items():
            got = cache[name][m]
            assert got.shape == act.shape, (name, got.shape, act.shape)
            if name.endswith("hook_attn_scores"):
                _close_scores(got, act, f"{arch} {name} {m}")
            else:
                # Each activation to rounding of its own scale (max |activation|).
                assert_close_rel(got, act, ulps=FORWARD_ULPS, what=f"{arch} {name} {m}")
    _, some = stack.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"], attention_mask=mask)
    assert list(some) == ["blocks.1.hook_resid_post"] and some["blocks.1.hook_resid_post"].shape == (
        3,
        3,
        10,
        32,
    )
    with pytest.raises(ConfigError, match="no hook point named"):
        stack.run_with_cache(tokens, names_filter="blocks.9.hook_resid_post")


def _greedy_margins(
    model: Transformer, out: torch.Tensor, mask: torch.Tensor, p: int, stops: list[int]
) -> torch.Tensor:
    """Top-1 minus top-2 logit where ``model`` chose each new token (until its row stopped), from
    the last ``n_ctx`` tokens it saw at that step."""
    full_mask = torch.cat((mask, torch.ones(out.shape[0], out.shape[1] - p, dtype=mask.dtype)), dim=1)
    margins = []
    with torch.no_grad():
        for end in range(p, out.shape[1]):
            lo = max(0, end - model.cfg.n_ctx)
            top = model(out[:, lo:end], attention_mask=full_mask[:, lo:end])[:, -1].topk(2, dim=-1).values
            margins.append(top[:, 0] - top[:, 1])
    margin = torch.stack(margins, dim=1)
    new = out[:, p:]
    # A row that emitted the stop token pads with it afterwards: those picks are not argmaxes.
    hit = torch.isin(new, torch.tensor(stops)).long()
    stopped_before = hit.cumsum(1) - hit > 0
    return margin[~stopped_before]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("cached", [True, False])
def test_greedy_generation_matches_each_member(arch: str, shared: bool, cached: bool) -> None:
    # n_ctx 32 holds prompt + new tokens (the KV-cached path); n_ctx 16 does not, so generation
    # slides a window without a cache, as `Transformer.generate` does.
    models = _models(arch, n_ctx=32 if cached else 16)
    stack = StackedModel.of(models)
    tokens, mask = _left_padded([9, 3, 6, 9], seed=4)
    eos, new = 7, 12
    if shared:
        prompts = [(tokens, mask)] * 3
        out = stack.generate(tokens, new, stop_token=[eos, 11], attention_mask=mask)
    else:
        prompts = [(tokens.roll(m, 0), mask.roll(m, 0)) for m in range(3)]
        out = stack.generate(
            torch.stack([t for t, _ in prompts]),
            new,
            stop_token=[eos, 11],
            attention_mask=torch.stack([a for _, a in prompts]),
        )
    for m, (model, (t, a)) in enumerate(zip(models, prompts, strict=True)):
        want = model.generate(t, new, stop_token=[eos, 11], attention_mask=a)
        # Exact equality is owed only where the reference's top two logits are further apart
        # than the two runs' rounding can move them (FORWARD_ULPS eps of max|logit| each).
        with torch.no_grad():
            scale = model(want[:, -model.cfg.n_ctx :]).abs().max().item()
        margins = _greedy_margins(model, want, a, t.shape[1], [eos, 11])
        assert margins.min().item() > 2 * FORWARD_ULPS * torch.finfo(torch.float32).eps * scale, "near-tie"
        assert out.shape[1:] == want.shape, (out.shape, want.shape)
        assert torch.equal(out[m], want), (arch, m)


def test_generation_stops_only_when_every_member_stopped() -> None:
    models = _models("neox-parallel")
    stack = StackedModel.of(models)
    tokens, mask = _left_padded([5, 8], seed=3)
    out = stack.generate(tokens, 6, attention_mask=mask)
    firsts = out[:, :, 8]  # each member's first new token; make one of them the stop token
    stop = int(firsts[0, 0])
    out = stack.generate(tokens, 6, stop_token=stop, attention_mask=mask)
    want = [m.generate(tokens, 6, stop_token=stop, attention_mask=mask) for m in models]
    assert out.shape[-1] == max(w.shape[-1] for w in want)
    for m, w in enumerate(want):
        # A member that stopped early keeps emitting the stop token while the others run on.
        assert torch.equal(out[m, :, : w.shape[1]], w)
        assert bool((out[m, :, w.shape[1] :] == stop).all())
    assert stack.generate(tokens, 0).shape == (3, 2, 8)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        stack.generate(tokens, -1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", ["chat", "induction"])
def test_evaluate_stacked_matches_evaluate(arch: str, task: str) -> None:
    models = _models(arch, n_ctx=64)
    base = TrainConfig(model=models[0].cfg, task=task, batch_size=4, seq_len=48 if task == "chat" else 32)
    cfgs = [base.replace(seed=s) for s in range(3)]  # each member its own held-out batches
    got = evaluate_stacked(models, cfgs)
    for m, (model, cfg) in enumerate(zip(models, cfgs, strict=True)):
        want = evaluate(model, cfg, torch.device("cpu"))
        assert got[m].keys() == want.keys()
        for k, v in want.items():
            # Means of per-token losses; icl_improvement is a difference of two such means, so
            # its scale is theirs (the summands'), not its own.
            scale = (
                max(abs(want[x]) for x in want if x != "icl_improvement") if k == "icl_improvement" else None
            )
            assert_close_rel(
                got[m][k],
                v,
                ulps=FORWARD_ULPS,
                what=f"{arch} {task} {k} {m}",
                scale=scale,
                dtype=torch.float32,
            )
    assert len({round(g["eval_loss"], 6) for g in got}) == 3  # the members really differ


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        StackedModel.of([])
    a = make_model(TINY_CFGS["neox-parallel"])
    b = make_model(TINY_CFGS["llama-gqa"])
    with pytest.raises(ConfigError, match="one shape"):
        StackedModel.of([a, b])
    stack = StackedModel.of([a, a.clone()])
    with pytest.raises(ConfigError, match=r"\[2, batch, pos\]"):
        stack.logits(torch.zeros(3, 2, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="n_ctx"):
        stack.logits(random_tokens(1, 33))
    with pytest.raises(ConfigError, match="evaluate_stacked"):
        evaluate_stacked([a], [])
    with pytest.raises(ConfigError, match="no target"):
        stack.loss(random_tokens(2, 8), torch.zeros(2, 8, dtype=torch.bool))
