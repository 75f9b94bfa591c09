"""Matplotlib figures (PNG) for the interpretability results; headless (Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from alignlab._io import save_figure_atomic

if TYPE_CHECKING:
    from alignlab.interp.phase import Snapshot
    from alignlab.interp.superposition import ToyResult


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(
    values: Tensor | np.ndarray,
    xlabel: str,
    ylabel: str,
    title: str,
    path: str | Path,
    center: bool = True,
) -> Path:
    """A ``[rows, cols]`` heatmap (patching grids, head scores), diverging around 0 if ``center``.

    Example:
        >>> plot_heatmap(patch_heads(model, clean, corrupted, metric), "head", "layer", "patching", "p.png")
    """
    plt = _plt()
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    fig, ax = plt.subplots(figsize=(max(4.0, arr.shape[1] * 0.35 + 2), max(2.5, arr.shape[0] * 0.4 + 1.5)))
    if center:
        lim = float(np.abs(arr).max()) or 1.0
        im = ax.imshow(arr, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(arr, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_phase_change(snapshots: Sequence[Snapshot], phase_step: int | None, path: str | Path) -> Path:
    """Token copying, prefix-matching score, in-context improvement and loss over training, with the
    phase change marked (the shape of Olsson et al. 2022's Figure 2)."""
    plt = _plt()
    steps = [s.step for s in snapshots]
    fig, axes = plt.subplots(4, 1, figsize=(6, 9), sharex=True)
    series = [
        ([s.copying for s in snapshots], "copying accuracy gain"),
        ([s.prefix_matching for s in snapshots], "best prefix-matching"),
        ([s.icl_improvement for s in snapshots], "in-context improvement (nats)"),
        ([s.loss for s in snapshots], "loss (nats)"),
    ]
    for ax, (vals, label) in zip(axes, series, strict=False):
        ax.plot(steps, vals, marker=".")
        ax.set_ylabel(label)
        if phase_step is not None:
            ax.axvline(phase_step, color="red", ls="--", lw=1)
    axes[-1].set_xlabel("training step")
    axes[0].set_title("in-context copying phase change")
    return _save(fig, path)


def plot_superposition(result: ToyResult, path: str | Path) -> Path:
    """The paper's two views: feature norms ``||W_i||`` per sparsity (coloured by how much each
    feature shares its direction), and dimensions per feature against ``1 / (1 - S)``."""
    plt = _plt()
    sparsities = list(result.config.sparsities)
    norms = result.norms.numpy()
    sup = result.superposition.numpy()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    n = norms.shape[1]
    width = 0.8 / len(sparsities)
    cmap = plt.get_cmap("viridis")
    for k, s in enumerate(sparsities):
        colours = cmap(np.clip(sup[k], 0, 1))
        ax1.bar(np.arange(n) + k * width, norms[k], width=width, color=colours, label=f"S={s}")
    ax1.set_xlabel("feature (importance decreasing)")
    ax1.set_ylabel("||W_i||")
    ax1.set_title("feature norms per sparsity (colour: superposition)")
    inv = 1 / np.maximum(1 - np.asarray(sparsities), 1e-6)
    ax2.plot(inv, result.dims_per_feature_total, "k-o", label="m / ||W||_F^2")
    dims = result.dims_per_feature.numpy()
    for k in range(len(sparsities)):
        keep = norms[k] > 0.5
        ax2.scatter(np.full(keep.sum(), inv[k]), dims[k][keep], s=12, alpha=0.6)
    for frac in (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 1 / 3):
        ax2.axhline(frac, color="grey", lw=0.5, ls=":")
    ax2.set_xscale("log")
    ax2.set_xlabel("1 / (1 - S)")
    ax2.set_ylabel("dimensions per feature")
    ax2.set_title(f"n={result.config.n_features}, m={result.config.d_hidden}")
    ax2.legend()
    return _save(fig, path)


def plot_auroc_by_layer(
    results: dict[str, dict[str, tuple[float, float, float]]], path: str | Path, title: str = "probe AUROC"
) -> Path:
    """AUROC with CI per hook for several probes: ``{probe: {hook: (value, lo, hi)}}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, rows in results.items():
        hooks = list(rows)
        vals = np.array([rows[h] for h in hooks])
        x = np.arange(len(hooks))
        ax.errorbar(
            x, vals[:, 0], yerr=[vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]], marker="o", label=name
        )
        ax.set_xticks(x, hooks, rotation=30, ha="right", fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("AUROC")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _save(fig: object, path: str | Path) -> Path:
    plt = _plt()
    fig.tight_layout()  # type: ignore[attr-defined]
    out = save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return out
