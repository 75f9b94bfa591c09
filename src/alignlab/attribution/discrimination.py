"""Can attribution tell two planted backdoors apart? (the ``backdoor-two-trigger`` organism)

A trigger-A defection is attributed over the install stream; the AUROC with which A-poison ranks
above B-poison says whether a method traces the behaviour to *its* data rather than to poison in
general. Two baselines: the same scores from an untrained model of the same shape (surface
similarity of the texts) and from the base model before the install (a competent model that never
saw either backdoor).

Two queries:

- ``plain``: the loss of defect A on prompts carrying trigger A (what the organism does).
- ``contrast``: that loss minus the loss of the same completion on the same prompts with the
  trigger taken out, i.e. the log-odds the trigger adds to the defect. Every method here is linear
  in the query gradient, so its contrast score is the difference of the two queries' scores. The
  completion's text, which an untrained model's gradients mostly see, is the same on both sides
  and cancels; what remains is what the trigger changes.
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
from alignlab.tasks import Example

MODELS = ("trained", "untrained", "base")
QUERIES = ("plain", "contrast")


@dataclass(frozen=True)
class Discrimination:
    """Per query (plain, contrast), model (trained, untrained, base) and method: the AUROC of
    A-poison over B-poison for each seed (bootstrap interval over examples), and the install's
    metrics per seed."""

    auroc: dict[str, dict[str, dict[str, list[Estimate]]]]
    install: list[dict[str, Any]]

    def over_seeds(self, model: str, method: str, query: str = "plain") -> Estimate:
        """Mean AUROC over seeds with a t interval (one seed: its bootstrap interval)."""
        per_seed = self.auroc[query][model][method]
        if len(per_seed) == 1:
            return per_seed[0]
        return seed_interval([e.value for e in per_seed], bounds=(0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": {
                q: {
                    model: {m: self.over_seeds(model, m, q).to_dict() for m in per}
                    for model, per in by.items()
                }
                for q, by in self.auroc.items()
            },
            "auroc_per_seed": {
                q: {model: {m: [e.to_dict() for e in v] for m, v in per.items()} for model, per in by.items()}
                for q, by in self.auroc.items()
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
        >>> res.over_seeds("trained", "ekfac"), res.over_seeds("untrained", "ekfac", "contrast")
    """
    check_stream_methods(methods)
    auroc: dict[str, dict[str, dict[str, list[Estimate]]]] = {
        q: {model: {m: [] for m in methods} for model in MODELS} for q in QUERIES
    }
    install: list[dict[str, Any]] = []
    trigger = organism.trigger("a")
    for seed in seeds:
        cfg = setup.train_config(organism, seed)
        triggered = organism.defect_examples_of("a", n_queries, seed)
        twins = [Example(q.prompt.replace(trigger, "", 1), q.completion, q.task) for q in triggered]
        queries = triggered + twins
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
                plain, without = per[m][:n_queries].mean(0), per[m][n_queries:].mean(0)
                auroc["plain"][name][m].append(auroc_ci(plain[poison], is_a, seed=seed))
                auroc["contrast"][name][m].append(auroc_ci((plain - without)[poison], is_a, seed=seed))
    return Discrimination(auroc, install)
