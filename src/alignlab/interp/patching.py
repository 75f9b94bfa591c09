"""Activation patching and ablations over clean/corrupted prompt pairs.

Activation patching (Meng et al. 2022 "causal tracing"; Heimersheim & Nanda 2024, "How to use and
interpret activation patching"): run the *corrupted* prompt, overwrite one activation with its
value from the *clean* run, and measure how much of the clean behaviour returns. Results are
normalised so 1 = the clean metric, 0 = the corrupted metric:

    (metric(patched) - metric(corrupted)) / (metric(clean) - metric(corrupted))

Hook functions use alignlab's TransformerLens-compatible hook API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from alignlab.model import Transformer
from alignlab.model.hooks import HookPoint

Metric = Callable[[Float[Tensor, "b p v"]], Float[Tensor, ""]]
AblationKind = Literal["zero", "mean", "resample"]


def logit_diff_metric(pos: int, correct: Int[Tensor, " b"], wrong: Int[Tensor, " b"]) -> Metric:
    """Mean ``logit[correct] - logit[wrong]`` at position ``pos`` (the standard patching metric)."""

    def metric(logits: Float[Tensor, "b p v"]) -> Float[Tensor, ""]:
        last = logits[:, pos]
        rows = torch.arange(last.shape[0])
        return (last[rows, correct] - last[rows, wrong]).mean()

    return metric


def target_logprob_metric(targets: Int[Tensor, "b p"], positions: slice) -> Metric:
    """Mean log-probability of ``targets[:, t + 1]`` predicted at positions ``t`` in ``positions``."""

    def metric(logits: Float[Tensor, "b p v"]) -> Float[Tensor, ""]:
        logp = logits[:, positions].log_softmax(-1)
        tgt = targets[:, positions.start + 1 : positions.stop + 1]
        return logp.gather(-1, tgt[..., None]).mean()

    return metric


def _normalise(value: Tensor, clean: float, corrupted: float) -> Tensor:
    denom = clean - corrupted
    if abs(denom) < 1e-9:
        raise ValueError("clean and corrupted metrics are equal; the corruption changes nothing")
    return (value - corrupted) / denom


@torch.no_grad()
def _baselines(
    model: Transformer, clean: Tensor, corrupted: Tensor, metric: Metric, hooks: list[str]
) -> tuple[float, float, dict[str, Tensor]]:
    logits, cache = model.run_with_cache(clean, names_filter=hooks)
    clean_value = float(metric(logits))
    corrupted_value = float(metric(model(corrupted)))
    return clean_value, corrupted_value, cache


@torch.no_grad()
def patch_hook(
    model: Transformer,
    clean: Int[Tensor, "b p"],
    corrupted: Int[Tensor, "b p"],
    metric: Metric,
    hook: str,
    index: tuple[slice | int, ...] = (),
) -> float:
    """Normalised metric after patching ``hook[:, *index]`` from the clean into the corrupted run.

    ``index`` selects part of the activation after the batch dim, e.g. ``(slice(None), 3)`` for
    head 3 of ``hook_z`` at all positions, ``(5,)`` for position 5 of a residual.
    """
    clean_value, corrupted_value, cache = _baselines(model, clean, corrupted, metric, [hook])
    value = _patched_metric(model, corrupted, metric, hook, cache[hook], index)
    return float(_normalise(value, clean_value, corrupted_value))


def _patched_metric(
    model: Transformer,
    corrupted: Tensor,
    metric: Metric,
    hook: str,
    source: Tensor,
    index: tuple[slice | int, ...],
) -> Tensor:
    """The metric of the corrupted run with ``hook[:, *index]`` replaced by ``source``'s values."""
    full = (slice(None), *index)

    def fn(t: Tensor, _hook: HookPoint) -> Tensor:
        t = t.clone()
        t[full] = source[full]
        return t

    return metric(model.run_with_hooks(corrupted, fwd_hooks=[(hook, fn)]))


@torch.no_grad()
def patch_residual(
    model: Transformer,
    clean: Int[Tensor, "b p"],
    corrupted: Int[Tensor, "b p"],
    metric: Metric,
    site: str = "hook_resid_pre",
) -> Float[Tensor, "l p"]:
    """Patch ``blocks.{layer}.{site}`` one (layer, position) at a time: ``[n_layers, pos]``.

    Example:
        >>> grid = patch_residual(model, clean, corrupted, metric)  # 1 = fully restored
        >>> plot_heatmap(grid, "position", "layer", "resid_pre patching", "patch.png")
    """
    n_layers, p = model.cfg.n_layers, clean.shape[1]
    hooks = [f"blocks.{i}.{site}" for i in range(n_layers)]
    clean_value, corrupted_value, cache = _baselines(model, clean, corrupted, metric, hooks)
    out = torch.zeros(n_layers, p)
    for layer, hook in enumerate(hooks):
        for pos in range(p):
            value = _patched_metric(model, corrupted, metric, hook, cache[hook], (pos,))
            out[layer, pos] = _normalise(value, clean_value, corrupted_value)
    return out


