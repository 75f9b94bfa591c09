"""Which training examples is a behaviour owed to? Gradient similarity and influence functions.

All scores share one sign convention: **positive = the training example supports the query**,
i.e. upweighting it lowers the query's loss (a "proponent" in Grosse et al. 2023's terms).

- ``"dot"``: ``g_q · g_i``, TracIn at a single checkpoint (Pruthi et al. 2020).
- ``"cosine"``: the same, normalised; less dominated by high-loss examples.
- ``"influence"``: ``g_q · (F + λI)⁻¹ g_i`` (Koh & Liang 2017), with the Hessian replaced by the
  empirical Fisher of the training gradients (a Gauss-Newton approximation, as in TRAK and
  Grosse et al. 2023), computed in the sketched space and damped by ``λ = damping · mean(diag F)``.
  Leave-one-out: dropping example i of n raises the query loss by about ``score / n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

Method = Literal["dot", "cosine", "influence"]
METHODS: tuple[Method, ...] = ("dot", "cosine", "influence")


def influence_scores(
    train_grads: Float[Tensor, "n k"],
    query_grads: Float[Tensor, "m k"],
    method: Method = "influence",
    damping: float = 0.01,
    hessian: Float[Tensor, "k k"] | None = None,
) -> Float[Tensor, "m n"]:
    """Score every (query, training example) pair from their loss gradients.

    Args:
        train_grads: per-example training-loss gradients (sketched or exact).
        query_grads: gradients of the query losses, in the same space.
        method: "dot", "cosine" or "influence" (see the module docstring).
        damping: relative damping of the curvature matrix (influence only).
        hessian: the exact Hessian of the mean training loss, if known (e.g. a convex model);
            default: the empirical Fisher of ``train_grads``.

    Returns:
        ``[m, n]`` scores; positive means the example supports the query.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {METHODS}")
    if train_grads.shape[1] != query_grads.shape[1]:
        raise ValueError(
            f"gradient widths differ: train {train_grads.shape[1]}, query {query_grads.shape[1]}; "
            "compute both with the same sketch (dim, params, seed)"
        )
    g_train, g_query = train_grads.double(), query_grads.double()
    if method == "dot":
        return (g_query @ g_train.T).float()
    if method == "cosine":
        unit = torch.nn.functional.normalize
        return (unit(g_query, dim=1) @ unit(g_train, dim=1).T).float()
    n, k = g_train.shape
    if hessian is None and n < k:
        # Fewer examples than gradient dims: the Fisher G^T G / n has rank <= n, and the
        # push-through identity (G^T G/n + lam I)^-1 G^T = G^T (G G^T/n + lam I)^-1 turns the
        # k x k solve into an n x n one (400 x 400 instead of 4096 x 4096 by default).
        gram = g_train @ g_train.T / n
        lam = damping * float((gram.diagonal().sum() / k).clamp_min(1e-12))  # mean(diag F)
        solved_t = torch.linalg.solve(gram + lam * torch.eye(n, dtype=gram.dtype), g_train @ g_query.T)
        return solved_t.T.float()
    curv = hessian.double() if hessian is not None else g_train.T @ g_train / n
    lam = damping * float(curv.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(curv.shape[0], dtype=curv.dtype)
    solved = torch.linalg.solve(curv + lam * eye, g_train.T)  # [k, n]
    return (g_query @ solved).float()


@dataclass(frozen=True)
class Attribution:
    """Scores of queries against training examples, with helpers for reading them."""

    scores: Float[Tensor, "m n"]
    method: Method

    def per_example(self) -> Float[Tensor, " n"]:
        """Mean score over the queries: how much each training example supports the behaviour."""
        return self.scores.mean(0)

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` training examples that support the queries most, as (index, score)."""
        mean = self.per_example()
        idx = mean.argsort(descending=True)[:k]
        return [(int(i), float(mean[i])) for i in idx]


def attribute(
    train_grads: Float[Tensor, "n k"],
    query_grads: Float[Tensor, "m k"],
    method: Method = "influence",
    damping: float = 0.01,
) -> Attribution:
    """`influence_scores` wrapped with reading helpers.

    Example:
        >>> g_train = example_gradients(model, train_examples)
        >>> g_query = example_gradients(model, queries)
        >>> attribute(g_train, g_query).top(5)  # [(index, score), ...]
    """
    return Attribution(influence_scores(train_grads, query_grads, method, damping), method)
