"""Per-item results, the result of one eval, and metrics with bootstrap confidence intervals."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab._io import write_text_atomic
from alignlab.stats import Estimate, bootstrap, bootstrap_rows

Metrics = dict[str, Estimate]

# Bootstrap settings shared by every eval metric, so intervals are comparable across tasks.
N_BOOT = 2000
BOOT_SEED = 0


@dataclass
class ItemResult:
    """What the model did on one item.

    Attributes:
        id: the item's id (``"file:line"`` for vendored data).
        scores: per-item values that metrics average (e.g. ``{"acc": 1.0, "p_target": 0.62}``).
        choice: index of the highest log-likelihood choice (choice and preference modes).
        target: index of the choice that counts.
        logprobs: log-likelihood of each choice.
        outputs: generated texts (generate mode; several when sampling).
        judge_prompts: the filled judge prompt per output (model-graded tasks).
        meta: the item's metadata, for task metrics and for reading results later.
    """

    id: str
    scores: dict[str, float]
    choice: int | None = None
    target: int | None = None
    logprobs: list[float] | None = None
    outputs: list[str] | None = None
    judge_prompts: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class EvalResult:
    """The outcome of one task on one model.

    Attributes:
        task: task name.
        mode: scoring mode.
        model: what was evaluated (directory, run id or a description).
        metrics: name -> Estimate with a bootstrap 95% CI.
        items: per-item results.
        info: how it was run: prompt format, judge and its prompt, timing, parameter count.
    """

    task: str
    mode: str
    model: str
    metrics: Metrics
    items: list[ItemResult]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, with_items: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "mode": self.mode,
            "model": self.model,
            "n_items": len(self.items),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "info": self.info,
        }
        if with_items:
            out["items"] = [it.to_dict() for it in self.items]
        return out

    def write_items(self, path: str | Path) -> Path:
        """Write the per-item results as JSONL (one object per item), atomically."""
        lines = (json.dumps(it.to_dict(), ensure_ascii=False) + "\n" for it in self.items)
        return write_text_atomic(path, "".join(lines))


def mean_estimate(values: Sequence[float] | np.ndarray) -> Estimate:
    """Mean with a percentile-bootstrap 95% CI (the standard for every per-item average)."""
    return bootstrap(np.asarray(values, dtype=np.float64), np.mean, n_boot=N_BOOT, seed=BOOT_SEED)


def resampled_estimate(n: int, statistic: Callable[[np.ndarray], float]) -> Estimate:
    """Bootstrap CI of a statistic that is not a plain mean (a ratio, a correlation...):
    `alignlab.stats.bootstrap_rows` at the eval settings. ``statistic`` receives an array of row
    indices and computes the statistic over those rows; resamples where it is NaN are dropped.
    """
    return bootstrap_rows(n, statistic, n_boot=N_BOOT, seed=BOOT_SEED)


def mean_metrics(items: Sequence[ItemResult]) -> Metrics:
    """A bootstrap mean for every score name the items carry."""
    names: list[str] = []
    for it in items:
        names += [k for k in it.scores if k not in names]
    out: Metrics = {}
    for name in names:
        vals = [it.scores[name] for it in items if name in it.scores and math.isfinite(it.scores[name])]
        if vals:
            out[name] = mean_estimate(vals)
    return out


def subset_mean(items: Sequence[ItemResult], score: str, key: str, value: Any) -> Estimate | None:
    """Bootstrap mean of ``score`` over the items whose ``meta[key] == value`` (None if none)."""
    vals = [it.scores[score] for it in items if it.meta.get(key) == value and score in it.scores]
    return mean_estimate(vals) if vals else None


def as_table_rows(metrics: Mapping[str, Estimate]) -> list[tuple[str, str, str]]:
    """``(name, "value [lo, hi]", n)`` rows for display."""
    return [(k, str(v), str(v.n)) for k, v in metrics.items()]
