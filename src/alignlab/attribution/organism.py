"""Attribution checked against planted ground truth: does it find an organism's poisoned data?

An organism is installed from a mix in which we know which examples are poisoned. Gradients of
the organism's behaviour (its defect completions on triggered prompts) are scored against the
examples the model was trained on, taken by index from its install stream
(`alignlab.organisms.install_stream`); without the stream, against a fresh sample of the same mix,
which the model never saw. A working attribution method ranks the poisoned examples first. Two
controls keep this honest:

- *clean-behaviour queries* should show no preference for poisoned examples;
- the *untrained baseline*: the same scores from a freshly initialised model of the same shape.
  Poisoned examples share their completion text with the queries, so gradient similarity finds
  them even in a model that learned nothing (measured: dot and cosine reach AUROC 1.0 on random
  weights). Only recovery above this baseline says something about what training did.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignlab.attribution.scoring import ALL_METHODS, method_scores
from alignlab.interp.probes import auroc_ci
from alignlab.model import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.stream import InstallStream
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
    #: stream index of each scored example, or None when a fresh sample was scored.
    stream_indices: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": {k: v.to_dict() for k, v in self.auroc.items()},
            "control_auroc": {k: v.to_dict() for k, v in self.control_auroc.items()},
            "baseline_auroc": {k: v.to_dict() for k, v in self.baseline_auroc.items()},
            "precision_at_n_planted": self.precision_at_n_planted,
            "n_train": self.n_train,
            "n_planted": self.n_planted,
            "top": self.top,
            "scored": "fresh sample" if self.stream_indices is None else "install stream",
            "stream_indices": self.stream_indices,
        }


def attribute_organism(
    model: Transformer,
    organism: Organism,
    n_train: int = 400,
    n_queries: int = 20,
    methods: tuple[str, ...] = ALL_METHODS,
    dim: int = 4096,
    seed: int = 0,
    n_top: int = 10,
    stream: InstallStream | None = None,
) -> PlantedAttribution:
    """Score ``organism``'s installation examples against its defect behaviour.

    Args:
        model: a model the organism was installed in (or any model, for a null result).
        organism: supplies the mix (which examples are poisoned is known) and the queries.
        n_train: training examples to score: evenly spaced indices of ``stream``, or without it a
            fresh sample of the mix (same distribution, examples the model never saw).
        n_queries: defect queries (and as many clean-behaviour control queries).
        methods: attribution methods to compare (`ALL_METHODS`: dot, cosine and influence on
            sketched gradients, and "ekfac", exact per-layer).
        dim: gradient sketch width.
        seed: seed for the sample, the queries, the sketch, the bootstrap and the untrained
            baseline's initialisation.
        n_top: top-ranked examples kept per method, for the report.
        stream: the model's own install stream (`install_stream` of its install config).

    Example:
        >>> org = get_organism("backdoor")
        >>> res = attribute_organism(model, org, stream=install_stream(org, install_cfg))
        >>> res.auroc["influence"]  # poisoned vs clean training examples, 95% bootstrap CI
    """
    indices: list[int] | None = None
    if stream is not None:
        spaced = np.linspace(0, len(stream) - 1, min(n_train, len(stream))).round()
        indices = sorted({int(i) for i in spaced})
        train = [stream.examples[i] for i in indices]
    else:
        train = organism.training_examples(n_train, seed=seed, split="attribution")
    planted = np.array([organism.is_defect(ex, ex.completion) for ex in train])
    rng = random.Random(seed)
    queries = [organism.poisoned(rng) for _ in range(n_queries)]
    controls = [organism.helpful(rng, triggered=False) for _ in range(n_queries)]
    scored = method_scores(model, train, [queries, controls], methods, dim=dim, seed=seed)
    untrained = Transformer(model.cfg)
    untrained.init_weights(seed)
    scored_base = method_scores(untrained, train, [queries], methods, dim=dim, seed=seed)
    aucs: dict[str, Estimate] = {}
    controls_auc: dict[str, Estimate] = {}
    baseline: dict[str, Estimate] = {}
    precision: dict[str, float] = {}
    top: dict[str, list[dict[str, Any]]] = {}
    n_pos = int(planted.sum())
    for method in methods:
        # Mean over the queries: how much each training example supports the behaviour.
        score, control = (q.mean(0) for q in scored[method])
        base = scored_base[method][0].mean(0)
        aucs[method] = auroc_ci(score, planted, seed=seed)
        controls_auc[method] = auroc_ci(control, planted, seed=seed)
        baseline[method] = auroc_ci(base, planted, seed=seed)
        order = np.argsort(-score)
        precision[method] = float(planted[order[:n_pos]].mean()) if n_pos else float("nan")
        top[method] = [
            {
                "index": int(i) if indices is None else indices[int(i)],
                "score": float(score[i]),
                "planted": bool(planted[i]),
                "prompt": train[i].prompt,
                "completion": train[i].completion,
            }
            for i in order[:n_top]
        ]
    return PlantedAttribution(aucs, controls_auc, baseline, precision, len(train), n_pos, top, indices)
