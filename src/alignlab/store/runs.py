"""The run store: one SQLite database of runs and their metrics, plus a folder per run."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from alignlab._io import write_json_atomic
from alignlab.errors import StoreError
from alignlab.store import _db
from alignlab.store.ids import canonical_json, current_version, run_id

if TYPE_CHECKING:
    # Type-only: the store stays free of numpy, which alignlab.stats imports.
    from alignlab.stats import Estimate

T = TypeVar("T")

Status = Literal["pending", "running", "done", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)

DEFAULT_ROOT = "alignlab-runs"
ENV_VAR = "ALIGNLAB_STORE"
DB_NAME = "store.sqlite"
_MIN_PREFIX = 4
_LIST_HINT = "list runs with `alignlab runs`"

# Connections inherited across fork() are parked here instead of being closed: closing them in the
# child could disturb the parent's use of the same SQLite file.
_INHERITED: list[sqlite3.Connection] = []


@dataclass
class Run:
    """One run: what was run (config), its state, and where its artifacts live.

    Attributes:
        id: 16 hex digits from :func:`alignlab.store.run_id`.
        kind: what sort of run, e.g. ``"train"`` or ``"eval"``.
        config: the config as stored (canonical JSON decoded: tuples read back as lists).
        status: ``"pending"``, ``"running"``, ``"done"`` or ``"failed"``.
        dir: the run's artifact folder; the model lives at ``dir / "model"``.
        created: creation time (Unix seconds).
        updated: time of the last status change or logged metric.
        name: optional human label.
        recipe: the recipe the id was computed with, if any.
        version: alignlab version the id was computed with.
    """

    id: str
    kind: str
    config: dict[str, Any]
    status: Status
    dir: Path
    created: float
    updated: float
    name: str | None = None
    recipe: dict[str, Any] | None = None
    version: str | None = None


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = -1


class Store:
    """The run store at ``root``: ``root/store.sqlite`` plus ``root/runs/<run_id>/``.

    Safe to share between processes (SQLite WAL mode; writes are short transactions that wait
    for each other) and between threads (one connection per thread).

    Args:
        root: store folder; defaults to ``$ALIGNLAB_STORE``, else ``./alignlab-runs``. Created if
            missing.

    Raises:
        StoreError: the folder cannot be created or written, or the database is corrupt, foreign
            or from a newer alignlab (an existing database is never replaced).

    Example:
        >>> store = Store("/tmp/demo-store")
        >>> run, created = store.get_or_create("train", {"size": "s", "steps": 1000})
        >>> store.log_metrics(run.id, step=10, values={"loss": 2.31}, tokens=40960)
        >>> store.set_status(run.id, "done")
        >>> store.latest_metrics(run.id)
        {'loss': 2.31}
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
        self.root = Path(root).expanduser().absolute()
        self.path = self.root / DB_NAME
        self._runs_dir = self.root / "runs"
        self._local = _Local()
        _mkdir(self.root, self.root)
        try:
            _db.initialise(self._conn(), self.path)
        except BaseException:
            self.close()
            raise
        _mkdir(self._runs_dir, self.root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection (the store reopens it on next use)."""
        conn, self._local.conn = self._local.conn, None
        if conn is not None and self._local.pid == os.getpid():
            conn.close()

    # ---- runs ----------------------------------------------------------------------------

    def get_or_create(
        self,
        kind: str,
        config: Mapping[str, Any],
        recipe: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> tuple[Run, bool]:
        """The run for ``config`` (and ``recipe``), created as ``pending`` if it is new.

        Atomic across processes: when several race on the same config, exactly one creates the
        row and the others get it back with ``created=False``. The run folder is created too.

        Args:
            kind: what sort of run, e.g. ``"train"``.
            config: what is run; its canonical form gives the id (see :func:`run_id`).
            recipe: how it is run, when kept apart from the config.
            name: a label stored on creation; an existing run keeps its label.

        Returns:
            ``(run, created)``.

        Raises:
            StoreError: a run with this id exists with a different kind.
            ConfigError: the config holds a value that cannot be canonicalised.
        """
        rid = run_id(config, recipe)
        config_json = canonical_json(config)
        recipe_json = None if recipe is None else canonical_json(recipe)
        version = current_version()

        def insert(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO runs (id, kind, name, status, config, recipe, version, created, "
                "updated) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (rid, kind, name, config_json, recipe_json, version, now, now),
            )
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
            if row["kind"] != kind:
                raise StoreError(
                    f"run {rid} already exists as a {row['kind']!r} run with this exact config, "
                    f"so it cannot also be a {kind!r} run; change the config or recipe"
                )
            return row, cur.rowcount == 1

        row, created = self._write(insert)
        run = self._to_run(row)
        _mkdir(run.dir, self.root)
        return run, created

    def cached_json(
        self,
        kind: str,
        config: Mapping[str, Any],
        filename: str,
        compute: Callable[[Run], Any],
        *,
        recipe: Mapping[str, Any] | None = None,
        name: str | None = None,
        indent: int | None = None,
    ) -> tuple[Any, Run]:
        """``compute``'s JSON result, stored as ``filename`` in the run for ``config``.

        Reruns reuse finished work: a ``done`` run whose file exists is read back and ``compute``
        is not called, so a study can be interrupted and resumed cell by cell. Otherwise the run
        is marked ``running``, ``compute(run)`` runs (it may write its own artefacts into
        ``run.dir``), its value is written atomically (a reader never sees half a file) and the
        run is marked ``done``. If ``compute`` or the write raises, the run is marked ``failed``
        and the error re-raised; the next call computes again. A file is written only when the
        run is not yet ``done``, so nothing a finished run stored is overwritten.

        Args:
            kind: the run's kind, as for `get_or_create`.
            config: what is computed; with ``recipe`` it gives the run id (see `get_or_create`).
            filename: the JSON file's name inside ``run.dir``.
            compute: called with the run; returns a JSON-able value.
            recipe: as for `get_or_create`.
            name: as for `get_or_create`.
            indent: ``json.dumps`` indent of the stored file (None: one line).

        Returns:
            ``(result, run)``: the computed value, or on a finished run the stored JSON decoded
            (tuples read back as lists); ``run.status`` is ``"done"``.

        Raises:
            StoreError: as `get_or_create`.
            BaseException: whatever ``compute`` raised (the run is then ``failed``).

        Example:
            >>> def cell(run):
            ...     return {"accuracy": 0.75}
            >>> result, run = store.cached_json("cell", {"seed": 0}, "cell.json", cell)
            >>> result
            {'accuracy': 0.75}
        """
        run, _ = self.get_or_create(kind, config, recipe, name=name)
        path = run.dir / filename
        if run.status == "done" and path.exists():
            return json.loads(path.read_text()), run
        self.set_status(run.id, "running")
        try:
            result = compute(run)
            write_json_atomic(path, result, indent=indent)
        except BaseException:
            self.set_status(run.id, "failed")
            raise
        self.set_status(run.id, "done")
        run.status = "done"
        return result, run

    def get(self, run_id_or_prefix: str) -> Run:
        """The run whose id is, or uniquely starts with, ``run_id_or_prefix`` (4+ characters).

        Raises:
            StoreError: the prefix is too short, matches no run, or matches several.
        """
        prefix = run_id_or_prefix.strip().lower()
        if len(prefix) < _MIN_PREFIX:
            raise StoreError(
                f"run id prefix {run_id_or_prefix!r} is too short; give at least {_MIN_PREFIX} "
                f"characters ({_LIST_HINT})"
            )
        rows: list[sqlite3.Row] = []
        if all(c in "0123456789abcdef" for c in prefix):  # also keeps GLOB wildcards out
            rows = self._read(
                lambda conn: conn.execute(
                    "SELECT * FROM runs WHERE id GLOB ? ORDER BY id LIMIT 6", (prefix + "*",)
                ).fetchall()
            )
        if not rows:
            raise StoreError(f"no run matches {run_id_or_prefix!r} in the store at {self.root}; {_LIST_HINT}")
        if len(rows) > 1:
            shown = ", ".join(r["id"] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise StoreError(
                f"run id prefix {run_id_or_prefix!r} is ambiguous: it matches {shown}; "
                f"give more characters ({_LIST_HINT})"
            )
        return self._to_run(rows[0])

    def runs(self, kind: str | None = None, status: Status | None = None) -> list[Run]:
        """All runs, newest first, optionally only those of one ``kind`` and/or ``status``."""
        if status is not None:
            _check_status(status)
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT * FROM runs WHERE (?1 IS NULL OR kind = ?1) "
                "AND (?2 IS NULL OR status = ?2) ORDER BY created DESC, id",
                (kind, status),
            ).fetchall()
        )
        return [self._to_run(row) for row in rows]

    def set_status(self, run_id: str, status: Status) -> None:
        """Set a run's status (``run_id`` must be the full id).

        Raises:
            ValueError: ``status`` is not one of the four statuses.
            StoreError: no run has this id.
        """
        _check_status(status)

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE id = ?",
                (status, time.time(), run_id),
            )
            if cur.rowcount == 0:
                raise self._unknown(run_id)

        self._write(update)

    # ---- metrics -------------------------------------------------------------------------

    def log_metrics(
        self,
        run_id: str,
        step: int,
        values: Mapping[str, float],
        tokens: int | None = None,
    ) -> None:
        """Record ``values`` at ``step`` in one transaction, one row per name.

        Logging a name again at the same step replaces the earlier value.

        Args:
            run_id: full id of the run.
            step: training step (or any integer x-axis).
            values: metric name to number; anything ``float()`` accepts, NaN included.
            tokens: tokens seen so far, stored with every row.

        Raises:
            ValueError: a name is not a string, a value is not a number, or ``step``/``tokens``
                is not an integer.
            StoreError: no run has this id.
        """
        step = _check_int("step", step)
        tokens = None if tokens is None else _check_int("tokens", tokens)
        rows = []
        for metric, value in values.items():
            _check_name(metric)
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metric {metric!r} is not a number: {value!r}") from exc
            rows.append((run_id, step, metric, number, tokens))
        if not rows:
            return

        def insert(conn: sqlite3.Connection) -> None:
            now = self._touch(conn, run_id)
            conn.executemany(
                "INSERT INTO metrics (run_id, step, name, value, tokens, logged) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name, step) DO UPDATE SET "
                "value = excluded.value, lo = NULL, hi = NULL, n = NULL, method = NULL, "
                "tokens = excluded.tokens, logged = excluded.logged",
                [(*row, now) for row in rows],
            )

        self._write(insert)

    def log_estimate(self, run_id: str, name: str, est: Estimate, step: int | None = None) -> None:
        """Record an Estimate under ``name``, at ``step`` or, with no step, as a final result.

        An earlier Estimate or metric with the same name and step (or the same name and no
        step) is replaced.

        Raises:
            ValueError: ``name`` is not a non-empty string or ``step`` is not an integer.
            StoreError: no run has this id.
        """
        _check_name(name)
        step = None if step is None else _check_int("step", step)
        fields = (float(est.value), float(est.lo), float(est.hi), int(est.n), str(est.method))

        def insert(conn: sqlite3.Connection) -> None:
            now = self._touch(conn, run_id)
            if step is None:
                # UNIQUE treats NULL steps as distinct, so replace final results by hand.
                conn.execute(
                    "DELETE FROM metrics WHERE run_id = ? AND name = ? AND step IS NULL",
                    (run_id, name),
                )
            conn.execute(
                "INSERT INTO metrics (run_id, step, name, value, lo, hi, n, method, logged) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name, step) DO UPDATE "
                "SET value = excluded.value, lo = excluded.lo, hi = excluded.hi, n = excluded.n, "
                "method = excluded.method, tokens = NULL, logged = excluded.logged",
                (run_id, step, name, *fields, now),
            )

        self._write(insert)

    def metrics(self, run_id: str, name: str | None = None) -> list[dict[str, Any]]:
        """A run's metric rows, by step (final results last), optionally for one ``name``.

        Each row is a dict with ``step, name, value, lo, hi, n, method, tokens``; ``lo``, ``hi``,
        ``n`` and ``method`` are None for plain metrics, and ``step`` is None for final
        Estimates. ``Estimate.from_dict(row)`` rebuilds an Estimate row.

        Raises:
            StoreError: no run has this id.
        """

        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            self._check_exists(conn, run_id)
            return conn.execute(
                "SELECT step, name, value, lo, hi, n, method, tokens FROM metrics "
                "WHERE run_id = ?1 AND (?2 IS NULL OR name = ?2) "
                "ORDER BY step IS NULL, step, name, id",
                (run_id, name),
            ).fetchall()

        return [_metric_row(row) for row in self._read(select)]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric's value at its highest step (a final, step-less result counts as latest).

        Raises:
            StoreError: no run has this id.
        """

        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            self._check_exists(conn, run_id)
            return conn.execute(
                "SELECT name, value FROM ("
                "  SELECT name, value, ROW_NUMBER() OVER ("
                "    PARTITION BY name ORDER BY step IS NULL DESC, step DESC, id DESC) AS rank"
                "  FROM metrics WHERE run_id = ?) "
                "WHERE rank = 1 ORDER BY name",
                (run_id,),
            ).fetchall()

        return {row["name"]: _float(row["value"]) for row in self._read(select)}

    def delete_metrics_after(self, run_id: str, step: int) -> int:
        """Drop metrics logged at steps after ``step`` (final, step-less results are kept).

        The trainer calls this when resuming from the checkpoint at ``step``, so rows a killed
        run logged after its last checkpoint are not duplicated.

        Returns:
            The number of rows deleted.

        Raises:
            StoreError: no run has this id.
        """
        step = _check_int("step", step)

        def delete(conn: sqlite3.Connection) -> int:
            self._touch(conn, run_id)
            return conn.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, step)).rowcount

        return self._write(delete)

    # ---- plumbing ------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if local.conn is not None and local.pid != os.getpid():
            _INHERITED.append(local.conn)
            local.conn = None
        if local.conn is None:
            local.conn = _db.connect(self.path)
            local.pid = os.getpid()
        return local.conn

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return _db.retry(lambda: fn(self._conn()), self.path)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction; any error rolls it back completely."""

        def attempt() -> T:
            conn = self._conn()
            # IMMEDIATE takes the write lock up front, where SQLite's busy wait applies; a
            # deferred transaction upgrading later can fail at once with SQLITE_BUSY.
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return _db.retry(attempt, self.path)

    def _touch(self, conn: sqlite3.Connection, run_id: str) -> float:
        now = time.time()
        if conn.execute("UPDATE runs SET updated = ? WHERE id = ?", (now, run_id)).rowcount == 0:
            raise self._unknown(run_id)
        return now

    def _check_exists(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise self._unknown(run_id)

    def _unknown(self, run_id: str) -> StoreError:
        return StoreError(
            f"no run with id {run_id!r} in the store at {self.root} (writes need the full id; {_LIST_HINT})"
        )

    def _to_run(self, row: sqlite3.Row) -> Run:
        return Run(
            id=row["id"],
            kind=row["kind"],
            config=json.loads(row["config"]),
            status=cast(Status, row["status"]),
            dir=self._runs_dir / row["id"],
            created=row["created"],
            updated=row["updated"],
            name=row["name"],
            recipe=None if row["recipe"] is None else json.loads(row["recipe"]),
            version=row["version"],
        )


def _mkdir(path: Path, root: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StoreError(f"cannot write the run store at {root}: {reason}; {_db.FIX_HINT}") from exc


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"run status must be one of {', '.join(STATUSES)}; got {status!r}")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric names must be non-empty strings, got {name!r}")


def _check_int(what: str, value: Any) -> int:
    # bool is an int subclass; a True step is a bug, not step 1.
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            as_int = int(value)  # numpy / torch integer scalars
        except (TypeError, ValueError):
            as_int = None
        if isinstance(value, bool) or as_int is None or as_int != value:
            raise ValueError(f"{what} must be an integer, got {value!r}")
        return as_int
    return value


def _float(value: float | None) -> float:
    # SQLite stores NaN as NULL.
    return math.nan if value is None else float(value)


def _metric_row(row: sqlite3.Row) -> dict[str, Any]:
    is_estimate = row["method"] is not None
    return {
        "step": row["step"],
        "name": row["name"],
        "value": _float(row["value"]),
        "lo": _float(row["lo"]) if is_estimate else None,
        "hi": _float(row["hi"]) if is_estimate else None,
        "n": row["n"],
        "method": row["method"],
        "tokens": row["tokens"],
    }
