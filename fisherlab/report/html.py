"""A self-contained HTML page from report sections; every piece of user text is escaped.

No templating engine: small functions that return HTML strings. Text that can
come from a run (names, paths, config values, problem reasons) only ever enters
the page through :func:`esc` (``html.escape`` with quotes), table cells
included. Figures are embedded as base64 PNG, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

CSS = """
body { font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; margin: 0.6em 0; }
.unit { font-size: 0.85em; color: #555; } code { background: #f4f4f4; padding: 0 0.2em; }
nav ul { columns: 2; }
"""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def format_cell(value: Any) -> str:
    """Numbers with 4 significant digits (integers exact), missing as empty, else text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        try:
            return format_cell(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def table(frame: pd.DataFrame, max_rows: int = 200, caption: str | None = None) -> str:
    """An escaped HTML table of ``frame`` (first ``max_rows`` rows, the rest counted)."""
    if frame is None or frame.empty:
        return paragraph("(no rows)", cls="unit")
    shown = frame.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False, name=None):
        cells = []
        for value in record:
            text = format_cell(value)
            numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(text)}</td>' if numeric else f"<td>{esc(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if len(frame) > max_rows:
        more = paragraph(f"... {len(frame) - max_rows} more rows in the CSV file.", cls="unit")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def paragraph(text: str, cls: str | None = None) -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def bullet_list(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def image(png: bytes, alt: str, caption: str, unit: str | None = None) -> str:
    """A figure with its PNG embedded as base64 and an escaped caption."""
    data = base64.b64encode(png).decode("ascii")
    unit_html = f'<br><span class="unit">Unit of replication: {esc(unit)}</span>' if unit else ""
    return (
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}{unit_html}</figcaption></figure>"
    )


@dataclass
class Section:
    """A titled part of the page; ``body`` is a list of HTML fragments made by this module."""

    anchor: str
    title: str
    body: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> Section:
        self.body.append(fragment)
        return self


def page(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole document: title, intro fragments, a table of contents and the sections."""
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{"".join(s.body)}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{''.join(intro)}<nav><ul>{toc}</ul></nav>{body}</body></html>\n"
    )
