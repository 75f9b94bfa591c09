"""Shared timing for the benchmarks: calibrated ABBA-interleaved rounds and a paired ratio CI."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from alignlab.stats import bootstrap


def calibrate(fn: Callable[[], Any], target_s: float) -> int:
    """Calls per round so that a round lasts about target_s."""
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-4)
    return max(1, round(target_s / one))


def interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, rounds: int, units_per_call: float
) -> dict[str, dict[str, Any]]:
    """ABBA-interleaved rounds; per side: median wall rate, best rate, rate per CPU-second."""
    names = list(fns)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                fns[n]()
            walls[n].append(time.perf_counter() - w0)
            cpus[n].append(time.process_time() - c0)
    out = {}
    for n in names:
        units = units_per_call * reps
        rates = [units / w for w in walls[n]]
        med = statistics.median(rates)
        out[n] = {
            "rate_median": med,
            "rate_best": max(rates),
            "rate_spread": [min(rates), max(rates)],
            "rates": rates,
            "rate_per_cpu_s": units * rounds / sum(cpus[n]),
            "cpu_share": sum(cpus[n]) / sum(walls[n]),
            "reps_per_round": reps,
        }
    return out


def ratio_ci(a_rates: list[float], b_rates: list[float]) -> list[float]:
    """95% bootstrap interval of median(a) / median(b), resampling whole ABBA rounds (paired)."""
    a, b = np.asarray(a_rates), np.asarray(b_rates)

    def stat(idx: np.ndarray) -> float:
        i = idx.astype(int)
        return float(np.median(a[i]) / np.median(b[i]))

    est = bootstrap(np.arange(len(a), dtype=float), stat, n_boot=2000, seed=0)
    return [est.lo, est.hi]
