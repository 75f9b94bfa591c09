"""tune_allocator: glibc thresholds that stop run_with_cache re-faulting freed memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys, torch
from alignlab.model import SIZES, Transformer, tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
torch.set_num_threads(1)
model = Transformer(SIZES["al-30k"]).eval()
tokens = torch.randint(0, 128, (16, 128))
with torch.no_grad():
    model.run_with_cache(tokens)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model.run_with_cache(tokens)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) // 3)
"""


def _faults_per_call(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tuned_allocator_stops_refaulting_freed_memory() -> None:
    default, tuned = _faults_per_call("default"), _faults_per_call("tuned")
    # The cache of one call is ~10 MB (2,400 pages). Measured: 1,900-6,700 minor faults per call
    # with glibc's defaults (how much of the freed heap is handed back varies), 190-215 tuned.
    assert default > 1_000, default
    assert tuned < default / 5, (tuned, default)
