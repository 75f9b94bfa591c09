"""SQLite plumbing for the run store: connections, schema, lock retries, readable errors."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alignlab.errors import StoreError

T = TypeVar("T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
# Total time to keep retrying a locked database on top of SQLite's own busy wait.
RETRY_DEADLINE_S = 120.0

FIX_HINT = "pass --store DIR or set ALIGNLAB_STORE to a writable folder"

_SCHEMA = """
CREATE TABLE runs (
    id      TEXT PRIMARY KEY,
    kind    TEXT NOT NULL,
    name    TEXT,
    status  TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    config  TEXT NOT NULL,
    recipe  TEXT,
    version TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX runs_created ON runs (created);
-- One table for plain metrics and Estimates: lo/hi/n/method are NULL for plain metrics.
-- SQLite stores NaN as NULL, so a NULL value (or NULL lo/hi of an Estimate) reads back as NaN.
-- step is NULL for a run's final Estimates, which belong to no training step.
CREATE TABLE metrics (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step    INTEGER,
    name    TEXT NOT NULL,
    value   REAL,
    lo      REAL,
    hi      REAL,
    n       INTEGER,
    method  TEXT,
    tokens  INTEGER,
    logged  REAL NOT NULL,
    UNIQUE (run_id, name, step)
);
"""
_TABLES = {"runs", "metrics"}


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; callers open transactions explicitly."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL is safe in WAL mode: a power cut can lose the last commits, never corrupt.
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path) from exc
    return conn


def initialise(conn: sqlite3.Connection, path: Path) -> None:
    """Check that ``path`` is an alignlab store (creating the schema in an empty file).

    Reads before it writes, so a corrupt or foreign file raises before anything touches it.
    """

    def check_and_create() -> None:
        # The first read parses the file header: this is where a corrupt file fails.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            _ensure_wal(conn)
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store {path} was written by a newer alignlab (schema {version}, this "
                f"one reads {SCHEMA_VERSION}); upgrade alignlab or {FIX_HINT}"
            )
        _refuse_foreign(conn, path)
        # Switching to WAL cannot happen inside a transaction, so it precedes the schema.
        _ensure_wal(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have created it meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                _refuse_foreign(conn, path)
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    retry(check_and_create, path)


def _ensure_wal(conn: sqlite3.Connection) -> None:
    # journal_mode is stored in the file, so this only writes the first time.
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if tables and not tables <= _TABLES:
        raise StoreError(
            f"{path} is an SQLite database but not an alignlab run store (it has tables "
            f"{', '.join(sorted(tables))}); move it aside or {FIX_HINT}"
        )


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def retry(fn: Callable[[], T], path: Path) -> T:
    """Run ``fn``, retrying while the database is locked; other SQLite errors become StoreError.

    SQLite's busy timeout covers most waits, but some lock conflicts (WAL recovery, a snapshot
    gone stale) return "locked" at once, so those are retried here with jittered backoff.
    """
    deadline = time.monotonic() + RETRY_DEADLINE_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                raise translate(exc, path) from exc
        except sqlite3.Error as exc:
            raise translate(exc, path) from exc
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


def _is_lock_error(exc: sqlite3.Error) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def translate(exc: sqlite3.Error, path: Path) -> StoreError:
    """A one-sentence StoreError for an SQLite error on the database at ``path``."""
    message = str(exc)
    lowered = message.lower()
    if _is_lock_error(exc):
        return StoreError(
            f"the run store {path} stayed locked for over {RETRY_DEADLINE_S:.0f} s; another "
            "process may be stuck holding it: stop that process and retry"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return StoreError(
            f"the run store database {path} is corrupt or not an SQLite file ({message}); "
            f"it was left untouched: move it aside, or {FIX_HINT}"
        )
    if "full" in lowered:
        return StoreError(f"the disk holding the run store {path} is full; free space or {FIX_HINT}")
    if "readonly" in lowered or "unable to open" in lowered or "i/o" in lowered:
        return StoreError(f"cannot write the run store at {path}: {message}; {FIX_HINT}")
    return StoreError(f"the run store {path} failed: {message}")
