"""Score training examples against query sets with attribution methods named in configs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from alignlab.attribution.ekfac import DEFAULT_DAMPING, ekfac_scores
from alignlab.attribution.grads import example_gradients
from alignlab.attribution.influence import METHODS, attribute
from alignlab.model import Transformer
from alignlab.tasks.chat import Example

AnyMethod = Literal["dot", "cosine", "influence", "ekfac"]
# The sketched-gradient methods, and EK-FAC (exact per-layer curvature, `ekfac_scores`).
ALL_METHODS: tuple[AnyMethod, ...] = (*METHODS, "ekfac")


def check_methods(methods: Sequence[str]) -> None:
    """Raise a ValueError naming any method that is not in `ALL_METHODS`."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; choose from {ALL_METHODS}")


def method_scores(
    model: Transformer,
    train: Sequence[Example],
    query_sets: Sequence[Sequence[Example]],
    methods: Sequence[str],
    dim: int = 4096,
    seed: int = 0,
    ekfac_damping: float = DEFAULT_DAMPING,
) -> dict[str, list[np.ndarray]]:
    """``scores[method][i]``: ``[len(query_sets[i]), len(train)]``, positive = supports the query.

    One set of training gradients serves every sketched method and query set, and one EK-FAC
    curvature fit serves every query set: the model and the training set are the same.
    ``ekfac_damping`` is EK-FAC's damping as a multiple of the mean eigenvalue.
    """
    check_methods(methods)
    out: dict[str, list[np.ndarray]] = {}
    sketched = [m for m in METHODS if m in methods]
    if sketched:
        g_train = example_gradients(model, train, dim=dim, seed=seed)
        g_sets = [example_gradients(model, qs, dim=dim, seed=seed) for qs in query_sets]
        for m in sketched:
            out[m] = [attribute(g_train, g, m).scores.double().numpy() for g in g_sets]
    if "ekfac" in methods:
        queries = [q for qs in query_sets for q in qs]
        joined = ekfac_scores(model, train, queries, damping=ekfac_damping, seed=seed)
        bounds = np.cumsum([len(qs) for qs in query_sets])[:-1]
        out["ekfac"] = np.split(joined.double().numpy(), bounds)
    return out
