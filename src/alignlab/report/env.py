"""The environment a report was made in and the one its runs recorded."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import alignlab

_RECORDED = ("torch", "threads", "machine", "device", "wall_seconds", "tokens_per_s")


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the alignlab checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(alignlab.__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def current() -> dict[str, Any]:
    """Versions, device and threads of the process making the report."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "alignlab": alignlab.__version__,
        "git_commit": git_commit() or "not a git checkout",
        "torch": torch.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def recorded(summary: dict[str, Any]) -> dict[str, Any]:
    """The environment fields a training run's ``summary.json`` recorded."""
    return {k: summary[k] for k in _RECORDED if k in summary}
