"""The run store, against real SQLite files in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing as mp
import os
import random
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from alignlab.errors import ConfigError, StoreError
from alignlab.stats import Estimate
from alignlab.store import Store, run_id
from alignlab.store.runs import DEFAULT_ROOT

CONFIG: dict[str, Any] = {"model": {"d_model": 64, "n_layers": 2}, "lr": 0.1, "steps": 100}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# ---- run ids -----------------------------------------------------------------------------


def test_run_id_is_sha256_of_canonical_json() -> None:
    # Pins the id scheme: changing it would orphan every stored run.
    config = {"seq": (1, 2), "name": "é", "model": {"n_layers": 2, "d_model": 64}, "lr": 0.1}
    canonical = (
        '{"config":{"lr":0.1,"model":{"d_model":64,"n_layers":2},"name":"é","seq":[1,2]},'
        '"recipe":null,"version":"0.1.0"}'
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert run_id(config, version="0.1.0") == expected


def test_run_id_ignores_key_order_at_every_depth() -> None:
    reordered = {"steps": 100, "lr": 0.1, "model": {"n_layers": 2, "d_model": 64}}
    assert run_id(CONFIG) == run_id(reordered)
    assert len(run_id(CONFIG)) == 16
    assert set(run_id(CONFIG)) <= set("0123456789abcdef")


def test_run_id_changes_with_any_value_recipe_or_version() -> None:
    base = run_id(CONFIG, version="1")
    variants = [
        {**CONFIG, "lr": 0.10000000000000002},
        {**CONFIG, "steps": 101},
        {**CONFIG, "model": {"d_model": 64, "n_layers": 3}},
        {**CONFIG, "extra": None},
    ]
    ids = {run_id(v, version="1") for v in variants}
    ids |= {run_id(CONFIG, version="2"), run_id(CONFIG, {"seed": 0}, version="1")}
    assert base not in ids
    assert len(ids) == len(variants) + 2
    assert run_id(CONFIG) == run_id(CONFIG, version=__import__("alignlab").__version__)


def test_run_id_treats_dataclasses_as_dicts_and_tuples_as_lists() -> None:
    @dataclasses.dataclass(frozen=True)
    class Model:
        d_model: int = 64
        n_layers: int = 2

    assert run_id({**CONFIG, "model": Model()}) == run_id(CONFIG)
    assert run_id({"shape": (1, 2)}) == run_id({"shape": [1, 2]})


def test_run_id_rejects_values_without_a_canonical_form() -> None:
    with pytest.raises(ConfigError, match=r"config\.tags is a set"):
        run_id({"tags": {"a", "b"}})
    with pytest.raises(ConfigError, match="non-string key 1"):
        run_id({"layers": {1: "x"}})


# ---- opening a store ---------------------------------------------------------------------


def test_root_defaults_to_env_then_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALIGNLAB_STORE", str(tmp_path / "env-store"))
    assert Store().root == tmp_path / "env-store"
    assert (tmp_path / "env-store" / "store.sqlite").is_file()
    monkeypatch.delenv("ALIGNLAB_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store().root == tmp_path / DEFAULT_ROOT


def test_store_uses_wal_and_reopens_existing_data(tmp_path: Path) -> None:
    run, _ = Store(tmp_path).get_or_create("train", CONFIG)
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert Store(tmp_path).get(run.id).config == CONFIG


def test_root_under_a_regular_file_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        Store(blocker / "store")
    message = str(info.value)
    assert message.startswith(f"cannot write the run store at {blocker / 'store'}: ")
    assert "--store DIR or set ALIGNLAB_STORE" in message
    assert "\n" not in message
    with pytest.raises(StoreError, match="cannot write the run store"):
        Store(blocker)  # the root itself is a file


def test_corrupt_db_raises_and_is_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    garbage = random.Random(0).randbytes(8192)
    db.write_bytes(garbage)
    with pytest.raises(StoreError, match="corrupt or not an SQLite file") as info:
        Store(tmp_path)
    assert "move it aside" in str(info.value)
    assert db.read_bytes() == garbage


def test_foreign_or_newer_db_is_refused_not_replaced(tmp_path: Path) -> None:
    foreign, newer = tmp_path / "foreign", tmp_path / "newer"
    for root, sql in [
        (foreign, "CREATE TABLE notes (body TEXT)"),
        (newer, "PRAGMA user_version = 99"),
    ]:
        root.mkdir()
        with sqlite3.connect(root / "store.sqlite") as conn:
            conn.execute(sql)
    before = (foreign / "store.sqlite").read_bytes()
    with pytest.raises(StoreError, match="not an alignlab run store"):
        Store(foreign)
    assert (foreign / "store.sqlite").read_bytes() == before
    with pytest.raises(StoreError, match="newer alignlab"):
        Store(newer)


# ---- runs --------------------------------------------------------------------------------


def test_get_or_create_returns_existing_run(store: Store) -> None:
    run, created = store.get_or_create("train", CONFIG, name="first")
    assert created
    assert (run.id, run.kind, run.status, run.name) == (run_id(CONFIG), "train", "pending", "first")
    assert run.dir == store.root / "runs" / run.id
    assert run.dir.is_dir()
    again, created = store.get_or_create("train", dict(reversed(CONFIG.items())), name="other")
    assert not created
    assert again == run  # same row: label, timestamps and all
    assert len(store.runs()) == 1


def test_same_config_under_another_kind_is_refused(store: Store) -> None:
    store.get_or_create("train", CONFIG)
    with pytest.raises(StoreError, match="already exists as a 'train' run"):
        store.get_or_create("eval", CONFIG)
    assert [r.kind for r in store.runs()] == ["train"]


def test_get_by_prefix(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    assert store.get(run.id) == run
    assert store.get(run.id[:4].upper()) == run
    with pytest.raises(StoreError, match=r"too short.*alignlab runs"):
        store.get(run.id[:3])
    with pytest.raises(StoreError, match=r"no run matches 'zzzzzz'.*alignlab runs"):
        store.get("zzzzzz")
    unknown = "0000" if not run.id.startswith("0000") else "ffff"
    with pytest.raises(StoreError, match="no run matches"):
        store.get(unknown)


def test_ambiguous_prefix_is_an_error(store: Store) -> None:
    # Find two configs whose ids share 4 hex digits (birthday bound: a few hundred tries).
    seen: dict[str, int] = {}
    i = 0
    while (prefix := run_id({"i": i})[:4]) not in seen:
        seen[prefix] = i
        i += 1
    a, _ = store.get_or_create("train", {"i": seen[prefix]})
    b, _ = store.get_or_create("train", {"i": i})
    with pytest.raises(StoreError, match=rf"'{prefix}' is ambiguous: it matches .*alignlab runs"):
        store.get(prefix)
    assert store.get(a.id) == a and store.get(b.id) == b


def test_runs_newest_first_with_filters(store: Store) -> None:
    made = [store.get_or_create(kind, {"i": i})[0] for i, kind in enumerate("ABAB")]
    assert [r.id for r in store.runs()] == [r.id for r in reversed(made)]
    store.set_status(made[0].id, "done")
    assert [r.id for r in store.runs(kind="A")] == [made[2].id, made[0].id]
    assert [r.id for r in store.runs(status="done")] == [made[0].id]
    assert store.runs(kind="B", status="done") == []


def test_set_status(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    store.set_status(run.id, "running")
    got = store.get(run.id)
    assert got.status == "running"
    assert got.updated >= run.updated
    with pytest.raises(ValueError, match="pending, running, done, failed"):
        store.set_status(run.id, "finished")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no run with id 'feedbeefcafe0000'"):
        store.set_status("feedbeefcafe0000", "done")
    assert store.get(run.id).status == "running"


# ---- metrics -----------------------------------------------------------------------------


def test_log_and_read_metrics(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    store.log_metrics(run.id, 0, {"loss": 4.0, "lr": 1e-3}, tokens=0)
    store.log_metrics(run.id, 10, {"loss": 3.0, "grad_norm": math.nan}, tokens=5120)
    store.log_metrics(run.id, 20, {"loss": 2.5})
    rows = store.metrics(run.id, "loss")
    assert [(r["step"], r["value"], r["tokens"]) for r in rows] == [
        (0, 4.0, 0),
        (10, 3.0, 5120),
        (20, 2.5, None),
    ]
    assert rows[0] == {
        "step": 0,
        "name": "loss",
        "value": 4.0,
        "lo": None,
        "hi": None,
        "n": None,
        "method": None,
        "tokens": 0,
    }
    assert len(store.metrics(run.id)) == 5
    latest = store.latest_metrics(run.id)
    assert latest.keys() == {"loss", "lr", "grad_norm"}
    assert (latest["loss"], latest["lr"]) == (2.5, 1e-3)
    assert math.isnan(latest["grad_norm"])  # a diverged loss is recorded, not dropped


def test_relogging_a_step_replaces_the_value(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    store.log_metrics(run.id, 5, {"loss": 3.0})
    store.log_metrics(run.id, 5, {"loss": 2.0}, tokens=7)
    assert [(r["value"], r["tokens"]) for r in store.metrics(run.id)] == [(2.0, 7)]


def test_bad_metric_calls_change_nothing(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    store.log_metrics(run.id, 0, {"loss": 1.0})
    with pytest.raises(ValueError, match="'acc' is not a number"):
        store.log_metrics(run.id, 1, {"loss": 0.5, "acc": "high"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="step must be an integer"):
        store.log_metrics(run.id, 1.5, {"loss": 0.5})  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no run with id"):
        store.log_metrics("feedbeefcafe0000", 1, {"loss": 0.5})
    with pytest.raises(StoreError, match="no run with id"):
        store.metrics("feedbeefcafe0000")
    assert [(r["step"], r["value"]) for r in store.metrics(run.id)] == [(0, 1.0)]


def test_failed_write_transaction_rolls_back(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO metrics (run_id, step, name, value, logged) VALUES (?, 1, 'x', 1, 0)",
            (run.id,),
        )
        raise RuntimeError("crash mid-transaction")

    with pytest.raises(RuntimeError, match="crash"):
        store._write(half_done)
    assert store.metrics(run.id) == []
    store.log_metrics(run.id, 2, {"y": 2.0})  # the connection is usable afterwards
    assert [r["name"] for r in store.metrics(run.id)] == ["y"]


def test_estimates_round_trip(store: Store) -> None:
    run, _ = store.get_or_create("eval", CONFIG)
    at_step = Estimate(0.61, 0.55, 0.67, n=300, method="bootstrap95")
    final = Estimate(0.93, 0.88, 0.97, n=200, method="bootstrap95")
    store.log_metrics(run.id, 100, {"loss": 1.2})
    store.log_estimate(run.id, "acc", at_step, step=100)
    store.log_estimate(run.id, "acc", Estimate(0.5, 0.4, 0.6, n=10, method="old"))
    store.log_estimate(run.id, "acc", final)  # replaces the earlier final result
    rows = store.metrics(run.id, "acc")
    assert [r["step"] for r in rows] == [100, None]
    assert [Estimate.from_dict(r) for r in rows] == [at_step, final]
    assert store.latest_metrics(run.id) == {"acc": 0.93, "loss": 1.2}


def test_delete_metrics_after_keeps_earlier_steps_and_final_results(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)
    for step in range(0, 50, 10):
        store.log_metrics(run.id, step, {"loss": 1.0 / (step + 1), "lr": 0.1})
    store.log_estimate(run.id, "acc", Estimate(0.9, 0.8, 1.0, n=50, method="m"))
    assert store.delete_metrics_after(run.id, 20) == 4  # steps 30 and 40, two names each
    assert sorted({r["step"] for r in store.metrics(run.id)}, key=str) == [0, 10, 20, None]
    assert store.delete_metrics_after(run.id, 20) == 0


def test_threads_share_a_store(store: Store) -> None:
    run, _ = store.get_or_create("train", CONFIG)

    def log(worker: int) -> None:
        for step in range(50):
            store.log_metrics(run.id, step, {f"t{worker}": float(step)})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(log, range(4)))
    assert len(store.metrics(run.id)) == 200


# ---- concurrency across processes --------------------------------------------------------

N_WORKERS = 4
ROWS_PER_WORKER = 300


def _race_worker(root: str, worker: int, barrier: Any, results: Any) -> None:
    # The store does not need torch, but importing alignlab may pull it in; keep it to 1 thread.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    barrier.wait()
    store = Store(root)  # all workers initialise the fresh store at once
    barrier.wait()
    run, created = store.get_or_create("train", CONFIG)
    for step in range(ROWS_PER_WORKER):
        store.log_metrics(run.id, step, {f"worker{worker}": float(step)}, tokens=step)
    results.put((worker, run.id, created))


def test_processes_racing_on_one_store_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_WORKERS), ctx.Queue()
    root = tmp_path / "shared"
    procs = [
        ctx.Process(target=_race_worker, args=(str(root), k, barrier, results)) for k in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 180
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * N_WORKERS
    outcomes = [results.get(timeout=5) for _ in procs]

    assert sum(created for _, _, created in outcomes) == 1
    assert {rid for _, rid, _ in outcomes} == {run_id(CONFIG)}
    store = Store(root)
    assert len(store.runs()) == 1
    rows = store.metrics(run_id(CONFIG))
    assert len(rows) == N_WORKERS * ROWS_PER_WORKER
    for k in range(N_WORKERS):
        steps = sorted(r["step"] for r in rows if r["name"] == f"worker{k}")
        assert steps == list(range(ROWS_PER_WORKER))
    assert os.path.isdir(root / "runs" / run_id(CONFIG))
