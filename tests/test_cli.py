"""The CLI end to end: train/reuse, runs/show/sample, and one clear line for every user mistake."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from alignlab.cli import main

from conftest import cli


def _snapshot(root: Path) -> dict[str, str]:
    """Content hashes of every file in the store plus a dump of its database, to prove a failed
    command changed nothing. The database is compared by content, not bytes: SQLite may
    checkpoint its write-ahead log into the main file whenever a connection closes."""
    import sqlite3

    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("store.sqlite")
    }
    db = root / "store.sqlite"
    if db.exists():
        conn = sqlite3.connect(db)
        files["<db>"] = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
        conn.close()
    return files


TINY = ["--preset", "tiny", "--set", "steps=6", "--set", "eval_every=3", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("store")
    old = sys.argv
    sys.argv = ["alignlab", "--store", str(root), "train", *TINY]
    try:
        main()
    except SystemExit as e:
        assert not e.code
    finally:
        sys.argv = old
    from alignlab.store import Store

    (run,) = Store(root).runs()
    return root, run.id


def test_train_prints_run_and_reuses_finished_runs(
    trained: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, run_id = trained
    before = _snapshot(root)
    code, out, _ = cli(["--store", str(root), "train", *TINY], capsys)
    assert code == 0
    assert f"run {run_id} (already finished; reused)" in out
    assert f"model {root / 'runs' / run_id / 'model'}" in out
    assert _snapshot(root) == before


def test_runs_show_and_sample(trained: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, run_id = trained
    code, out, _ = cli(["--store", str(root), "runs", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [run_id] and rows[0]["status"] == "done"
    code, out, _ = cli(["show", run_id[:6], "--store", str(root), "--json"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["id"] == run_id
    assert shown["config"]["steps"] == 6
    assert shown["summary"]["params"]["total"] == 10688
    assert "eval_loss" in shown["latest_metrics"]
    code, out, err = cli(
        ["sample", "--model", run_id, "--store", str(root), "--prompt", "abc", "--max-new-tokens", "5"],
        capsys,
    )
    assert code == 0, err
    assert len(out.rstrip("\n")) <= 5 * 13  # at most 5 tokens, each at most one named special


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--preset", "nope"], ["unknown preset 'nope'", "alignlab presets"]),
        (["train", "--preset", "tiny", "--set", "stepz=2"], ["unknown config key 'stepz'"]),
        (["train", "--preset", "tiny", "--set", "steps=two"], ["steps expects an integer"]),
        (["train", "--preset", "tiny", "--set", "device=tpu"], ["device must be auto, cpu or cuda"]),
        (["show", "ffffffffff"], ["no run matches", "alignlab runs"]),
        (["sample", "--model", "./no/such/dir"], ["not found"]),
        (["run", "--organism", "nope"], ["unknown organism 'nope'", "backdoor"]),
        (["run", "--preset", "huge"], ["unknown study preset 'huge'"]),
    ],
)
def test_user_mistakes_get_one_clear_line_and_change_nothing(
    trained: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: list[str],
) -> None:
    root, _ = trained
    before = _snapshot(root)
    code, out, err = cli(["--store", str(root), *args], capsys)
    assert code == 2
    assert "Traceback" not in err + out
    line = " ".join(err.split())
    assert line.startswith("error:")
    for w in words:
        assert w in line
    assert _snapshot(root) == before


def test_corrupt_and_incomplete_model_dirs(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, run_id = trained
    import shutil

    good = root / "runs" / run_id / "model"
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    no_config = tmp_path / "no-config"
    shutil.copytree(good, no_config)
    (no_config / "config.json").unlink()
    before = _snapshot(root)
    for bad, words in [(truncated, "truncated or corrupt"), (no_config, "no config.json")]:
        code, _out, err = cli(["sample", "--model", str(bad)], capsys)
        assert code == 2 and "Traceback" not in err
        assert words in " ".join(err.split())
    assert _snapshot(root) == before


def test_unwritable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = cli(["--store", str(blocker / "store"), "runs"], capsys)
    assert code == 2 and "Traceback" not in err
    line = " ".join(err.split())
    assert "cannot write the run store" in line and "--store" in line
    assert blocker.read_text() == "not a folder"


def test_presets_lists_every_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["presets", "--json"], capsys)
    assert code == 0
    presets = json.loads(out)
    for size in ("al-10k", "al-30k", "al-100k", "al-300k", "al-1m", "al-3m", "al-10m"):
        assert presets[f"induction-{size}"]["task"] == "induction"
