"""The viewer in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped, with the reason, where Playwright or the system Chromium is missing. Never downloads a
browser. The screenshot is kept as a test artifact under ``test-artifacts/`` (and pytest's tmp).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignlab.report import make_server
from alignlab.report.viewer import ViewerServer
from alignlab.store import Store
from test_report_store import shared_store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no system Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ViewerServer, dict[str, str]]]:
    root, ids = shared_store(tmp_path_factory)
    server = make_server(Store(root))
    server.start()
    yield server, ids
    server.shutdown()
    server.server_close()


def test_viewer_in_chromium(viewer: tuple[ViewerServer, dict[str, str]], tmp_path: Path) -> None:
    server, ids = viewer
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.url + "/")
            assert "alignlab runs" in page.title()
            links = page.locator("a[href^='/report/']").all_inner_texts()
            assert {ids["train"], ids["study"], ids["eval"]} <= set(links)

            page.click(f"a[href='/report/{ids['study']}']")
            page.wait_for_load_state()
            assert ids["study"] in page.title()
            svg = page.locator("figure.plot svg").first
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100  # a plot drawn
            numbers = page.locator("span.est").all_inner_texts()
            assert any(t[0].isdigit() and "[" in t for t in numbers)  # an Estimate with its CI
            shot = tmp_path / "study-report.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(shot, ARTIFACTS / shot.name)

            page.goto(f"{server.url}/report/{ids['eval']}")  # hostile eval text stays text
            assert "<script>alert('pwned')</script>" in page.inner_text("body")
            assert dialogs == []
        finally:
            browser.close()
