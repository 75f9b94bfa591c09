"""Linear probes on activations: logistic regression, difference of means, AUROC with CIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from alignlab.stats import Estimate

ProbeKind = Literal["logistic", "diff_means"]


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (probability a random positive outscores a random negative;
    ties count half). Computed from ranks, so no scikit-learn needed."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples")
    # Average ranks with ties (numpy only: importing scipy.stats costs seconds).
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(
    scores: ArrayLike, labels: ArrayLike, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """AUROC with a stratified percentile-bootstrap interval.

    Positives and negatives are resampled separately so every resample has both classes. A
    resample's AUROC is ``c_pos · M · c_neg / (n_pos n_neg)`` with ``M`` the pairwise win matrix and
    ``c`` the resample counts, so all resamples cost two matrix products.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs both positive and negative examples")
    rng = np.random.default_rng(seed)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    stats = np.empty(n_boot)
    chunk = max(1, (1 << 22) // max(len(pos), len(neg)))
    for lo in range(0, n_boot, chunk):
        k = min(chunk, n_boot - lo)
        c_pos, c_neg = _resample_counts(rng, len(pos), k), _resample_counts(rng, len(neg), k)
        stats[lo : lo + k] = ((c_pos @ wins) * c_neg).sum(1) / (len(pos) * len(neg))
    alpha = 1 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    value = auroc(s, y)
    return Estimate(
        value,
        min(float(lo), value),
        max(float(hi), value),
        len(s),
        f"stratified-bootstrap{confidence * 100:g}",
    )


def _resample_counts(rng: np.random.Generator, n: int, k: int) -> NDArray[np.float64]:
    """``[k, n]`` how often each item appears in each of ``k`` bootstrap resamples."""
    idx = rng.integers(0, n, size=(k, n)) + n * np.arange(k)[:, None]
    return np.bincount(idx.ravel(), minlength=k * n).reshape(k, n).astype(float)


@dataclass
class LinearProbe:
    """A linear read-out ``score = x · direction + bias`` (higher = positive class).

    Attributes:
        direction: ``[d]`` weight vector in the activation space.
        bias: offset.
        kind: "logistic" or "diff_means".
    """

    direction: Float[Tensor, " d"]
    bias: float
    kind: str

    def score(self, x: Float[Tensor, "n d"]) -> NDArray[np.float64]:
        return (x.double() @ self.direction.double()).numpy() + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction.tolist(), "bias": self.bias, "kind": self.kind}


def fit_diff_means(x: Float[Tensor, "n d"], y: ArrayLike) -> LinearProbe:
    """Difference-of-means probe: ``mean(x | y=1) - mean(x | y=0)``, threshold at the midpoint.

    No fitting, hence no overfitting: the estimator of Marks & Tegmark (2023) and of the
    defection probes of MacDiarmid et al. (Anthropic, 2024).
    """
    yy = torch.as_tensor(np.asarray(y).astype(bool))
    mu1, mu0 = x[yy].mean(0), x[~yy].mean(0)
    direction = mu1 - mu0
    bias = -float(((mu1 + mu0) / 2) @ direction)
    return LinearProbe(direction, bias, "diff_means")


def fit_logistic(x: Float[Tensor, "n d"], y: ArrayLike, c: float = 1.0, seed: int = 0) -> LinearProbe:
    """L2-regularised logistic regression (scikit-learn, lbfgs) on standardised features.

    The returned direction is expressed in the original (unstandardised) activation space.
    """
    from sklearn.linear_model import LogisticRegression

    xn = x.double().numpy()
    mu, sd = xn.mean(0), xn.std(0) + 1e-8
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit((xn - mu) / sd, np.asarray(y).astype(int))
    w = clf.coef_[0] / sd
    bias = float(clf.intercept_[0] - (mu * w).sum())
    return LinearProbe(torch.from_numpy(w), bias, "logistic")


def fit_probe(x: Float[Tensor, "n d"], y: ArrayLike, kind: ProbeKind = "logistic") -> LinearProbe:
    """Fit a probe of ``kind`` ("logistic" or "diff_means")."""
    if kind == "logistic":
        return fit_logistic(x, y)
    if kind == "diff_means":
        return fit_diff_means(x, y)
    raise ValueError(f"unknown probe kind {kind!r}; use 'logistic' or 'diff_means'")


def train_test_split(n: int, test_frac: float = 0.5, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    """Random index split ``(train, test)``."""
    perm = np.random.default_rng(seed).permutation(n)
    k = round(n * (1 - test_frac))
    return perm[:k], perm[k:]


def probe_auroc_by_hook(
    acts: dict[str, Float[Tensor, "n d"]],
    labels: ArrayLike,
    kind: ProbeKind = "logistic",
    test_frac: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Estimate]:
    """Held-out AUROC (with CI) of a probe fitted on each hook's activations.

    Example:
        >>> acts = last_token_activations(model, seqs, [f"blocks.{i}.hook_resid_post" for i in range(2)])
        >>> probe_auroc_by_hook(acts, labels)["blocks.1.hook_resid_post"]
    """
    y = np.asarray(labels).astype(int)
    # Stratified split so both classes appear on both sides.
    tr_parts, te_parts = [], []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        a, b = train_test_split(len(idx), test_frac, seed + cls)
        tr_parts.append(idx[a])
        te_parts.append(idx[b])
    tr, te = np.concatenate(tr_parts), np.concatenate(te_parts)
    out = {}
    for hook, x in acts.items():
        probe = fit_probe(x[torch.as_tensor(tr)], y[tr], kind)
        out[hook] = auroc_ci(probe.score(x[torch.as_tensor(te)]), y[te], n_boot=n_boot, seed=seed)
    return out
