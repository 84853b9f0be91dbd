"""Turn :class:`EquivarianceRecord` lists into tables (CSV/JSON) and an error-vs-depth plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from glassbox.equivariance.layerwise import MEASURES, EquivarianceRecord

ERROR_MEASURES = tuple(m for m in MEASURES if m != "consistency")
INTERPOLATED = " (interpolated)"
_PLOT_FLOOR = 1e-8  # exact zeros are drawn here on the log axis


def _flatten(
    records: Iterable[EquivarianceRecord] | Mapping[str, Iterable[EquivarianceRecord]],
) -> list[EquivarianceRecord]:
    """A list of records; a {model name: records} mapping sets each record's ``model``."""
    if isinstance(records, Mapping):
        return [replace(r, model=name) for name, recs in records.items() for r in recs]
    return list(records)


def records_to_frame(records) -> pd.DataFrame:
    """One row per record (columns: the record's fields)."""
    rows = [r.to_dict() for r in _flatten(records)]
    columns = list(EquivarianceRecord.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)


def _column(measure: str, exact: bool) -> str:
    return measure if exact or measure == "lie_derivative" else measure + INTERPOLATED


def summary_table(records) -> pd.DataFrame:
    """One row per (model, layer) in depth order; one column per measure: the mean over the
    group's elements. Interpolated elements get their own ``"<measure> (interpolated)"``
    columns, so interpolation error never mixes into the exact figures."""
    frame = records_to_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=["model", "depth", "layer", "module"])
    frame["column"] = [_column(m, e) for m, e in zip(frame["measure"], frame["exact"])]
    table = frame.pivot_table(
        index=["model", "depth", "layer", "module"],
        columns="column",
        values="value",
        aggfunc="mean",
    )
    order = [_column(m, e) for e in (True, False) for m in MEASURES]
    table = table[[c for c in dict.fromkeys(order) if c in table.columns]]
    table.columns.name = None
    return table.reset_index()


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def save_records(records, directory: str | Path, stem: str = "equivariance") -> dict[str, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` (every record) and ``<stem>_summary.csv``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frame = records_to_frame(records)
    paths = {
        "csv": directory / f"{stem}.csv",
        "json": directory / f"{stem}.json",
        "summary": directory / f"{stem}_summary.csv",
    }
    frame.to_csv(paths["csv"], index=False)
    rows = [{k: _json_safe(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    paths["json"].write_text(json.dumps(rows, indent=1))
    summary_table(records).to_csv(paths["summary"], index=False)
    return paths


def plot_depth(
    records,
    path: str | Path,
    measures: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Error against depth, one line per measure; one line style per model when overlaid.

    ``records`` is a list (models told apart by ``record.model``) or a {model name: records}
    mapping. Errors are averaged over the exact group elements (interpolated ones are drawn
    dashed-dotted as their own lines). With several models the x axis is the relative depth
    (0 = first measured layer, 1 = output) so nets of different length line up. The log
    axis draws exact zeros at 1e-8. Prediction consistency goes into the title.
    """
    from matplotlib.figure import Figure  # no pyplot: safe in headless runs and notebooks

    table = summary_table(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(table["model"])) if not table.empty else []
    wanted = measures or ERROR_MEASURES
    columns = [
        c
        for c in table.columns
        if c.removesuffix(INTERPOLATED) in wanted and c.removesuffix(INTERPOLATED) != "consistency"
    ]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    colors = {m: f"C{i}" for i, m in enumerate(ERROR_MEASURES)}

    fig = Figure(figsize=(9.0, 4.5), constrained_layout=True)
    ax = fig.add_subplot()
    notes = []
    for mi, model in enumerate(models):
        sub = table[table["model"] == model].sort_values("depth")
        n = len(sub)
        x = list(range(n)) if len(models) == 1 else [i / max(n - 1, 1) for i in range(n)]
        label_model = f"{model}: " if len(models) > 1 and model else ""
        for col in columns:
            y = sub[col]
            if y.isna().all():
                continue
            base = col.removesuffix(INTERPOLATED)
            style = styles[mi % len(styles)] if base == col else "-."
            ax.plot(
                x,
                y.clip(lower=_PLOT_FLOOR),
                linestyle=style,
                marker=markers[mi % len(markers)],
                color=colors.get(base, "k"),
                label=label_model + col,
            )
        if "consistency" in sub.columns and sub["consistency"].notna().any():
            notes.append(
                f"{model or 'model'} consistency {sub['consistency'].dropna().iloc[-1]:.2f}"
            )
        if len(models) == 1:
            ax.set_xticks(x)
            ax.set_xticklabels(sub["layer"], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("relative error (log; 0 drawn at 1e-8)")
    ax.set_xlabel("layer" if len(models) == 1 else "relative depth (0 = first layer, 1 = output)")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # outside the axes: never hides a line
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    heading = title or "layerwise equivariance"
    if notes:
        heading += "\n" + "; ".join(notes)
    ax.set_title(heading, fontsize=9)
    fig.savefig(path, dpi=120)
    return path
