"""Study/run reports, the evidence page, and ``alignlab report`` on a small real store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignlab.report import evidence_html, run_report, write_evidence, write_report
from alignlab.report.plots import lines_with_bands
from alignlab.store import Store
from test_report_store import HOSTILE, shared_store


@pytest.fixture(scope="module")
def store_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, str]]:
    root, ids = shared_store(tmp_path_factory)
    return Store(root), ids


def _no_active_content(page: str) -> None:
    # Stored text appears only escaped: no script element, no event-handler attribute.
    assert "<script" not in page.lower()
    assert re.search(r"<[^>]+\son\w+\s*=", page) is None
    assert re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) is None  # nothing fetched


def test_study_report_shows_curves_trend_and_runs(store_ids: tuple[Store, dict[str, str]]) -> None:
    store, ids = store_ids
    page = run_report(store, store.get(ids["study"]), lambda rid: f"/report/{rid}")
    assert page.count("<svg") >= 4  # dose-response per size (3) + the defect log-prob curve
    # The answer leads: the verdicts come before the gates, the gates before the curves, and the
    # run metadata last.
    marks = ("Does safety training remove the planted", "<h2>Gates</h2>", "Dose-response", "Environment")
    order = [page.find(t) for t in marks]
    assert -1 not in order and order == sorted(order), order
    assert "slope per decade" in page and "detectable slope" in page
    assert "competence/copy" in page  # the gates every number stands on
    for raw in ("None", "nan", "0.3333333"):
        assert raw not in re.sub(r"<[^>]+>", " ", page).split(), raw
    assert re.search(r"\d\.\d+ \[\d\.\d+, \d\.\d+\]", page)  # an Estimate with its interval
    assert f"/report/{ids['train']}" in page  # the install run is linked
    for key in ("alignlab", "git_commit", "torch", "device", "threads", "wall_seconds"):
        assert key in page
    _no_active_content(page)


def test_train_report_has_curves_probe_and_heads(store_ids: tuple[Store, dict[str, str]]) -> None:
    store, ids = store_ids
    page = run_report(store, store.get(ids["train"]), lambda rid: rid)
    assert "Defection probe AUROC per layer" in page
    assert "prefix_matching" in page and page.count("<svg") >= 3
    assert "tokens_per_s" in page  # recorded environment from summary.json


def test_hostile_eval_text_is_escaped(store_ids: tuple[Store, dict[str, str]]) -> None:
    store, ids = store_ids
    page = run_report(store, store.get(ids["eval"]), lambda rid: rid)
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "0.62 [0.55, 0.69]" in page
    _no_active_content(page)


def test_plot_labels_never_reach_the_svg_as_markup() -> None:
    svg = lines_with_bands({HOSTILE: [(0, 0.5, 0.4, 0.6), (1, 0.6, 0.5, 0.7)]}, xlabel=HOSTILE, ylabel="y")
    assert svg is not None and svg.startswith("<svg") and "<script" not in svg and "<!--" not in svg


def test_evidence_page_answers_each_question_with_numbers(store_ids: tuple[Store, dict[str, str]]) -> None:
    store, ids = store_ids
    page = evidence_html(store, lambda rid: f"/report/{rid}")
    sections = page.split("<section class='q'>")[1:]
    assert len(sections) == 5
    safety, probes, scale, tracing, evals = sections
    assert f"/report/{ids['study']}" in safety and "after 72,000 tokens" in safety
    assert "0.80 [0.70, 0.90]" in probes  # best floor AUROC, layer 1
    assert "slope per decade" in scale and ids["fit"] in scale
    assert "no evidence yet" in tracing
    assert "power-seeking" in evals and "0.62 [0.55, 0.69]" in evals
    _no_active_content(page)


def test_evidence_page_on_empty_store(tmp_path: Path) -> None:
    page = evidence_html(Store(tmp_path), str)
    assert page.count("no evidence yet") == 5


def test_write_report_and_evidence_link_offline(
    store_ids: tuple[Store, dict[str, str]], tmp_path: Path
) -> None:
    store, ids = store_ids
    evidence = write_evidence(store)  # writes every linked report too
    path = store.get(ids["study"]).dir / "report.html"
    for page in (path, evidence):
        for href in re.findall(r'<a href="([^"]+)"', page.read_text()):
            assert (page.parent / href).is_file(), href  # every link opens offline
    out = write_report(store, ids["eval"], tmp_path / "x" / "eval.html")
    assert out.is_file()


def test_cli_report(store_ids: tuple[Store, dict[str, str]], tmp_path: Path) -> None:
    import typer

    from alignlab.cli.report_cmd import register
    from alignlab.errors import AlignlabError

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    store, ids = store_ids
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", ids["eval"][:8], "--out", str(out), "--store", str(store.root)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out.absolute()) and out.is_file()
    Store(tmp_path / "empty").close()
    res = runner.invoke(app, ["report", "--evidence", "--store", str(tmp_path / "empty")])
    assert res.exit_code == 0 and res.output.strip().endswith("evidence.html")
    for args in (
        ["report"],
        ["report", "ffff", "--store", str(store.root)],
        ["view", "--store", str(tmp_path)],
    ):
        res = runner.invoke(app, args)
        assert isinstance(res.exception, AlignlabError), args
