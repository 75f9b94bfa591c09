"""``alignlab view``: a real server on an ephemeral port, read over HTTP with urllib."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignlab.report import make_server
from alignlab.report.viewer import ViewerServer
from alignlab.store import Store
from test_report_store import shared_store


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ViewerServer, dict[str, str]]]:
    root, ids = shared_store(tmp_path_factory)
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("top secret")
    link = root / "runs" / "escape.txt"
    if not link.exists():
        os.symlink(secret, link)
    server = make_server(Store(root))
    server.start()
    yield server, ids
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_binds_localhost_on_a_free_port(viewer: tuple[ViewerServer, dict[str, str]]) -> None:
    server, _ = viewer
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0


def test_index_lists_runs_and_reports_render(viewer: tuple[ViewerServer, dict[str, str]]) -> None:
    server, ids = viewer
    status, page, headers = _get(server.url + "/")
    assert status == 200 and "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for rid in (ids["train"], ids["study"], ids["eval"]):
        assert f'href="/report/{rid}"' in page
    status, page, _ = _get(f"{server.url}/report/{ids['study']}")
    assert status == 200 and "<svg" in page and "Trend with size" in page
    status, page, _ = _get(server.url + "/evidence")
    assert status == 200 and page.count("<section") == 5
    status, page, _ = _get(f"{server.url}/scaling/{ids['fit']}")
    assert status == 200 and "<svg" in page


def test_hostile_text_is_inert(viewer: tuple[ViewerServer, dict[str, str]]) -> None:
    server, ids = viewer
    for path in ("/", f"/report/{ids['eval']}", "/evidence"):
        status, page, _ = _get(server.url + path)
        assert status == 200 and "<script" not in page.lower(), path
        # The eval's model name and outputs are shown, as text.
        assert path == "/" or "&lt;script&gt;" in page, path


@pytest.mark.parametrize(
    "path",
    [
        "/files/../store.sqlite",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/%252e%252e/%252e%252e/etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/runs\\..\\..\\etc\\passwd",
        "/files/runs/%00.json",
        "/report/../../etc/passwd",
        "/report/zzzz",
        "/nope",
    ],
)
def test_traversal_is_refused(viewer: tuple[ViewerServer, dict[str, str]], path: str) -> None:
    server, _ = viewer
    status, body, _ = _get(server.url + path)
    assert status in (403, 404) and "root:" not in body


def test_symlink_out_of_the_store_is_forbidden(viewer: tuple[ViewerServer, dict[str, str]]) -> None:
    server, _ = viewer
    status, body, _ = _get(server.url + "/files/runs/escape.txt")
    assert status == 403 and "top secret" not in body


def test_store_files_are_served_read_only(viewer: tuple[ViewerServer, dict[str, str]]) -> None:
    server, ids = viewer
    status, body, headers = _get(f"{server.url}/files/runs/{ids['study']}/study.json")
    assert status == 200 and headers["Content-Type"] == "application/json" and '"organism"' in body
    assert _get(server.url + "/files/store.sqlite")[0] == 404  # not a whitelisted artifact
    req = urllib.request.Request(server.url + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405


def test_view_refuses_a_missing_store(tmp_path: Path) -> None:
    from alignlab.errors import StoreError
    from alignlab.report.viewer import open_existing

    with pytest.raises(StoreError, match="no run store"):
        open_existing(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
