"""Can attribution tell two planted backdoors apart? (the ``backdoor-two-trigger`` organism)

A trigger-A defection is attributed over the install stream; the AUROC with which A-poison ranks
above B-poison says whether a method traces the behaviour to *its* data rather than to poison in
general. Two baselines: the same scores from an untrained model of the same shape (surface
similarity of the texts) and from the base model before the install (a competent model that never
saw either backdoor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab.attribution.setup import InstallSetup
from alignlab.attribution.training_set import (
    check_stream_methods,
    install_and_score,
    training_set_scores,
    untrained_like,
)
from alignlab.interp.probes import auroc_ci
from alignlab.model import Transformer
from alignlab.organisms.two_trigger import TwoTriggerBackdoor
from alignlab.stats import Estimate, seed_interval

MODELS = ("trained", "untrained", "base")


@dataclass(frozen=True)
class Discrimination:
    """Per model (trained, untrained, base) and method: the AUROC of A-poison over B-poison for
    each seed (bootstrap interval over examples), and the install's metrics per seed."""

    auroc: dict[str, dict[str, list[Estimate]]]
    install: list[dict[str, Any]]

    def over_seeds(self, model: str, method: str) -> Estimate:
        """Mean AUROC over seeds with a t interval (one seed: its bootstrap interval)."""
        per_seed = self.auroc[model][method]
        if len(per_seed) == 1:
            return per_seed[0]
        return seed_interval([e.value for e in per_seed], bounds=(0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": {
                model: {m: self.over_seeds(model, m).to_dict() for m in per}
                for model, per in self.auroc.items()
            },
            "auroc_per_seed": {
                model: {m: [e.to_dict() for e in v] for m, v in per.items()}
                for model, per in self.auroc.items()
            },
            "install": self.install,
        }


def trigger_discrimination(
    organism: TwoTriggerBackdoor,
    setup: InstallSetup,
    base: Transformer,
    seeds: Sequence[int],
    methods: Sequence[str],
    n_queries: int = 20,
    n_eval: int = 200,
    n_snapshots: int = 4,
    dim: int = 4096,
) -> Discrimination:
    """Install the two-trigger organism per seed; attribute trigger-A defections to its stream.

    Example:
        >>> res = trigger_discrimination(get_organism("backdoor-two-trigger"), setup, base, (0, 1, 2),
        ...                              ("tracin", "influence", "ekfac"))
        >>> res.over_seeds("trained", "ekfac"), res.over_seeds("untrained", "ekfac")
    """
    check_stream_methods(methods)
    auroc: dict[str, dict[str, list[Estimate]]] = {model: {m: [] for m in methods} for model in MODELS}
    install: list[dict[str, Any]] = []
    for seed in seeds:
        cfg = setup.train_config(organism, seed)
        queries = organism.defect_examples_of("a", n_queries, seed)
        scored = install_and_score(organism, cfg, base, queries, methods, n_snapshots, dim)
        kinds = np.array([organism.kind(ex) for ex in scored.stream.examples])
        poison = kinds != ""
        is_a = kinds[poison] == "a"
        metrics = organism.metrics(scored.model, n=n_eval, seed=seed)
        install.append(
            {
                "seed": seed,
                "n_a": int(is_a.sum()),
                "n_b": int((~is_a).sum()),
                **{k: v.to_dict() for k, v in metrics.items()},
            }
        )
        # The baselines score the whole stream too: influence and EK-FAC fit their curvature on the
        # examples they score, so scoring only the poison would change the method, not the model.
        per_model = {"trained": scored.scores}
        for name, model in (("untrained", untrained_like(scored.model, seed)), ("base", base)):
            per_model[name] = training_set_scores(
                model, scored.stream.examples, queries, methods, dim=dim, seed=seed
            )
        for name, per in per_model.items():
            for m in methods:
                auroc[name][m].append(auroc_ci(per[m].mean(0)[poison], is_a, seed=seed))
    return Discrimination(auroc, install)
