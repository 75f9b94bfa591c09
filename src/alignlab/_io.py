"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file alignlab stores beside the database (study caches, eval results and items, reports,
plots, SAE weights) goes through here, so an interrupted process cannot leave a truncated file
that a later resume would trust. (Checkpoints and exported model directories are written into a
temporary directory that is renamed whole: `alignlab.train.checkpoint`, `alignlab.model.hf`.)
"""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The temporary file is created with the process's umask, like a plain ``open(path, "wb")``
    (``tempfile.mkstemp`` would make every result owner-only).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_bytes_atomic` of ``text`` in UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, **dumps_kwargs: Any) -> Path:
    """`write_text_atomic` of ``json.dumps(data, **dumps_kwargs)`` plus a trailing newline."""
    return write_text_atomic(path, json.dumps(data, **dumps_kwargs) + "\n")


def save_figure_atomic(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` (a matplotlib Figure) rendered in memory, then `write_bytes_atomic`.

    The format is ``savefig_kwargs["format"]`` if given, else the path's suffix, as
    ``savefig(path)`` would choose.
    """
    fmt = savefig_kwargs.pop("format", None) or Path(path).suffix.lstrip(".") or None
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    return write_bytes_atomic(path, buf.getvalue())
