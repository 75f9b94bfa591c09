"""Run a grid of training configs, reusing finished runs: a local process pool, or Ray.

On a 2-core machine two one-thread processes beat one two-thread process for models under ~1M
parameters (benchmarks/RESULTS.md), so the pool defaults to one worker per core with each run's
own thread setting (`TrainConfig.threads`, 0 = automatic).

Ray (``--backend ray``, the optional ``ray`` extra) is for users who outgrow one machine: every
run is one Ray task that trains through the shared store, so the store folder must be on a file
system every node sees. Without an address a private instance is started that listens on
loopback only and requires a fresh Ray auth token (`alignlab.scaling._ray`).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

from alignlab.errors import ConfigError
from alignlab.model.config import SIZES
from alignlab.scaling._ray import import_ray, local_ray
from alignlab.store import Run, Store
from alignlab.train.config import TrainConfig
from alignlab.train.preflight import preflight
from alignlab.train.run import train_run

Backend = Literal["process", "ray"]


def grid(
    base: TrainConfig,
    sizes: Sequence[str],
    tokens: Sequence[float] = (),
    seeds: int = 1,
) -> list[TrainConfig]:
    """sizes x data budgets x seeds over ``base``; a budget of D tokens sets
    ``steps = ceil(D / (batch_size * seq_len))`` (empty ``tokens`` keeps ``base.steps``)."""
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ConfigError(f"unknown sizes {unknown}; the family is {', '.join(SIZES)}")
    if seeds <= 0:
        raise ConfigError(f"seeds must be positive, got {seeds}")
    per_step = base.batch_size * base.seq_len
    budgets = [math.ceil(d / per_step) for d in tokens] or [base.steps]
    if any(b <= 0 for b in budgets):
        raise ConfigError("token budgets must be positive")
    return [
        base.replace(model=SIZES[size], steps=steps, seed=seed)
        for size in sizes
        for steps in budgets
        for seed in range(seeds)
    ]


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
    backend: Backend = "process",
    ray_address: str | None = None,
) -> list[Run]:
    """Train every config (in parallel), returning runs in the order of ``configs``.

    Runs already finished in the store are returned without training; a sweep interrupted
    halfway resumes where each run stopped.

    Example:
        >>> cfgs = [train_preset(f"induction-{s}") for s in ("al-10k", "al-30k")]
        >>> runs = sweep(cfgs, Store())
    """
    # Every cell is checked (task, device, memory) before the first run's row is written: a sweep
    # with one impossible cell is refused up front, not after training the others.
    for cfg in configs:
        preflight(cfg)
    n = workers or default_workers(configs)
    root = str(Path(store.root).resolve())
    if backend == "ray":
        return _ray_sweep(configs, store, root, n, on_done, ray_address)
    if backend != "process":
        raise ConfigError(f"unknown backend {backend!r}; use process or ray")
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


def _ray_sweep(
    configs: Sequence[TrainConfig],
    store: Store,
    root: str,
    workers: int,
    on_done: Callable[[TrainConfig, Run], None] | None,
    address: str | None,
) -> list[Run]:
    running = sys.modules.get("ray")
    if address is None and not (running is not None and running.is_initialized()):
        with local_ray(workers) as ray:
            ids = _ray_map(ray, configs, root)
    else:
        # A cluster the user started (or an instance this process already runs): its binding
        # and token are the user's (README, Ray).
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            ids = _ray_map(ray, configs, root)
        finally:
            if started_here:
                ray.shutdown()
    runs = [store.get(i) for i in ids]
    if on_done:
        for cfg, run in zip(configs, runs, strict=True):
            on_done(cfg, run)
    return runs


def _ray_map(ray: Any, configs: Sequence[TrainConfig], root: str) -> list[str]:
    remote = ray.remote(num_cpus=1)(_worker)
    return list(ray.get([remote.remote(cfg.to_dict(), root) for cfg in configs]))
