"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every result alignlab stores beside the database (study caches, eval results, reports' JSON)
goes through here, so an interrupted process cannot leave a truncated file that a later resume
would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_json_atomic(path: str | Path, data: Any, **dumps_kwargs: Any) -> Path:
    """`write_text_atomic` of ``json.dumps(data, **dumps_kwargs)`` plus a trailing newline."""
    return write_text_atomic(path, json.dumps(data, **dumps_kwargs) + "\n")
