"""Pull one metric per run out of the store, as (scale, value) points ready to fit.

Any metric the store holds works — a training run's final ``eval_loss`` or ``icl_improvement``,
an organism's persistence, a probe AUROC — because every producer writes the same metrics table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alignlab.errors import ConfigError
from alignlab.model.config import ModelConfig
from alignlab.store import Run, Store

XAxis = Literal["params", "non_embedding", "tokens", "flops"]


@dataclass(frozen=True)
class Point:
    """One run's value of a metric, at its model size and data budget."""

    run_id: str
    params: int
    non_embedding: int
    tokens: int
    seed: int
    value: float

    def x(self, axis: XAxis) -> float:
        if axis == "flops":
            # C ~ 6 N D (Kaplan et al. 2020), with N the non-embedding count.
            return 6.0 * self.non_embedding * self.tokens
        return float(getattr(self, axis))


def _tokens(cfg: dict[str, Any]) -> int:
    return int(cfg.get("steps", 0)) * int(cfg.get("batch_size", 0)) * int(cfg.get("seq_len", 0))


def collect(
    store: Store,
    metric: str,
    *,
    kind: str | None = "train",
    task: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> list[Point]:
    """Final value of ``metric`` for every finished run (optionally filtered).

    Example:
        >>> points = collect(Store(), "eval_loss", task="induction")
        >>> fit_kaplan([p.non_embedding for p in points], [p.value for p in points])
    """
    runs: list[Run]
    runs = [store.get(r) for r in run_ids] if run_ids else store.runs(kind=kind, status="done")
    points = []
    for run in runs:
        cfg = run.config
        if task is not None and cfg.get("task") != task:
            continue
        model = cfg.get("model")
        if not isinstance(model, dict):
            continue
        values = store.latest_metrics(run.id)
        if metric not in values:
            continue
        counts = ModelConfig.from_dict(model).param_counts()
        points.append(
            Point(
                run_id=run.id,
                params=counts["total"],
                non_embedding=counts["non_embedding"],
                tokens=_tokens(cfg),
                seed=int(cfg.get("seed", 0)),
                value=float(values[metric]),
            )
        )
    if not points:
        where = f" for task {task!r}" if task else ""
        raise ConfigError(
            f"no finished runs in the store report {metric!r}{where}; train some first "
            "(`alignlab sweep ...`) or check the name with `alignlab show RUN`"
        )
    return sorted(points, key=lambda p: (p.params, p.tokens, p.seed))
