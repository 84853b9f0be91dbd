"""Tables as files: one cell format, one markdown writer, one JSON encoder for every report.

Rows are plain dicts or a pandas DataFrame. Missing values (``None``, NaN) are blank in
markdown and ``null`` in JSON; infinities stay visible (``inf``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from glassbox.errors import AnalysisInputError

TableLike = pd.DataFrame | Sequence[Mapping[str, Any]]
FORMATS = ("csv", "json", "md")


def as_frame(table: TableLike) -> pd.DataFrame:
    """A DataFrame of ``table`` (rows keep their keys' first-seen order as columns)."""
    if isinstance(table, pd.DataFrame):
        return table
    columns: list[str] = []
    for row in table:
        columns.extend(k for k in row if k not in columns)
    return pd.DataFrame(list(table), columns=columns)


def fmt(value: Any, floatfmt: str = ".4g") -> str:
    """One table cell as text: floats with ``floatfmt``, missing values blank."""
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return format(value, floatfmt) if math.isfinite(value) else str(value)
    return str(value)


def markdown_table(
    table: TableLike, columns: Sequence[str] | None = None, floatfmt: str = ".4g"
) -> str:
    """A GitHub-markdown table (no trailing newline)."""
    frame = as_frame(table)
    cols = [str(c) for c in (columns if columns is not None else frame.columns)]
    frame = frame.reindex(columns=list(columns)) if columns is not None else frame
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v, floatfmt).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` and numpy/torch scalars as Python numbers,
    so that ``json.dumps`` writes valid JSON."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2)


def records(table: TableLike) -> list[dict[str, Any]]:
    """The rows of ``table`` as dicts of Python scalars."""
    return as_frame(table).to_dict(orient="records")


def write_table(
    table: TableLike, out_dir: str | Path, stem: str, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Write ``table`` to ``<out_dir>/<stem>.<format>`` for each of ``formats`` (csv, json,
    md); return ``{format: path}``."""
    frame = as_frame(table)
    if frame.empty and not len(frame.columns):
        raise AnalysisInputError(f"no rows to write for {stem!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise AnalysisInputError(f"unknown table format(s) {bad}; choose from {FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{stem}.{ext}" for ext in formats}
    if "csv" in paths:
        frame.to_csv(paths["csv"], index=False)
    if "json" in paths:
        paths["json"].write_text(json_text(records(frame)))
    if "md" in paths:
        paths["md"].write_text(markdown_table(frame) + "\n")
    return paths


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a CSV or JSON file written by :func:`write_table` (ints stay ints)."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return records(pd.read_csv(path))


def merge_tables(tables: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Concatenate tables of several runs; identical rows (a shared baseline) once."""
    seen, merged = set(), []
    for rows in tables:
        for r in rows:
            key = json.dumps(json_safe(r), sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                merged.append(dict(r))
    return merged
