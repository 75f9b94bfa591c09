"""Run fits with single-threaded BLAS.

Every fit here does thousands of tiny linear-algebra calls (L-BFGS-B's updates, 2x2 solves).
Multithreaded OpenBLAS gains nothing on such sizes and, on a shared 2-core machine, its
spinning threads slowed a Chinchilla fit 30x in our measurements (0.04 s -> 1.6 s per L-BFGS
run). ``threadpoolctl`` (a dependency of scikit-learn, usually present) caps BLAS at one
thread for the duration of a fit; without it the fits still work, only slower under load.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def single_thread_blas(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a fit so that its BLAS calls use one thread (no-op without threadpoolctl)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            return fn(*args, **kwargs)
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper
