"""Store.cached_json: compute once, read back after, never report a failed compute as done."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alignlab.store import Run, Store


def test_computes_once_then_reads_back(tmp_path: Any) -> None:
    store = Store(tmp_path)
    calls: list[str] = []

    def compute(run: Run) -> dict[str, Any]:
        calls.append(run.id)
        (run.dir / "extra.txt").write_text("artefact")  # callers may write beside the result
        return {"value": 0.25, "pair": (1, 2)}

    first, run = store.cached_json("cell", {"seed": 3}, "cell.json", compute, name="c3", indent=1)
    assert first == {"value": 0.25, "pair": (1, 2)}  # the computed value itself, unconverted
    assert run.status == "done" and store.get(run.id).status == "done"
    assert (run.dir / "cell.json").read_text() == json.dumps(first, indent=1) + "\n"
    assert (run.dir / "extra.txt").exists()

    again, run2 = store.cached_json("cell", {"seed": 3}, "cell.json", compute, name="c3", indent=1)
    assert calls == [run.id]  # compute was not called again
    assert again == {"value": 0.25, "pair": [1, 2]}  # the stored JSON: tuples come back as lists
    assert run2.id == run.id


def test_same_run_id_as_get_or_create(tmp_path: Any) -> None:
    store = Store(tmp_path)
    config, recipe = {"spec": {"n": 4}, "seed": 1}, {"lr": 1e-3}
    expected, _ = store.get_or_create("cell", config, recipe)
    _, run = store.cached_json("cell", config, "x.json", lambda r: [1], recipe=recipe)
    assert run.id == expected.id
    _, other = store.cached_json("cell", config, "x.json", lambda r: [1])  # no recipe: another run
    assert other.id != expected.id


def test_failed_compute_is_marked_failed_and_recomputed(tmp_path: Any) -> None:
    store = Store(tmp_path)
    calls = 0

    def flaky(run: Run) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return {"ok": calls}

    with pytest.raises(RuntimeError, match="boom"):
        store.cached_json("cell", {"seed": 0}, "cell.json", flaky)
    (run,) = store.runs("cell")
    assert run.status == "failed"
    assert not (run.dir / "cell.json").exists()

    result, again = store.cached_json("cell", {"seed": 0}, "cell.json", flaky)
    assert (result, again.id, calls) == ({"ok": 2}, run.id, 2)
    assert store.get(run.id).status == "done"


def test_unwritable_result_marks_failed(tmp_path: Any) -> None:
    # A value json cannot encode fails at the write, after compute: the run must not be done.
    store = Store(tmp_path)
    with pytest.raises(TypeError):
        store.cached_json("cell", {"seed": 0}, "cell.json", lambda r: {"x": object()})
    (run,) = store.runs("cell")
    assert run.status == "failed" and not (run.dir / "cell.json").exists()


def test_done_run_without_its_file_is_recomputed(tmp_path: Any) -> None:
    store = Store(tmp_path)
    _, run = store.cached_json("cell", {"seed": 0}, "cell.json", lambda r: 1)
    (run.dir / "cell.json").unlink()
    result, _ = store.cached_json("cell", {"seed": 0}, "cell.json", lambda r: 2)
    assert result == 2 and json.loads((run.dir / "cell.json").read_text()) == 2
