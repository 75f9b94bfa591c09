"""The linear datamodeling score on an install stream, against the baselines a method must beat.

`alignlab.attribution.linear_datamodeling_score` retrains from scratch on subsets of a fixed set.
Here the subsets are of the examples an organism's install really trained on: each subset model is
the same install from the same base model with the other examples left out (`stream_batch_fn`), so
the subset is the only thing that varies. Two baselines come along:

- ``poison-count``: the number of poisoned examples in the subset (score 1 per poisoned example),
  a predictor that knows the planted labels and nothing else. On the backdoor it reached LDS 0.90
  where every method stayed below (issue 17); a method that does not beat it adds nothing to the
  label.
- ``untrained/<method>``: the method's scores from a freshly initialised model of the same shape
  (surface similarity of the examples to the queries, no training).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.attribution.lds import query_losses, score_subsets
from alignlab.attribution.setup import InstallSetup
from alignlab.attribution.training_set import (
    check_stream_methods,
    install_and_score,
    training_set_scores,
    untrained_like,
)
from alignlab.model import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.stream import stream_batch_fn
from alignlab.stats import Estimate
from alignlab.train import train

POISON_COUNT = "poison-count"


@dataclass(frozen=True)
class StreamLDS:
    """LDS per predictor (methods, ``untrained/<method>`` and ``poison-count``), 95% bootstrap
    intervals over subsets, and the random-score null on the same subsets."""

    lds: dict[str, Estimate]
    null: Estimate
    n_subsets: int
    fraction: float
    n_train: int
    n_poison: int

    def best(self) -> str:
        """The predictor with the highest LDS."""
        return max(self.lds, key=lambda k: self.lds[k].value)

    def winner_over_baselines(self, methods: Sequence[str]) -> dict[str, str]:
        """Per method: "method" if its interval lies above both baselines' (poison count and the
        method on an untrained model), the name of a baseline whose interval lies above it, or
        "tie" when the intervals overlap."""
        out: dict[str, str] = {}
        for m in methods:
            mine = self.lds[m]
            rivals = {name: self.lds[name] for name in (POISON_COUNT, f"untrained/{m}")}
            beaten_by = [name for name, r in rivals.items() if r.lo > mine.hi]
            if all(mine.lo > r.hi for r in rivals.values()):
                out[m] = "method"
            else:
                out[m] = beaten_by[0] if beaten_by else "tie"
        return out

    def to_dict(self, methods: Sequence[str]) -> dict[str, Any]:
        return {
            "lds": {k: v.to_dict() for k, v in self.lds.items()},
            "null": self.null.to_dict(),
            "n_subsets": self.n_subsets,
            "fraction": self.fraction,
            "n_train": self.n_train,
            "n_poison": self.n_poison,
            "best": self.best(),
            "winner": self.winner_over_baselines(methods),
        }


def stream_lds(
    organism: Organism,
    setup: InstallSetup,
    base: Transformer,
    methods: Sequence[str],
    n_subsets: int = 100,
    fraction: float = 0.5,
    n_queries: int = 20,
    seed: int = 0,
    n_snapshots: int = 4,
    dim: int = 4096,
    n_boot: int = 1000,
) -> StreamLDS:
    """Score ``methods`` and the baselines by LDS over ``n_subsets`` random subsets of the stream.

    Every subset model is a full install (same steps, order and base) without the examples outside
    its subset; its query losses are the mean defect loss of ``n_queries`` triggered prompts.

    Example:
        >>> res = stream_lds(org, InstallSetup(steps=60, batch_size=16), base, ("tracin", "ekfac"))
        >>> res.lds["ekfac"], res.lds["poison-count"]
    """
    check_stream_methods(methods)
    if n_subsets < 2 or not 0 < fraction < 1:
        raise ValueError(f"need n_subsets >= 2 and 0 < fraction < 1, got {n_subsets}, {fraction}")
    cfg = setup.train_config(organism, seed)
    queries = organism.defect_examples(n_queries, seed, "defect-metric")
    scored = install_and_score(organism, cfg, base, queries, methods, n_snapshots, dim)
    planted = scored.stream.planted(organism)
    n = len(planted)
    untrained = training_set_scores(
        untrained_like(scored.model, seed), scored.stream.examples, queries, methods, dim=dim, seed=seed
    )
    predictors = dict(scored.scores)
    predictors.update({f"untrained/{m}": s for m, s in untrained.items()})
    predictors[POISON_COUNT] = np.broadcast_to(planted.astype(float), (len(queries), n))
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_subsets, n), dtype=bool)
    for j in range(n_subsets):
        masks[j, rng.choice(n, size=round(fraction * n), replace=False)] = True
    losses = np.empty((n_subsets, len(queries)))
    for j in range(n_subsets):
        with tempfile.TemporaryDirectory(prefix="alignlab-lds-") as tmp:
            keep = stream_batch_fn(organism, masks[j])
            model = train(cfg, Path(tmp), progress=False, init_model=base, batch_fn=keep).model
        losses[j] = query_losses(model, queries)
    lds, _, null = score_subsets(masks, predictors, losses, rng, n_boot)
    return StreamLDS(lds, null, n_subsets, fraction, n, int(planted.sum()))