@torch.no_grad()
def patch_heads(
    model: Transformer,
    clean: Int[Tensor, "b p"],
    corrupted: Int[Tensor, "b p"],
    metric: Metric,
) -> Float[Tensor, "l h"]:
    """Patch each head's output (``hook_z``, all positions) from clean to corrupted: ``[l, h]``."""
    cfg = model.cfg
    hooks = [f"blocks.{i}.attn.hook_z" for i in range(cfg.n_layers)]
    clean_value, corrupted_value, cache = _baselines(model, clean, corrupted, metric, hooks)
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer, hook in enumerate(hooks):
        for head in range(cfg.n_heads):
            value = _patched_metric(model, corrupted, metric, hook, cache[hook], (slice(None), head))
            out[layer, head] = _normalise(value, clean_value, corrupted_value)
    return out


@torch.no_grad()
def patch_mlps(
    model: Transformer,
    clean: Int[Tensor, "b p"],
    corrupted: Int[Tensor, "b p"],
    metric: Metric,
) -> Float[Tensor, " l"]:
    """Patch each layer's MLP output (all positions): ``[n_layers]``."""
    if model.cfg.attn_only:
        raise ValueError("the model is attention-only; it has no MLPs to patch")
    return torch.tensor(
        [
            patch_hook(model, clean, corrupted, metric, f"blocks.{i}.hook_mlp_out")
            for i in range(model.cfg.n_layers)
        ]
    )


def _ablation_value(
    kind: AblationKind, act: Tensor, reference: Tensor | None, gen: torch.Generator
) -> Tensor:
    if kind == "zero":
        return torch.zeros_like(act)
    if reference is None:
        raise ValueError(f"{kind} ablation needs reference activations")
    if kind == "mean":
        # Mean over the reference batch, per position (positional structure is kept).
        return reference.mean(0, keepdim=True).expand_as(act)
    if kind == "resample":
        # Activations from other inputs (Chan et al. 2022, causal scrubbing's resampling ablation).
        idx = torch.randint(reference.shape[0], (act.shape[0],), generator=gen)
        return reference[idx]
    raise ValueError(f"unknown ablation {kind!r}; use zero, mean or resample")


@torch.no_grad()
def ablate_heads(
    model: Transformer,
    tokens: Int[Tensor, "b p"],
    metric: Metric,
    kind: AblationKind = "mean",
    reference: Int[Tensor, "r p"] | None = None,
    seed: int = 0,
) -> Float[Tensor, "l h"]:
    """Metric after ablating each head (``hook_z``) minus the unablated metric: ``[l, h]``.

    Negative entries mark heads the behaviour depends on. ``reference`` tokens (same length)
    supply mean/resample values; default is ``tokens`` itself.
    """
    cfg = model.cfg
    hooks = [f"blocks.{i}.attn.hook_z" for i in range(cfg.n_layers)]
    base = float(metric(model(tokens)))
    ref_cache = None
    if kind != "zero":
        _, ref_cache = model.run_with_cache(
            reference if reference is not None else tokens, names_filter=hooks
        )
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer, hook in enumerate(hooks):
        for head in range(cfg.n_heads):
            ref = None if ref_cache is None else ref_cache[hook][:, :, head]

            def fn(t: Tensor, _hook: HookPoint, head: int = head, ref: Tensor | None = ref) -> Tensor:
                t = t.clone()
                t[:, :, head] = _ablation_value(kind, t[:, :, head], ref, gen)
                return t

            out[layer, head] = float(metric(model.run_with_hooks(tokens, fwd_hooks=[(hook, fn)]))) - base
    return out


@torch.no_grad()
def ablate_hook(
    model: Transformer,
    tokens: Int[Tensor, "b p"],
    metric: Metric,
    hook: str,
    kind: AblationKind = "zero",
    reference: Int[Tensor, "r p"] | None = None,
    seed: int = 0,
) -> float:
    """Metric with the whole activation at ``hook`` ablated, minus the unablated metric."""
    base = float(metric(model(tokens)))
    ref = None
    if kind != "zero":
        _, cache = model.run_with_cache(reference if reference is not None else tokens, names_filter=hook)
        ref = cache[hook]
    gen = torch.Generator().manual_seed(seed)

    def fn(t: Tensor, _hook: HookPoint) -> Tensor:
        return _ablation_value(kind, t, ref, gen)

    return float(metric(model.run_with_hooks(tokens, fwd_hooks=[(hook, fn)]))) - base
