"""Equivariance records as tables, scalars and one :class:`~glassbox.results.Result`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import pandas as pd

from glassbox.equivariance.layerwise import MEASURES, EquivarianceRecord
from glassbox.reporting.figures import plot_depth
from glassbox.results import Result, write_files

ANALYSIS = "equivariance"
ERROR_MEASURES = tuple(m for m in MEASURES if m != "consistency")
INTERPOLATED = " (interpolated)"
ID_COLUMNS = ["model", "depth", "layer", "module"]
NOTE = "note"


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
    columns, so interpolation error never mixes into the exact figures. A measure that does
    not apply to a layer is NaN, and the last column, ``note``, says why (empty otherwise)."""
    frame = records_to_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, NOTE])
    frame["column"] = [_column(m, e) for m, e in zip(frame["measure"], frame["exact"])]
    table = frame.pivot_table(index=ID_COLUMNS, columns="column", values="value", aggfunc="mean")
    # the pivot drops rows and columns that are all NaN (not applicable): put them back
    present = set(frame["column"])
    order = [_column(m, e) for e in (True, False) for m in MEASURES]
    rows = pd.MultiIndex.from_frame(frame[ID_COLUMNS].drop_duplicates())
    table = table.reindex(
        index=rows, columns=[c for c in dict.fromkeys(order) if c in present]
    ).sort_index()
    table.columns.name = None
    notes = (
        frame[frame[NOTE] != ""]
        .groupby(ID_COLUMNS)[NOTE]
        .agg(lambda s: "; ".join(dict.fromkeys(s)))
    )
    table[NOTE] = notes.reindex(table.index).fillna("").to_numpy() if len(notes) else ""
    return table.reset_index()


def scalars_from_summary(table: pd.DataFrame, prefix: str = ANALYSIS) -> dict[str, float]:
    """``{"<prefix>/<layer>/<measure>": mean over elements}`` from :func:`summary_table`
    (an interpolated measure is logged as ``<measure>_interpolated``)."""
    result = Result(prefix)
    measure_cols = [c for c in table.columns if c not in (*ID_COLUMNS, NOTE)]
    for row in table.to_dict(orient="records"):
        for col in measure_cols:
            value = row[col]
            if value is not None and math.isfinite(value):
                result.add_scalar(
                    row["layer"], col.replace(INTERPOLATED, "_interpolated"), value=value
                )
    return result.scalars


def equivariance_result(
    records,
    title: str | None = None,
    caption: str = "",
    stem: str = ANALYSIS,
    plot: bool = True,
) -> Result:
    """The :class:`~glassbox.results.Result` of a layerwise measurement: the scalars (mean over
    the group's elements per layer and measure), the records (``<stem>.csv``/``.json``, not
    logged), the summary table (``<stem>_summary.csv``, logged as ``equivariance/table``) and
    the error-vs-depth plot (``<stem>.png``, logged as ``equivariance/plot``)."""
    result = Result(ANALYSIS)
    table = summary_table(records)
    result.scalars.update(scalars_from_summary(table))
    result.add_table(
        "records", records_to_frame(records), file=stem, formats=("csv", "json"), log=False
    )
    result.add_table("table", table, file=f"{stem}_summary")
    if plot:
        result.add_figure("plot", plot_depth(records, title=title), file=stem, caption=caption)
    return result


def save_records(records, directory: str | Path, stem: str = ANALYSIS) -> dict[str, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` (every record) and ``<stem>_summary.csv``."""
    result = equivariance_result(records, stem=stem, plot=False)
    files = write_files(result, directory)
    return {
        "csv": files["table:records.csv"],
        "json": files["table:records.json"],
        "summary": files["table:table.csv"],
    }
