"""Attribution checked against planted ground truth: does it find an organism's poisoned data?

An organism is installed from a mix in which we know which examples are poisoned. Gradients of
the organism's behaviour (its defect completions on triggered prompts) are scored against a fresh
sample of that mix; a working attribution method ranks the poisoned examples first. Two controls
keep this honest:

- *clean-behaviour queries* should show no preference for poisoned examples;
- the *untrained baseline*: the same scores from a freshly initialised model of the same shape.
  Poisoned examples share their completion text with the queries, so gradient similarity finds
  them even in a model that learned nothing (measured: dot and cosine reach AUROC 1.0 on random
  weights). Only recovery above this baseline says something about what training did.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from alignlab.attribution.ekfac import ekfac_scores
from alignlab.attribution.grads import example_gradients
from alignlab.attribution.influence import METHODS, Method, attribute
from alignlab.interp.probes import auroc_ci
from alignlab.model import Transformer
from alignlab.organisms.base import Organism
from alignlab.stats import Estimate


@dataclass(frozen=True)
class PlantedAttribution:
    """Recovery of planted examples per method, with the top-ranked examples for reading."""

    auroc: dict[str, Estimate]
    control_auroc: dict[str, Estimate]
    baseline_auroc: dict[str, Estimate]
    precision_at_n_planted: dict[str, float]
    n_train: int
    n_planted: int
    top: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": {k: v.to_dict() for k, v in self.auroc.items()},
            "control_auroc": {k: v.to_dict() for k, v in self.control_auroc.items()},
            "baseline_auroc": {k: v.to_dict() for k, v in self.baseline_auroc.items()},
            "precision_at_n_planted": self.precision_at_n_planted,
            "n_train": self.n_train,
            "n_planted": self.n_planted,
            "top": self.top,
        }


def attribute_organism(
    model: Transformer,
    organism: Organism,
    n_train: int = 400,
    n_queries: int = 20,
    methods: tuple[str, ...] = (*METHODS, "ekfac"),
    dim: int = 4096,
    seed: int = 0,
    n_top: int = 10,
) -> PlantedAttribution:
    """Score a fresh sample of ``organism``'s installation mix against its defect behaviour.

    Args:
        model: a model the organism was installed in (or any model, for a null result).
        organism: supplies the mix (which examples are poisoned is known) and the queries.
        n_train: training examples to score (a fresh sample: same distribution, new draws).
        n_queries: defect queries (and as many clean-behaviour control queries).
        methods: attribution methods to compare: `alignlab.attribution.METHODS` on sketched
            gradients, and "ekfac" (`alignlab.attribution.ekfac_scores`, exact per-layer).
        dim: gradient sketch width.
        seed: seed for the sample, the queries, the sketch, the bootstrap and the untrained
            baseline's initialisation.
        n_top: top-ranked examples kept per method, for the report.

    Example:
        >>> res = attribute_organism(model, get_organism("backdoor"))
        >>> res.auroc["influence"]  # poisoned vs clean examples, 95% bootstrap CI
    """
    train = organism.training_examples(n_train, seed=seed, split="attribution")
    planted = np.array([organism.is_defect(ex, ex.completion) for ex in train])
    rng = random.Random(seed)
    queries = [organism.poisoned(rng) for _ in range(n_queries)]
    controls = [organism.helpful(rng, triggered=False) for _ in range(n_queries)]
    g_train = example_gradients(model, train, dim=dim, seed=seed)
    g_query = example_gradients(model, queries, dim=dim, seed=seed)
    g_control = example_gradients(model, controls, dim=dim, seed=seed)
    untrained = Transformer(model.cfg)
    untrained.init_weights(seed)
    b_train = example_gradients(untrained, train, dim=dim, seed=seed)
    b_query = example_gradients(untrained, queries, dim=dim, seed=seed)
    aucs: dict[str, Estimate] = {}
    controls_auc: dict[str, Estimate] = {}
    baseline: dict[str, Estimate] = {}
    precision: dict[str, float] = {}
    top: dict[str, list[dict[str, Any]]] = {}
    n_pos = int(planted.sum())
    unknown = [m for m in methods if m not in (*METHODS, "ekfac")]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; choose from {(*METHODS, 'ekfac')}")

    def scores_of(method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-example scores for the queries, the controls and the untrained baseline."""
        if method == "ekfac":
            # One curvature fit serves queries and controls: same model, same training set.
            both = ekfac_scores(model, train, [*queries, *controls])
            base_ek = ekfac_scores(untrained, train, queries)
            n_q = len(queries)
            return both[:n_q].mean(0).numpy(), both[n_q:].mean(0).numpy(), base_ek.mean(0).numpy()
        m = cast(Method, method)
        return (
            attribute(g_train, g_query, m).per_example().numpy(),
            attribute(g_train, g_control, m).per_example().numpy(),
            attribute(b_train, b_query, m).per_example().numpy(),
        )

    for method in methods:
        score, control, base = scores_of(method)
        aucs[method] = auroc_ci(score, planted, seed=seed)
        controls_auc[method] = auroc_ci(control, planted, seed=seed)
        baseline[method] = auroc_ci(base, planted, seed=seed)
        order = np.argsort(-score)
        precision[method] = float(planted[order[:n_pos]].mean()) if n_pos else float("nan")
        top[method] = [
            {
                "index": int(i),
                "score": float(score[i]),
                "planted": bool(planted[i]),
                "prompt": train[i].prompt,
                "completion": train[i].completion,
            }
            for i in order[:n_top]
        ]
    return PlantedAttribution(aucs, controls_auc, baseline, precision, len(train), n_pos, top)
