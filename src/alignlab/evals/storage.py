"""Eval results in the run store, and finding a model from a directory or a run id."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from alignlab._io import write_json_atomic
from alignlab.errors import ModelLoadError, StoreError
from alignlab.evals.results import EvalResult
from alignlab.store import Run, Store

ITEMS_FILE = "items.jsonl"
RESULT_FILE = "result.json"


def resolve_model(spec: str, store: Store | None = None) -> tuple[Path, str]:
    """The model directory named by ``spec`` and a stable label for it.

    ``spec`` is a model directory (with ``config.json``), a run folder holding ``model/``, or a run
    id (or unique prefix) in ``store``.

    Raises:
        ModelLoadError: nothing matches, or the run has no model yet.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return path.resolve(), str(path.resolve())
        if (path / "model" / "config.json").exists():
            return (path / "model").resolve(), str((path / "model").resolve())
        raise ModelLoadError(f"{spec} is a directory but holds no model (no config.json)")
    looks_like_id = len(spec) >= 4 and all(c in "0123456789abcdef" for c in spec.lower())
    if not looks_like_id:
        raise ModelLoadError(f"model {spec!r} not found: give a model directory or a run id")
    st = store or Store()
    try:
        run = st.get(spec)
    except StoreError as e:
        raise ModelLoadError(f"model {spec!r} is not a directory, and {e}") from None
    model_dir = run.dir / "model"
    if not (model_dir / "config.json").exists():
        raise ModelLoadError(
            f"run {run.id} ({run.status}) has no model at {model_dir}; wait for it to finish"
        )
    return model_dir, f"run:{run.id}"


def weights_digest(model_dir: Path) -> str | None:
    """SHA-256 (first 16 hex digits) of the weights file, so an eval run names exact weights."""
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        return None
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def log_result(result: EvalResult, store: Store | None = None, extra: dict[str, Any] | None = None) -> Run:
    """Record an eval in the store: an ``"eval"`` run with every metric and the per-item results.

    The run's config is the task, the model, and how it was run (format, limit, seed, judge...),
    so re-running the same eval finds and updates the same run. Per-item results go to
    ``run.dir / "items.jsonl"``, the whole result to ``run.dir / "result.json"``.

    Example:
        >>> run = log_result(evaluate(model, "persona/no-shut-down"), Store(), {"weights": "ab12"})
        >>> Store().metrics(run.id)
    """
    st = store or Store()
    keys = ("format", "limit", "scoring", "temperature", "n_samples", "seed", "judge", "pattern")
    config: dict[str, Any] = {
        "task": result.task,
        "model": result.model,
        **{k: result.info[k] for k in keys if k in result.info},
        **(extra or {}),
    }
    run, _ = st.get_or_create("eval", config)
    st.set_status(run.id, "running")
    try:
        for name, est in result.metrics.items():
            st.log_estimate(run.id, name, est)
        result.write_items(run.dir / ITEMS_FILE)
        write_json_atomic(run.dir / RESULT_FILE, result.to_dict(), indent=2)
    except BaseException:
        st.set_status(run.id, "failed")
        raise
    st.set_status(run.id, "done")
    return run
