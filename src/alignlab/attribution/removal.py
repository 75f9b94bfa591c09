"""The counterfactual check of attribution: remove what a method blames, retrain, and see.

For each seed an organism is installed into a base model and its training stream scored
(`install_and_score`). Then, for each k, the install is redone from the same base model without
k examples, chosen by each method (its top k), by chance among the poisoned examples
("random-poison") and by chance among all ("random"). A method is useful beyond "find the poison"
only if its top k lowers attack success more than k random poisoned examples do: removal of the
whole planted set is what a perfect poison detector already buys (Ilyas et al. 2022 and Park et al.
2023 likewise judge attribution by retraining, not by recovery of a label).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.attribution.lds import query_losses
from alignlab.attribution.setup import InstallSetup
from alignlab.attribution.training_set import check_stream_methods, install_and_score
from alignlab.interp.probes import auroc_ci
from alignlab.model import Transformer
from alignlab.organisms.base import Organism
from alignlab.organisms.stream import stream_batch_fn
from alignlab.stats import Estimate, rate_over_seeds, seed_interval
from alignlab.train import train

RANDOM_POISON, RANDOM = "random-poison", "random"
# Time-ordered controls: the first or last k poisoned examples of the stream. An install sees its
# examples once, in order, so *when* a poisoned example came may matter more than which one it is
# (measured: removing the first 160 of ~650 poisoned examples lowered attack success from 0.62 to
# 0.08, k random poisoned ones only to 0.40). A method that beats random-poison removal but not
# these may only be reading the order (TracIn's early snapshots weigh early examples).
EARLIEST_POISON, LATEST_POISON = "earliest-poison", "latest-poison"
# The prompts every arm is judged on: one fixed held-out set, so arms differ only by their data.
_EVAL_SEED = 12345


@dataclass(frozen=True)
class RemovalResult:
    """Attack success after removal, per arm and k, over seeds.

    Attributes:
        rows: one per (seed, arm, k): ``successes``/``trials`` of attack success on held-out
            triggered prompts, ``defect_loss`` (mean completion loss of the defect on held-out
            triggered prompts, continuous where the rate saturates) and ``n_poison_removed``.
        full: per seed, the same for the full install (nothing removed).
        auroc: per seed and method, poisoned vs clean stream examples by the method's support.
    """

    rows: list[dict[str, Any]]
    full: list[dict[str, Any]]
    auroc: dict[str, list[Estimate]] = field(default_factory=dict)

    def arms(self) -> list[str]:
        return list(dict.fromkeys(r["arm"] for r in self.rows))

    def ks(self) -> list[int]:
        return sorted({int(r["k"]) for r in self.rows})

    def attack_success(self, arm: str, k: int) -> Estimate:
        """Attack success over seeds (`rate_over_seeds`: t interval with a pooled Wilson floor)."""
        rows = [r for r in self.rows if r["arm"] == arm and r["k"] == k]
        return rate_over_seeds([r["successes"] for r in rows], [r["trials"] for r in rows])

    def full_attack_success(self) -> Estimate:
        return rate_over_seeds([r["successes"] for r in self.full], [r["trials"] for r in self.full])

    def paired_gap(self, arm: str, k: int, versus: str = RANDOM_POISON) -> Estimate:
        """Mean over seeds of (attack success after ``versus``) - (after ``arm``), t interval;
        positive = ``arm`` removed more of the backdoor. Pairing by seed removes the install's
        own seed-to-seed spread."""
        mine = {r["seed"]: r["successes"] / r["trials"] for r in self.rows if r["arm"] == arm and r["k"] == k}
        other = {
            r["seed"]: r["successes"] / r["trials"] for r in self.rows if r["arm"] == versus and r["k"] == k
        }
        seeds = sorted(set(mine) & set(other))
        return seed_interval([other[s] - mine[s] for s in seeds], bounds=(-1.0, 1.0))

    def beats(self, arm: str, k: int, versus: str = RANDOM_POISON) -> bool:
        """Separated intervals: ``arm``'s attack-success interval lies wholly below ``versus``'s."""
        return self.attack_success(arm, k).hi < self.attack_success(versus, k).lo

    def verdict(self, methods: Sequence[str]) -> dict[str, list[int]]:
        """Per method, the ks at which it beats random-poison removal with separated intervals."""
        return {m: [k for k in self.ks() if self.beats(m, k)] for m in methods}

    def to_dict(self, methods: Sequence[str]) -> dict[str, Any]:
        table = {
            arm: {
                str(k): {
                    "attack_success": self.attack_success(arm, k).to_dict(),
                    "gap_vs_random_poison": self.paired_gap(arm, k).to_dict()
                    if arm != RANDOM_POISON
                    else None,
                    "gap_vs_earliest_poison": self.paired_gap(arm, k, EARLIEST_POISON).to_dict()
                    if arm in methods and EARLIEST_POISON in self.arms()
                    else None,
                    "poison_removed": float(
                        np.mean([r["n_poison_removed"] for r in self.rows if r["arm"] == arm and r["k"] == k])
                    ),
                }
                for k in self.ks()
            }
            for arm in self.arms()
        }
        return {
            "full_attack_success": self.full_attack_success().to_dict(),
            "table": table,
            "beats_random_poison_at_k": self.verdict(methods),
            "beats_earliest_poison_at_k": {
                m: [k for k in self.ks() if self.beats(m, k, EARLIEST_POISON)] for m in methods
            }
            if EARLIEST_POISON in self.arms()
            else None,
            "auroc": {m: [e.to_dict() for e in v] for m, v in self.auroc.items()},
            "rows": self.rows,
            "full": self.full,
        }


def _outcome(organism: Organism, model: Transformer, n_eval: int) -> dict[str, Any]:
    rate = organism.metrics(model, n=n_eval, seed=_EVAL_SEED)["attack_success"]
    held_out = organism.defect_examples(min(n_eval, 50), _EVAL_SEED, "defect-metric")
    return {
        "successes": round(rate.value * rate.n),
        "trials": rate.n,
        "defect_loss": float(query_losses(model, held_out).mean()),
    }


def removal_check(
    organism: Organism,
    setup: InstallSetup,
    base: Transformer | None,
    seeds: Sequence[int],
    ks: Sequence[int],
    methods: Sequence[str],
    n_queries: int = 20,
    n_eval: int = 200,
    n_snapshots: int = 4,
    dim: int = 4096,
    order_controls: bool = True,
) -> RemovalResult:
    """Remove each method's top-k (and k random poisoned, and k random) examples and reinstall.

    Args:
        organism: the organism (its config is overridden by ``setup``'s rates by the caller).
        setup: the install (size, steps, batch, learning rate).
        base: the base model every install starts from (None: installs from scratch).
        seeds: install seeds (data stream, sketch and the random arms' draws).
        ks: numbers of examples to remove.
        methods: attribution methods (`STREAM_METHODS`).
        n_queries: triggered prompts with the defect whose loss the methods attribute.
        n_eval: held-out triggered prompts judging attack success after each install.
        n_snapshots: TracIn snapshots of the full install.
        dim: gradient sketch width.
        order_controls: also remove the first and the last k poisoned examples of the stream.

    Example:
        >>> res = removal_check(org, InstallSetup(), base, seeds=(0, 1, 2), ks=(160, 320),
        ...                     methods=("tracin", "influence", "ekfac"))
        >>> res.verdict(("tracin", "influence", "ekfac"))  # ks where each beats random poison
    """
    check_stream_methods(methods)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive numbers of examples, got {ks}")
    rows: list[dict[str, Any]] = []
    full: list[dict[str, Any]] = []
    aurocs: dict[str, list[Estimate]] = {m: [] for m in methods}
    for seed in seeds:
        cfg = setup.train_config(organism, seed)
        queries = organism.defect_examples(n_queries, seed, "defect-metric")
        scored = install_and_score(organism, cfg, base, queries, methods, n_snapshots, dim)
        planted = scored.stream.planted(organism)
        n = len(planted)
        if max(ks) > n:
            raise ValueError(f"k={max(ks)} exceeds the {n} examples of the install stream")
        full.append(
            {
                "seed": seed,
                "n_train": n,
                "n_poison": int(planted.sum()),
                **_outcome(organism, scored.model, n_eval),
            }
        )
        for m in methods:
            aurocs[m].append(auroc_ci(scored.support(m), planted, seed=seed))
        rng = np.random.default_rng(seed)
        poison_idx = np.flatnonzero(planted)
        for k in ks:
            arms = {m: np.argsort(-scored.support(m), kind="stable")[:k] for m in methods}
            arms[RANDOM_POISON] = rng.choice(poison_idx, size=min(k, len(poison_idx)), replace=False)
            arms[RANDOM] = rng.choice(n, size=k, replace=False)
            if order_controls:
                arms[EARLIEST_POISON], arms[LATEST_POISON] = poison_idx[:k], poison_idx[-k:]
            for arm, removed in arms.items():
                keep = np.ones(n, dtype=bool)
                keep[removed] = False
                with tempfile.TemporaryDirectory(prefix="alignlab-removal-") as tmp:
                    model = train(
                        cfg,
                        Path(tmp),
                        progress=False,
                        init_model=base,
                        batch_fn=stream_batch_fn(organism, keep),
                    ).model
                rows.append(
                    {
                        "seed": seed,
                        "arm": arm,
                        "k": k,
                        "n_poison_removed": int(planted[removed].sum()),
                        **_outcome(organism, model, n_eval),
                    }
                )
    return RemovalResult(rows, full, aurocs)
