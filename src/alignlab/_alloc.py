"""Keep freed CPU memory in the process, so repeated large forwards stop page-faulting.

``run_with_cache`` keeps every activation alive until it returns (at al-300k, B=32, T=128 about
190 MB per call), then frees it all at once. With glibc's defaults the freed top of the heap is
returned to the kernel (trim threshold: twice the largest freed mmap chunk, at most 64 MB), so
the next call faults every page back in, zeroed by the kernel: about half of each call's wall
time on a 2-vCPU KVM guest, for alignlab and TransformerLens alike, and none with the thresholds
below (benchmarks/RESULTS.md, interp_throughput session 2). PyTorch's own CPU tuning guides reach
for jemalloc/tcmalloc for the same reason; this needs no preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger blocks
# are still mapped and unmapped per allocation.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def tune_allocator(trim_threshold: int = TRIM_THRESHOLD, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Ask glibc malloc to keep freed memory instead of returning it to the kernel at once.

    Process-wide and permanent: freed memory up to ``trim_threshold`` bytes stays mapped for
    reuse (the resident size stays near its peak). The ``alignlab`` CLI calls this at start-up;
    call it yourself in a notebook that runs many large ``run_with_cache`` calls. Same effect as
    starting Python with ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` set.

    Args:
        trim_threshold: free bytes at the top of the heap before glibc gives them back.
        mmap_threshold: allocations at least this large get their own mapping (at most 32 MiB).

    Returns:
        True if the settings were applied, False where the C library is not glibc (macOS,
        Windows, musl), where this does nothing.

    Example:
        >>> from alignlab.model import tune_allocator
        >>> tune_allocator()  # doctest: +SKIP
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl exports a no-op that returns 0.
    ok = bool(mallopt(_M_MMAP_THRESHOLD, min(mmap_threshold, MMAP_THRESHOLD)))
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and ok
