"""The study registry end to end: a toy study registered, run from the CLI, stored, read back,
rendered answer-first, and every user mistake reported in one line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alignlab.store import Store
from alignlab.studies import registry
from alignlab.studies.registry import StudyDef, register_study, run_registered

from conftest import cli

CALLS: list[int] = []


@dataclass(frozen=True)
class _Spec:
    n: int = 3
    label: str = "<b>x</b>"


def _run(store: Store, spec: _Spec) -> dict[str, Any]:
    CALLS.append(spec.n)
    return {"answer": f"sum is {sum(range(spec.n))} {spec.label}", "values": list(range(spec.n))}


@pytest.fixture(autouse=True)
def _toy() -> Any:
    register_study(
        StudyDef(
            name="toy",
            question="What is the sum?",
            presets=lambda: {"quick": (_Spec(n=2), "two"), "default": (_Spec(), "three")},
            run=_run,
            summary=lambda r: "ANSWER " + r["answer"],
            report=lambda r: "<p>values " + ", ".join(map(str, r["values"])) + "</p>",
        )
    )
    yield
    registry._STUDIES.pop("toy", None)


def test_run_is_stored_and_not_redone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    CALLS.clear()
    run, result = run_registered(store, "toy", _Spec(n=4))
    assert result["answer"] == "sum is 6 <b>x</b>" and result["study"] == "toy"
    assert json.loads((run.dir / "study.json").read_text())["values"] == [0, 1, 2, 3]
    run2, again = run_registered(store, "toy", _Spec(n=4))
    assert run2.id == run.id and again["answer"] == result["answer"] and CALLS == [4]
    run3, _ = run_registered(store, "toy", _Spec(n=5))  # another spec is another run
    assert run3.id != run.id and CALLS == [4, 5]


def test_cli_runs_and_reports_answer_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        ["study", "toy", "--store", str(tmp_path), "--preset", "quick", "--set", "n=3"], capsys
    )
    assert code == 0, err
    assert out.startswith("ANSWER sum is 3")
    report = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    page = report.read_text()
    # Answer before run metadata, and the study's text escaped.
    assert page.index("sum is 3") < page.index("run id")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "values 0, 1, 2" in page


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["study", "nope"], "unknown study 'nope'"),
        (["study", "toy", "--preset", "huge"], "unknown preset 'huge'"),
        (["study", "toy", "--set", "n=lots"], "n"),
    ],
)
def test_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _out, err = cli([*args, "--store", str(tmp_path)], capsys)
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_listing_names_presets_and_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["studies", "--json"], capsys)
    rows = {r["study"]: r for r in json.loads(out)}
    assert code == 0 and rows["toy"]["presets"] == {"quick": "two", "default": "three"}
    assert rows["toy"]["keys"] == ["n", "label"]
