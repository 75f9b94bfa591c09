"""HTML building blocks: every piece of text passes through :func:`esc`, so stored content is inert.

Reports are plain strings assembled from these helpers (no template engine): the only markup in a
page is written here, and everything that came from a run, a config or an eval item is escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from alignlab.stats import Estimate

NOT_MEASURED = "not measured yet"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1em 2em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin:.4em 0}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1.05em;margin-top:1.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f5f5f7}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f5f5f7;padding:.6em;overflow:auto;font-size:12px;max-height:30em;white-space:pre-wrap;
word-break:break-word}
.missing{color:#8a6d00;font-style:italic}.muted{color:#666}.claim{margin:.3em 0 .3em 1em}
.plot svg{max-width:100%;height:auto}nav a{margin-right:1em}
.q{border-left:4px solid #0a66c2;padding:.1em 1em;margin:1em 0;background:#fafcff}
"""


def esc(value: Any) -> str:
    """``value`` as HTML text with ``& < > " '`` escaped (None becomes an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmt_number(value: Any) -> str:
    """A plain number in a short readable form (NaN and None shown as such)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    return f"{value:.4g}"


def estimate(data: Mapping[str, Any] | Estimate | None) -> str:
    """An Estimate (or its dict) as escaped ``value [lo, hi]`` with n in a tooltip; else "not measured"."""
    if data is None:
        return missing()
    try:
        est = data if isinstance(data, Estimate) else Estimate.from_dict(data)
    except (ValueError, TypeError, KeyError):
        value = data.get("value") if isinstance(data, Mapping) else None
        return fmt_number(value) if value is not None else missing()
    return f'<span class="est" title="n={est.n}, {esc(est.method)}">{esc(est)}</span>'


def missing(text: str = NOT_MEASURED) -> str:
    """The marker for a number that is not in the store."""
    return f'<span class="missing">{esc(text)}</span>'


def link(href: str, text: str) -> str:
    """An anchor; both the (relative) href and the text are escaped."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table whose headers are escaped here and whose cells are already-safe HTML fragments.

    Args:
        headers: column titles (plain text).
        rows: cells as HTML (callers escape text with :func:`esc` or build it with these helpers).
        numeric: column indices to right-align.
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return f"<p>{missing('nothing stored')}</p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(items: Mapping[str, Any]) -> str:
    """Two-column key/value table; values are escaped (dicts and lists shown as JSON)."""
    rows = []
    for key, value in items.items():
        text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value
        rows.append((esc(key), esc(text) if not isinstance(value, (int, float)) else fmt_number(value)))
    return table(("field", "value"), rows)


def pre_json(data: Any) -> str:
    """Pretty JSON in a ``<pre>`` block, escaped."""
    return f"<pre>{esc(json.dumps(data, indent=2, sort_keys=True, default=str))}</pre>"


def figure(svg: str | None, caption: str = "") -> str:
    """A plot block for an SVG from :mod:`alignlab.report.plots` (trusted: rendered here, not read)."""
    if svg is None:
        return f"<p>{missing()}</p>"
    cap = f"<figcaption class='muted'>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="plot">{svg}{cap}</figure>'


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A complete, self-contained HTML document (inline CSS, no scripts, no external resources)."""
    links = "".join(link(href, text) for href, text in nav)
    nav_html = f"<nav>{links}</nav>" if links else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # A meta CSP too, so a report opened from disk cannot run or fetch anything either.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{nav_html}"
        f"<h1>{esc(title)}</h1>{body}</body></html>\n"
    )
