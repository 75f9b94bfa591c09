"""``alignlab view``: a read-only web viewer of a run store, bound to 127.0.0.1.

Routes: ``/`` (index of studies, runs and fits), ``/evidence``, ``/report/<run id>``,
``/scaling/<fit>`` and ``/files/<path inside the store>`` (artifacts, by suffix whitelist). Pages are
rendered on request from the store, so they are always current. Only GET and HEAD are served.

Hostile content stays inert: every page escapes stored text, and every response carries a
Content-Security-Policy that forbids scripts. Paths with ``..`` (also percent-encoded or
double-encoded), backslashes, NUL, absolute paths and symlinks that leave the store are refused.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from alignlab.errors import StoreError
from alignlab.report import data
from alignlab.report import html as h
from alignlab.report.evidence import evidence_html
from alignlab.report.fitpage import fit_report
from alignlab.report.runpage import run_report
from alignlab.store import Store

HOST = "127.0.0.1"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
# Store artifacts the viewer hands out, with the type it declares (never guessed from content).
FILE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_RUN_ID = re.compile(r"[0-9a-f]{16}")
_NAV = (("/", "index"), ("/evidence", "evidence"))


class Refused(Exception):
    """A request the viewer will not serve; carries the HTTP status."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def run_href(target: str) -> str:
    """The viewer URL of a run id's report, or of ``"scaling/<fit>"``."""
    return f"/{target}" if target.startswith("scaling/") else f"/report/{target}"


def clean_path(raw: str) -> str:
    """The request path decoded once, or :class:`Refused` if it could escape or smuggle anything.

    Refused: any ``..`` segment, a ``%`` left after decoding (double encoding), backslashes, NUL
    and other control characters, and empty segments (``//`` would make an absolute path).
    """
    path = raw.split("?", 1)[0].split("#", 1)[0]
    decoded = unquote(path, errors="strict") if "%" in path else path
    segments = decoded.split("/")[1:]
    if (
        not decoded.startswith("/")
        or "%" in decoded
        or "\\" in decoded
        or any(ord(c) < 32 or ord(c) == 127 for c in decoded)
        or any(s in ("..", ".") for s in segments)
        or "" in segments[:-1]
    ):
        raise Refused(HTTPStatus.NOT_FOUND)
    return decoded


def store_file(root: Path, rel: str) -> Path:
    """The file at ``rel`` inside ``root`` after resolving symlinks; :class:`Refused` otherwise."""
    if not rel or rel.startswith("/") or Path(rel).is_absolute():
        raise Refused(HTTPStatus.NOT_FOUND)
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise Refused(HTTPStatus.FORBIDDEN)  # a symlink pointing out of the store
    if not target.is_file() or target.suffix.lower() not in FILE_TYPES:
        raise Refused(HTTPStatus.NOT_FOUND)
    return target


def index_html(store: Store) -> str:
    """The viewer's front page: studies, all runs, scaling fits."""
    runs = store.runs()
    studies = [r for r in runs if r.kind == "study"]
    parts = [
        f"<p class='muted'>store: {h.esc(store.root)}</p>",
        f"<p>{h.link('/evidence', 'Evidence page')}</p>",
    ]
    parts.append("<h2>Studies</h2>")
    parts.append(
        h.table(
            ("report", "status", "organism", "sizes", "interventions"),
            [
                (
                    h.link(run_href(r.id), r.id),
                    h.esc(r.status),
                    h.esc(r.config.get("organism")),
                    h.esc(", ".join(map(str, r.config.get("sizes", [])))),
                    h.esc(", ".join(map(str, r.config.get("interventions", [])))),
                )
                for r in studies
            ],
        )
    )
    parts.append("<h2>Runs</h2>")
    parts.append(
        h.table(
            ("run", "kind", "status", "task", "name", "created"),
            [
                (
                    h.link(run_href(r.id), r.id),
                    h.esc(r.kind),
                    h.esc(r.status),
                    h.esc(r.config.get("task", "")),
                    h.esc(r.name or ""),
                    h.esc(time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))),
                )
                for r in runs
            ],
        )
    )
    parts.append("<h2>Scaling fits</h2>")
    parts.append(
        h.table(("fit",), [(h.link(run_href(f"scaling/{n}"), n),) for n in data.scaling_fits(store)])
    )
    return h.page("alignlab runs", "".join(parts))


class ViewerServer(ThreadingHTTPServer):
    """The HTTP server; ``store`` is the store it shows, ``url`` its base address."""

    daemon_threads = True

    def __init__(self, store: Store, port: int = 0) -> None:
        self.store = store
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.server_address[1]}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (for tests and embedding); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="alignlab-viewer", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "alignlab-viewer"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _read_only(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only viewer\n", "text/plain; charset=utf-8", False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the CLI prints the URL; request logs would bury it

    def _respond(self, head: bool) -> None:
        store = self.server.store
        try:
            body, ctype = self._route(clean_path(self.path), store)
            self._send(HTTPStatus.OK, body, ctype, head)
        except Refused as r:
            self._send(r.status, f"{r.status.value} {r.status.phrase}\n".encode(), "text/plain", head)
        except StoreError:
            self._send(HTTPStatus.NOT_FOUND, b"404 no such run\n", "text/plain", head)
        except Exception:
            traceback.print_exc(file=sys.stderr)  # details for the operator, never the client
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"500 report failed\n", "text/plain", head)
        finally:
            store.close()  # this request thread's SQLite connection

    def _route(self, path: str, store: Store) -> tuple[bytes, str]:
        page: Callable[[], str] | None = None
        if path == "/":
            page = lambda: index_html(store)  # noqa: E731
        elif path == "/evidence":
            page = lambda: evidence_html(store, run_href, _NAV)  # noqa: E731
        elif path.startswith("/report/") and _RUN_ID.fullmatch(path[len("/report/") :]):
            run = store.get(path[len("/report/") :])
            page = lambda: run_report(store, run, run_href, _NAV)  # noqa: E731
        elif path.startswith("/scaling/"):
            fits = data.scaling_fits(store)
            name = path[len("/scaling/") :]
            if name not in fits:
                raise Refused(HTTPStatus.NOT_FOUND)
            page = lambda: fit_report(name, fits[name], _NAV)  # noqa: E731
        elif path.startswith("/files/"):
            target = store_file(store.root, path[len("/files/") :])
            return target.read_bytes(), FILE_TYPES[target.suffix.lower()]
        if page is None:
            raise Refused(HTTPStatus.NOT_FOUND)
        return page().encode("utf-8"), "text/html; charset=utf-8"

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def open_existing(root: str | Path | None) -> Store:
    """The store at ``root`` (default as :class:`Store`), refusing to create one just to view it."""
    import os

    from alignlab.store.runs import DB_NAME, DEFAULT_ROOT, ENV_VAR

    path = Path(root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser()
    if not (path / DB_NAME).is_file():
        raise StoreError(f"no run store at {path.absolute()}; pass --store DIR (a folder with {DB_NAME})")
    return Store(path)


def make_server(store: Store, port: int = 0) -> ViewerServer:
    """A viewer bound to 127.0.0.1 on ``port`` (0 = a free port), not yet serving.

    Raises:
        StoreError: the port cannot be bound.
    """
    try:
        return ViewerServer(store, port)
    except OSError as e:
        raise StoreError(f"cannot listen on {HOST}:{port}: {e.strerror or e}; pick another --port") from e


def serve(store: Store, port: int = 0, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the viewer until interrupted (Ctrl-C), calling ``on_ready(url)`` once listening."""
    server = make_server(store, port)
    if on_ready is not None:
        on_ready(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
