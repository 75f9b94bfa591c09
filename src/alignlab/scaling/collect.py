"""Pull one metric per run out of the store, as (scale, value) points ready to fit.

Any metric the store holds works — a training run's final ``eval_loss`` or ``icl_improvement``,
an organism's persistence, a probe AUROC — because every producer writes the same metrics table.
"""

from __future__ import annotations

import math
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


class Points(list[Point]):
    """What `collect` returns: the points, sorted by size, data and seed, plus ``excluded``.

    Attributes:
        excluded: run id -> why it was left out (not finished, failed and where, a non-finite
            value, ...), so a fit can say which runs it did not use.
    """

    def __init__(self, points: Sequence[Point] = (), excluded: dict[str, str] | None = None) -> None:
        super().__init__(points)
        self.excluded: dict[str, str] = dict(excluded or {})


def collect(
    store: Store,
    metric: str,
    *,
    kind: str | None = "train",
    task: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> Points:
    """Final value of ``metric`` for every finished run (optionally filtered).

    Runs of the asked kind and task that did not finish, failed (e.g. diverged), or report a
    non-finite value are left out and named, with the reason, in ``Points.excluded``; runs named
    in ``run_ids`` are also named when they do not report ``metric``.

    Raises:
        ConfigError: no run is left to give a point; the message names the excluded runs.
        StoreError: a run id in ``run_ids`` is unknown or ambiguous.

    Example:
        >>> points = collect(Store(), "eval_loss", task="induction")
        >>> fit_kaplan([p.non_embedding for p in points], [p.value for p in points])
        >>> points.excluded  # {'98463e7c90100188': 'failed (diverged at step 2)'}
    """
    explicit = bool(run_ids)
    runs: list[Run] = [store.get(r) for r in run_ids] if run_ids else store.runs(kind=kind)
    points: list[Point] = []
    excluded: dict[str, str] = {}
    for run in runs:
        cfg = run.config
        if task is not None and cfg.get("task") != task:
            if explicit:
                excluded[run.id] = f"task {cfg.get('task')!r}, not {task!r}"
            continue
        model = cfg.get("model")
        if not isinstance(model, dict):
            if explicit:
                excluded[run.id] = f"a {run.kind!r} run with no model config"
            continue
        values = store.latest_metrics(run.id)
        if run.status != "done":
            excluded[run.id] = _not_done(run, values)
            continue
        if metric not in values:
            if explicit:
                excluded[run.id] = f"reports no {metric!r}"
            continue
        value = float(values[metric])
        if not math.isfinite(value):
            excluded[run.id] = f"{metric} is {value}"
            continue
        counts = ModelConfig.from_dict(model).param_counts()
        points.append(
            Point(
                run_id=run.id,
                params=counts["total"],
                non_embedding=counts["non_embedding"],
                tokens=_tokens(cfg),
                seed=int(cfg.get("seed", 0)),
                value=value,
            )
        )
    if not points:
        where = f" for task {task!r}" if task else ""
        left_out = f" (left out: {describe_excluded(excluded)})" if excluded else ""
        raise ConfigError(
            f"no finished runs in the store report {metric!r}{where}{left_out}; train some first "
            "(`alignlab sweep ...`) or check the name with `alignlab show RUN`"
        )
    return Points(sorted(points, key=lambda p: (p.params, p.tokens, p.seed)), excluded)


def describe_excluded(excluded: dict[str, str]) -> str:
    """``"<id> (<why>), ..."`` on one line."""
    return ", ".join(f"{rid} ({why})" for rid, why in excluded.items())


def _not_done(run: Run, values: dict[str, float]) -> str:
    if run.status == "failed" and "diverged_at_step" in values:
        return f"failed: diverged at step {int(values['diverged_at_step'])}"
    return run.status
