"""Building blocks of the static HTML reports: escaping, tables, figures, sections, the page.

The reports are plain HTML5 with one inline style sheet: no script, no web font, no network.
Images are files next to ``report.html`` referenced by relative paths, so a run directory
(or a whole sweep directory) can be copied or archived and still opens in any browser.

Numbers in tables carry their exact value in a ``data-value`` attribute and the metric's name
in ``data-key``, so a test (or a reader's script) can check what is shown against the source
files without parsing the rounded text.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STYLE = """
:root { --fg:#1d2329; --muted:#5b6670; --line:#d9dee3; --bg:#ffffff; --band:#f4f6f8;
        --accent:#1f6feb; --warn:#9a6700; --bad:#cf222e; --good:#1a7f37; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
header.top { padding:18px 28px 12px; border-bottom:1px solid var(--line); background:var(--band); }
header.top h1 { margin:0 0 4px; font-size:22px; }
header.top .sub { color:var(--muted); font-size:13px; word-break:break-all; }
nav { padding:6px 28px; border-bottom:1px solid var(--line); font-size:13px; position:sticky;
      top:0; background:var(--bg); z-index:1; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; white-space:nowrap; }
main { padding:8px 28px 40px; max-width:1400px; }
section { margin:22px 0 8px; }
section h2 { font-size:18px; margin:0 0 8px; padding-bottom:4px; border-bottom:1px solid var(--line); }
section h3 { font-size:15px; margin:14px 0 6px; }
p.note { color:var(--muted); margin:4px 0 10px; font-size:13px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:6px 0 12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:120px;
        background:var(--band); }
.card .k { color:var(--muted); font-size:12px; }
.card .v { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; margin:6px 0 12px; font-size:13px; }
th, td { border:1px solid var(--line); padding:3px 8px; text-align:left; vertical-align:top; }
th { background:var(--band); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.scroll { overflow-x:auto; max-width:100%; }
.grid { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
figure { margin:4px 0 12px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); background:#fff; }
figcaption { color:var(--muted); font-size:12px; margin-top:2px; max-width:640px; }
pre { background:var(--band); border:1px solid var(--line); padding:10px; overflow:auto;
      font-size:12px; max-height:420px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.ok { color:var(--good); font-weight:600; } .skipped { color:var(--warn); font-weight:600; }
.missing { color:var(--muted); font-style:italic; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as shown in the tables: ``digits`` decimals for floats in [1e-3, 1e5), else
    ``digits`` significant digits; integers as they are; NaN/None blank."""
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
            return "∞" if value > 0 else "−∞"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}g}"
    return str(value)


def number_cell(value: Any, key: str | None = None, digits: int = 4) -> str:
    """A right-aligned ``<td>`` showing :func:`fmt` with the exact value in ``data-value``."""
    attrs = ' class="num"'
    if key is not None:
        attrs += f' data-key="{esc(key)}"'
    if isinstance(value, int | float) and not isinstance(value, bool):
        attrs += f' data-value="{esc(repr(float(value)))}"'
    return f"<td{attrs}>{esc(fmt(value, digits))}</td>"


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    keys: Sequence[Sequence[str | None]] | None = None,
    digits: int = 4,
    html_columns: Iterable[int] = (),
) -> str:
    """An HTML table; numbers right-aligned via :func:`number_cell` (``keys[i][j]`` becomes the
    cell's ``data-key``), other values escaped unless their column is in ``html_columns``."""
    raw = set(html_columns)
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{esc(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, value in enumerate(row):
            key = keys[i][j] if keys is not None else None
            if j in raw:
                out.append(f"<td>{value}</td>")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(number_cell(value, key, digits))
            else:
                attrs = f' data-key="{esc(key)}"' if key is not None else ""
                out.append(f"<td{attrs}>{esc('' if value is None else value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def dataframe_table(df, digits: int = 4, key_column: str | None = None) -> str:
    """:func:`table` of a pandas DataFrame; with ``key_column``, each number's ``data-key`` is
    ``<value of key_column>/<column>``."""
    columns = [str(c) for c in df.columns]
    rows = [
        [None if (isinstance(v, float) and math.isnan(v)) else _py(v) for v in r]
        for r in df.itertuples(index=False)
    ]
    keys = None
    if key_column is not None:
        k = columns.index(key_column)
        keys = [[f"{r[k]}/{c}" for c in columns] for r in rows]
    return table(columns, rows, keys, digits)


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def rel(path: str | Path, start: str | Path) -> str:
    """``path`` relative to the directory ``start``, with forward slashes (a URL path)."""
    return Path(os.path.relpath(Path(path), Path(start))).as_posix()


def figure(src: str, caption: str = "", alt: str | None = None, width: int | None = None) -> str:
    style = f' style="max-width:{width}px"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    # the image links to itself: a click opens it at full size
    return (
        f'<figure{style}><a href="{esc(src)}"><img src="{esc(src)}" '
        f'alt="{esc(alt or caption or src)}"></a>{cap}</figure>'
    )


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def cards(items: Sequence[tuple[str, Any, str | None]]) -> str:
    """Headline numbers as cards: ``(label, value, data-key)``."""
    out = ['<div class="cards">']
    for label, value, key in items:
        attrs = f' data-key="{esc(key)}"' if key else ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs += f' data-value="{esc(repr(float(value)))}"'
        out.append(
            f'<div class="card"><div class="k">{esc(label)}</div>'
            f'<div class="v"{attrs}>{esc(fmt(value))}</div></div>'
        )
    out.append("</div>")
    return "".join(out)


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


class Page:
    """Sections in order, each with an ``id`` (the navigation bar links to them)."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[tuple[str, str, str]] = []

    def add(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))

    def build(self, sections: Sequence[tuple[str, str]], builders: dict[str, Any]) -> None:
        """Add each ``(id, heading)`` of ``sections`` with the body its builder returns; a
        builder that fails gives a section saying why (one broken input must not hide the
        others)."""
        for sid, heading in sections:
            try:
                body = builders[sid]()
            except Exception as err:  # noqa: BLE001 - see the docstring
                log.warning("report: the %s section failed: %s", sid, err, exc_info=True)
                body = missing(f"this section could not be built: {type(err).__name__}: {err}")
            self.add(sid, heading, body)

    def render(self) -> str:
        nav = "".join(f'<a href="#{esc(s)}">{esc(t)}</a>' for s, t, _ in self.sections)
        body = "".join(
            f'<section id="{esc(s)}"><h2>{esc(t)}</h2>{b}</section>' for s, t, b in self.sections
        )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{STYLE}</style>"
            # a page with no favicon makes the browser request /favicon.ico: an empty inline one
            '<link rel="icon" href="data:,"></head><body>'
            f'<header class="top"><h1>{esc(self.title)}</h1>'
            f'<div class="sub">{esc(self.subtitle)}</div></header>'
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
        )


# --------------------------------------------------------------------------- figures
def new_figure(**kwargs):
    """A matplotlib Figure without pyplot: no backend or global state touched, so the reports
    can be built in headless runs and from notebooks alike."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def fixed_margins(
    fig,
    left: float = 0.6,
    right: float = 0.15,
    bottom: float = 0.55,
    top: float = 0.35,
    wspace: float = 0.7,
    hspace: float = 0.9,
    ncols: int = 1,
    nrows: int = 1,
) -> None:
    """Margins and gaps in inches (fixed: a layout engine would draw every figure twice)."""
    w, h = fig.get_size_inches()
    cell_w = (w - left - right - wspace * (ncols - 1)) / ncols
    cell_h = (h - bottom - top - hspace * (nrows - 1)) / nrows
    fig.subplots_adjust(
        left=left / w,
        right=1 - right / w,
        bottom=bottom / h,
        top=1 - top / h,
        wspace=wspace / cell_w,
        hspace=hspace / cell_h,
    )


def save(fig, path: Path, dpi: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
