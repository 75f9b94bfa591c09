"""The size-family study: train the family on the induction task, tabulate loss and in-context
learning against parameter count. This is `alignlab run` until the flagship study lands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from alignlab.errors import ConfigError
from alignlab.model.config import SIZES
from alignlab.scaling.sweep import sweep
from alignlab.stats import Estimate, seed_interval
from alignlab.store import Store
from alignlab.train.config import TrainConfig, train_preset
from alignlab.train.run import run_summary


def family_configs(sizes: Sequence[str], steps: int, seeds: int) -> list[TrainConfig]:
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ConfigError(f"unknown sizes {unknown}; the family is {', '.join(SIZES)}")
    if steps <= 0 or seeds <= 0:
        raise ConfigError("steps and seeds must be positive")
    return [
        train_preset(f"induction-{size}").replace(steps=steps, seed=seed, eval_every=steps)
        for size in sizes
        for seed in range(seeds)
    ]


def _estimate(values: list[float]) -> Estimate:
    if len(values) == 1:
        return Estimate(values[0], values[0], values[0], 1, "single seed")
    # A t interval: a percentile bootstrap over 2-3 seeds is [min, max] and covers 50-75%.
    return seed_interval(values)


def run_family(
    sizes: Sequence[str],
    store: Store,
    steps: int = 400,
    seeds: int = 1,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Train (or reuse) each size x seed and return one row per size, with CIs across seeds."""
    configs = family_configs(sizes, steps, seeds)
    runs = sweep(configs, store, workers=workers)
    rows = []
    for size in sizes:
        summaries = [
            run_summary(run) for cfg, run in zip(configs, runs, strict=True) if cfg.model == SIZES[size]
        ]
        counts = SIZES[size].param_counts()
        rows.append(
            {
                "size": size,
                "params": counts["total"],
                "non_embedding_params": counts["non_embedding"],
                "seeds": len(summaries),
                "eval_loss": _estimate([s["final"]["eval_loss"] for s in summaries]).to_dict(),
                "icl_improvement": _estimate([s["final"]["icl_improvement"] for s in summaries]).to_dict(),
                "tokens_per_s": sum(s["tokens_per_s"] for s in summaries) / len(summaries),
                "run_ids": [s["run_id"] for s in summaries],
            }
        )
    return rows


def family_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "size",
        "params",
        "non-emb",
        "final loss",
        "tokens/s",
        "in-context improvement (nats)",
        title="Size family on repeated random tokens (loss first half - loss repeated half)",
    )
    for r in rows:
        loss, icl = Estimate.from_dict(r["eval_loss"]), Estimate.from_dict(r["icl_improvement"])
        table.add_row(
            r["size"],
            f"{r['params']:,}",
            f"{r['non_embedding_params']:,}",
            str(loss) if r["seeds"] > 1 else f"{loss.value:.3f}",
            f"{r['tokens_per_s']:,.0f}",
            str(icl) if r["seeds"] > 1 else f"{icl.value:.3f}",
        )
    return table
