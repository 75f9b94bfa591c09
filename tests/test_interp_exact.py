"""Exact identities of the patching / attribution tools, on random (untrained) tiny models."""

from __future__ import annotations

import pytest
import torch

from alignlab.interp import (
    ablate_heads,
    ablate_hook,
    direct_logit_attribution,
    logit_diff_metric,
    logit_lens,
    patch_heads,
    patch_hook,
    patch_mlps,
    patch_residual,
)
from alignlab.interp.patching import Metric
from alignlab.model import ModelConfig, Transformer

from conftest import FORWARD_ULPS, assert_close_rel

torch.set_num_threads(1)

CFGS = {
    "neox": ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=32, init_std=0.2),
    "neox-attn-only": ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=32, attn_only=True, init_std=0.2),
    "llama": ModelConfig(
        arch="llama", d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, n_ctx=32, init_std=0.2
    ),
}


def _model(name: str) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(CFGS[name])
    m.init_weights(seed=1)
    with torch.no_grad():  # move biases/gains off their init so no term vanishes by accident
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape) * 0.3)
    return m.eval()


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 128, (4, 10), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, 128, (4,), generator=gen)
    return clean, corrupted


def _metric(clean: torch.Tensor) -> object:
    return logit_diff_metric(-1, clean[:, 5], clean[:, 6])


def _fraction_scale(
    model: Transformer, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric
) -> float:
    """Rounding scale of a recovered fraction ``(m - m_corrupted) / (m_clean - m_corrupted)``:
    the metrics are float32 logit differences, off by rounding relative to max |logit|, which
    the division magnifies by 1 / |m_clean - m_corrupted|."""
    with torch.no_grad():
        a, b = model(clean), model(corrupted)
        gap = abs(float(metric(a) - metric(b)))
    return float(torch.maximum(a.abs().max(), b.abs().max())) / gap


@pytest.mark.parametrize("name", list(CFGS))
def test_dla_sums_to_logit(name: str) -> None:
    model = _model(name)
    tokens, _ = _pair()
    attr = direct_logit_attribution(model, tokens, tokens[:, 3], pos=-1)
    total = attr.values.sum(0) + attr.norm_bias
    # The components are projected one by one and summed, the logit in one forward: rounding
    # only, of the size of the summands (they cancel), within a forward's budget.
    summands = float((attr.values.abs().sum(0) + attr.norm_bias.abs()).max())
    assert_close_rel(total, attr.logit, ulps=FORWARD_ULPS, what="DLA sum", scale=summands)
    n_heads = sum(lbl[0] == "L" and "H" in lbl for lbl in attr.labels)
    assert n_heads == model.cfg.n_layers * model.cfg.n_heads


@pytest.mark.parametrize("name", list(CFGS))
def test_logit_lens_last_layer_is_the_model(name: str) -> None:
    model = _model(name)
    tokens, _ = _pair()
    lens = logit_lens(model, tokens)
    assert lens.shape == (model.cfg.n_layers + 1, *tokens.shape, model.cfg.d_vocab)
    assert_close_rel(lens[-1], model(tokens), ulps=FORWARD_ULPS, what="last lens layer")


@pytest.mark.parametrize("name", ["neox", "llama"])
def test_patching_endpoints(name: str) -> None:
    model = _model(name)
    clean, corrupted = _pair()
    metric = _metric(clean)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    # The whole final residual from the clean run *is* the clean run: 100% recovered.
    # Endpoints up to a forward's rounding (conftest.FORWARD_ULPS) of the fraction's scale.
    frac = {"ulps": FORWARD_ULPS, "scale": _fraction_scale(model, clean, corrupted, metric)}
    f32 = torch.float32
    assert_close_rel(patch_hook(model, clean, corrupted, metric, last), 1.0, what="all", dtype=f32, **frac)
    # Patching positions before the corruption changes nothing (causal mask): 0%.
    none = patch_hook(model, clean, corrupted, metric, last, (slice(0, 2),))
    assert_close_rel(none, 0.0, what="positions before the corruption", dtype=f32, **frac)
    grid = patch_residual(model, clean, corrupted, metric)
    assert grid.shape == (model.cfg.n_layers, clean.shape[1])
    # Layer 0's resid_pre at the corrupted position carries everything (only the embedding differs).
    assert_close_rel(grid[0, 2], 1.0, what="layer 0, corrupted position", dtype=f32, **frac)
    assert_close_rel(grid[0, [0, 1, 3, 4]], 0.0, what="layer 0, other positions", dtype=f32, **frac)
    heads = patch_heads(model, clean, corrupted, metric)
    assert heads.shape == (model.cfg.n_layers, model.cfg.n_heads)
    mlps = patch_mlps(model, clean, corrupted, metric)
    assert mlps.shape == (model.cfg.n_layers,)


def test_ablations() -> None:
    model = _model("neox")
    tokens, _ = _pair()
    metric = _metric(tokens)
    for kind in ("zero", "mean", "resample"):
        grid = ablate_heads(model, tokens, metric, kind=kind)  # type: ignore[arg-type]
        assert grid.shape == (2, 4) and torch.isfinite(grid).all()
    # Mean-ablating over a batch of identical rows is a no-op; resampling from them too.
    same = tokens[:1].expand(4, -1)
    m2 = logit_diff_metric(-1, same[:, 5], same[:, 6])
    # Changes of a logit difference: a forward's rounding (conftest.FORWARD_ULPS) of the logits.
    with torch.no_grad():
        noop = {"ulps": FORWARD_ULPS, "scale": float(model(same).abs().max()), "dtype": torch.float32}
    assert_close_rel(ablate_heads(model, same, m2, kind="mean"), 0.0, what="mean ablation", **noop)
    resample = ablate_hook(model, same, m2, "blocks.0.hook_attn_out", kind="resample")
    assert_close_rel(resample, 0.0, what="resample ablation", **noop)
    assert abs(ablate_hook(model, tokens, metric, "blocks.0.hook_attn_out", kind="zero")) > 1e-3
