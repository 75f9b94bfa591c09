"""Reading evaluation data: JSONL files (plain or gzipped) checked against a small schema.

A malformed row raises `DataError` naming the file, the 1-based line and the problem, so a bad
edit to a data file is found at load time rather than as a wrong number later.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.evals.vendor import DATA_DIR, MANIFEST

__all__ = ["DataError", "Field", "Row", "data_path", "read_jsonl"]


class DataError(AlignlabError, ValueError):
    """An evaluation data file that is missing, corrupt or does not match its schema."""


@dataclass(frozen=True)
class Field:
    """One expected field of a row.

    Attributes:
        name: the JSON key.
        types: accepted Python types (``bool`` is never accepted as a number).
        check: an extra test on the value; returns a problem description, or None if fine.
        required: a missing key is an error (otherwise the key may be absent).
    """

    name: str
    types: tuple[type, ...]
    check: Callable[[Any], str | None] | None = None
    required: bool = True


@dataclass(frozen=True)
class Row:
    """A validated row and where it came from (``where`` is ``"file:line"``)."""

    data: Mapping[str, Any]
    where: str


def data_path(rel: str) -> Path:
    """Path of a vendored data file, e.g. ``"bbq/data/Religion.jsonl.gz"``."""
    return DATA_DIR / rel


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    try:
        files: dict[str, Any] = json.loads((DATA_DIR / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{DATA_DIR / MANIFEST} is missing or corrupt ({e}); reinstall alignlab") from None
    return files


def _display(path: Path) -> str:
    try:
        return path.relative_to(DATA_DIR.parent.parent).as_posix()
    except ValueError:
        return str(path)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read eval data file {path}: {e.strerror or e}") from None
    try:
        rel = path.resolve().relative_to(DATA_DIR).as_posix()
    except ValueError:
        rel = None
    # Vendored files are checked against the manifest: a truncated or edited copy is reported as
    # such instead of surfacing as a confusing parse error.
    expected = _manifest().get(rel or "", {}).get("sha256")
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise DataError(
            f"{_display(path)}: contents differ from {MANIFEST} (corrupt or edited); "
            "restore it with `python -m alignlab.evals.vendor SOURCE_DIR`"
        )
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{_display(path)}: not a valid gzip file ({e})") from None
    return raw


def _type_name(types: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_row(obj: Any, schema: tuple[Field, ...]) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for f in schema:
        if f.name not in obj:
            if f.required:
                return f"missing field {f.name!r}"
            continue
        value = obj[f.name]
        ok = isinstance(value, f.types) and not (isinstance(value, bool) and bool not in f.types)
        if not ok:
            return f"field {f.name!r} must be {_type_name(f.types)}, got {json.dumps(value)[:60]}"
        if f.check is not None:
            problem = f.check(value)
            if problem:
                return f"field {f.name!r}: {problem}"
    return None


def iter_jsonl(
    path: str | Path,
    schema: tuple[Field, ...] = (),
    row_check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Iterator[Row]:
    """Validated rows of a JSONL file (``.gz`` is decompressed); blank lines are skipped.

    Raises:
        DataError: unreadable file, invalid JSON or UTF-8, or a row that breaks ``schema`` or
            ``row_check``; the message names the file and the line.
    """
    path = Path(path)
    name = _display(path)
    text = _read_bytes(path)
    for lineno, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except UnicodeDecodeError as e:
            raise DataError(f"{name}:{lineno}: not valid UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        problem = _check_row(obj, schema)
        if problem is None and row_check is not None:
            problem = row_check(obj)
        if problem:
            raise DataError(f"{name}:{lineno}: {problem}")
        yield Row(obj, f"{name}:{lineno}")


def read_jsonl(
    path: str | Path,
    schema: tuple[Field, ...] = (),
    row_check: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> list[Row]:
    """All validated rows of a JSONL file; see `iter_jsonl`.

    Example:
        >>> rows = read_jsonl(data_path("bbq/data/Religion.jsonl.gz"), BBQ_SCHEMA)
        >>> rows[0].where
        'alignlab/data/bbq/data/Religion.jsonl.gz:1'
    """
    rows = list(iter_jsonl(path, schema, row_check))
    if not rows:
        raise DataError(f"{_display(Path(path))}: no rows")
    return rows


def non_empty(value: Any) -> str | None:
    return "must not be empty" if not str(value).strip() else None
