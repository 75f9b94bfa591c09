"""Run many training configs, reusing finished runs, on a local process pool.

On a 2-core machine two one-thread processes beat one two-thread process for models under ~1M
parameters (benchmarks/RESULTS.md), so the pool defaults to one worker per core with each run's
own thread setting (`TrainConfig.threads`, 0 = automatic).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from alignlab.store import Run, Store
from alignlab.train.config import TrainConfig
from alignlab.train.run import train_run


def _worker(cfg_dict: dict, root: str) -> str:
    cfg = TrainConfig.from_dict(cfg_dict)
    run, _ = train_run(cfg, Store(root), progress=False)
    return run.id


def default_workers(configs: Sequence[TrainConfig]) -> int:
    """One process per core, each single-threaded, unless runs want more threads than that."""
    cores = os.cpu_count() or 1
    threads = max((c.resolved_threads() for c in configs), default=1)
    return max(1, min(len(configs), cores // max(threads, 1)))


def sweep(
    configs: Sequence[TrainConfig],
    store: Store,
    workers: int | None = None,
    on_done: Callable[[TrainConfig, Run], None] | None = None,
) -> list[Run]:
    """Train every config (in parallel), returning runs in the order of ``configs``.

    Runs already finished in the store are returned without training; a sweep interrupted
    halfway resumes where each run stopped.

    Example:
        >>> cfgs = [train_preset(f"induction-{s}") for s in ("al-10k", "al-30k")]
        >>> runs = sweep(cfgs, Store())
    """
    n = workers or default_workers(configs)
    root = str(Path(store.root).resolve())
    results: dict[int, Run] = {}
    if n <= 1:
        for i, cfg in enumerate(configs):
            results[i], _ = train_run(cfg, store, progress=False)
            if on_done:
                on_done(cfg, results[i])
        return [results[i] for i in range(len(configs))]
    # spawn, not fork: forking a process that already ran torch can deadlock its thread pools.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = {pool.submit(_worker, cfg.to_dict(), root): i for i, cfg in enumerate(configs)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = store.get(fut.result())
            if on_done:
                on_done(configs[i], results[i])
    return [results[i] for i in range(len(configs))]
