"""Sweeps through the store (process pool and Ray) and scaling fits read back from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignlab.errors import ConfigError
from alignlab.scaling.collect import collect
from alignlab.scaling.sweep import grid, sweep
from alignlab.store import Store
from alignlab.train import train_preset

from conftest import cli

BASE = ["--preset", "tiny", "--set", "steps=8", "--set", "eval_every=8", "--set", "batch_size=4"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    base = train_preset("tiny").replace(steps=8, eval_every=8, batch_size=4)
    sweep(grid(base, ["al-10k", "al-30k", "al-100k"], seeds=2), Store(root), workers=2)
    return root


def test_grid_sets_steps_from_token_budgets() -> None:
    base = train_preset("tiny")  # batch 8 x seq 32 = 256 tokens per step
    cfgs = grid(base, ["al-10k", "al-30k"], tokens=[2560, 1000], seeds=2)
    assert len(cfgs) == 8
    assert sorted({c.steps for c in cfgs}) == [4, 10]
    assert sorted({c.seed for c in cfgs}) == [0, 1]
    with pytest.raises(ConfigError, match="unknown sizes"):
        grid(base, ["al-7"])


def test_sweep_stores_every_run_once(swept: Path) -> None:
    store = Store(swept)
    runs = store.runs(kind="train")
    assert len(runs) == 6 and all(r.status == "done" for r in runs)
    points = collect(store, "eval_loss")
    assert [p.params for p in points] == [10688, 10688, 33664, 33664, 97200, 97200]
    assert all(4.0 < p.value < 5.5 for p in points)
    # Re-sweeping reuses every finished run: no new rows.
    base = train_preset("tiny").replace(steps=8, eval_every=8, batch_size=4)
    again = sweep(grid(base, ["al-10k", "al-30k", "al-100k"], seeds=2), store, workers=1)
    assert sorted(r.id for r in again) == sorted(r.id for r in runs)
    assert len(store.runs()) == 6


def test_scaling_fit_cli_writes_plot_and_json(swept: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        ["--store", str(swept), "scaling", "fit", "--metric", "eval_loss", "--n-boot", "60", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result["params"]) >= {"alpha"}
    alpha = result["params"]["alpha"]
    assert alpha["lo"] <= alpha["value"] <= alpha["hi"]
    for key in ("png", "svg", "json"):
        assert Path(result["files"][key]).stat().st_size > 0
    assert any("trend" in s or "no detectable" in s for s in result["statements"])


def test_scaling_errors_are_one_line(swept: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["--store", str(swept), "scaling", "fit", "--metric", "nope"], capsys)
    assert code == 2 and "no finished runs" in err and "Traceback" not in err
    code, _, err = cli(
        ["--store", str(swept), "scaling", "predict", "--params", "1e6", "--tokens", "1e7"], capsys
    )
    assert code == 2 and ">= 2 token budgets" in " ".join(err.split())
    code, _, err = cli(["--store", str(swept), "sweep", *BASE, "--backend", "slurm"], capsys)
    assert code == 2 and "unknown backend" in err


def test_ray_sweep_on_a_local_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    code, out, err = cli(
        ["--store", str(tmp_path), "sweep", *BASE, "--sizes", "al-10k,al-30k", "--backend", "ray", "--json"],
        capsys,
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["params"] for r in rows] == [10688, 33664]
    store = Store(tmp_path)
    assert {r.id for r in store.runs(status="done")} == {r["run_id"] for r in rows}
    assert not (Path.home() / ".ray" / "auth_token").exists()
