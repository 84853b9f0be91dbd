"""Write the separability / probe tables (CSV, JSON, markdown) and plot glass-box vs AlexNet vs
raw pixels.

Rows are plain dicts (see :mod:`glassbox.analysis.separability` and
:mod:`glassbox.analysis.classifiers`). One run holds one model; to compare the glass-box net
with AlexNet, merge the tables of two runs::

    python -m glassbox.analysis.report RUN_A RUN_B --out comparison/

where ``RUN_*`` are run directories (searched for ``separability.csv`` / ``probes.csv``) or
the CSV files themselves.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from glassbox.analysis.layers import INPUT
from glassbox.errors import AnalysisInputError, ReportInputError

SEPARABILITY_FILE = "separability"
PROBES_FILE = "probes"
_MODEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_PIXEL_COLOR = "tab:gray"


# ---------------------------------------------------------------------------------- tables
def _columns(rows: Sequence[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return cols


def _fmt(value, floatfmt: str) -> str:
    if isinstance(value, float):
        return format(value, floatfmt) if math.isfinite(value) else str(value)
    return str(value)


def markdown_table(
    rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".4g"
) -> str:
    """A GitHub-markdown table of ``rows``."""
    cols = list(columns) if columns is not None else _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, ""), floatfmt) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Write ``rows`` to ``<out_dir>/<stem>.csv``, ``.json`` and ``.md``; return the paths."""
    if not rows:
        raise AnalysisInputError(f"no rows to write for {stem!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    paths = {ext: out / f"{stem}.{ext}" for ext in ("csv", "json", "md")}
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(list(rows), indent=2, allow_nan=True))
    paths["md"].write_text(markdown_table(rows, cols))
    return paths


def _parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_table(path: str | Path) -> list[dict]:
    """Rows from a CSV or JSON file written by :func:`write_table`."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open(newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def merge_tables(tables: Sequence[Sequence[dict]]) -> list[dict]:
    """Concatenate tables of several runs; identical rows (the shared ``pixels`` baseline) once."""
    seen, merged = set(), []
    for rows in tables:
        for r in rows:
            key = json.dumps(r, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                merged.append(dict(r))
    return merged


# ---------------------------------------------------------------------------------- plots
def _model_order(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows if r["model"] != INPUT))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_separability(
    rows: Sequence[dict],
    path: str | Path,
    measures: Sequence[str] = ("intra", "inter", "ratio", "fisher"),
) -> Path:
    """Bars per layer, coloured by model, one panel per measure; raw pixels as a dashed line."""
    if not rows:
        raise AnalysisInputError("no separability rows to plot")
    models = _model_order(rows)
    pixels = next((r for r in rows if r["model"] == INPUT), None)
    ordered = ([pixels] if pixels else []) + [r for m in models for r in rows if r["model"] == m]
    labels = [r["layer"] if r["model"] == INPUT else f"{r['model']}\n{r['layer']}" for r in ordered]
    colors = [
        _PIXEL_COLOR if r["model"] == INPUT else _MODEL_COLORS[models.index(r["model"]) % 6]
        for r in ordered
    ]
    fig = Figure(figsize=(max(6.0, 0.55 * len(ordered) + 2), 2.6 * len(measures)))
    axes = fig.subplots(len(measures), 1, squeeze=False)[:, 0]
    for ax, measure in zip(axes, measures):
        values = [float(r[measure]) for r in ordered]
        shown = [v if math.isfinite(v) else 0.0 for v in values]
        ax.bar(range(len(ordered)), shown, color=colors)
        if pixels is not None and math.isfinite(float(pixels[measure])):
            ax.axhline(
                float(pixels[measure]),
                color=_PIXEL_COLOR,
                linestyle="--",
                linewidth=1,
                label="raw pixels",
            )
        positive = [v for v in shown if v > 0]
        if (
            positive
            and min(positive) > 0
            and max(positive) / min(positive) > 100
            and len(positive) == len(shown)
        ):
            ax.set_yscale("log")
        better = "lower is better" if measure == "intra" else "higher is better"
        ax.set_ylabel(f"{measure}\n({better})")
        ax.set_xticks(range(len(ordered)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    handles = [Patch(color=_MODEL_COLORS[i % 6], label=m) for i, m in enumerate(models)]
    axes[0].legend(handles=[*handles, *axes[0].get_lines()], fontsize=7, loc="upper left")
    axes[0].set_title("class separability per layer")
    fig.tight_layout()
    return _save(fig, path)


def plot_probes(rows: Sequence[dict], path: str | Path) -> Path:
    """Test accuracy of each analytical classifier per representation (grouped bars)."""
    if not rows:
        raise AnalysisInputError("no classifier rows to plot")
    reps = list(dict.fromkeys((r["model"], r["layer"]) for r in rows))
    clfs = list(dict.fromkeys(r["classifier"] for r in rows))
    acc = {(r["model"], r["layer"], r["classifier"]): float(r["test_acc"]) for r in rows}
    width = 0.8 / len(clfs)
    fig = Figure(figsize=(max(6.0, 0.6 * len(reps) + 2), 3.6))
    ax = fig.subplots()
    for j, clf in enumerate(clfs):
        xs = [i + (j - (len(clfs) - 1) / 2) * width for i in range(len(reps))]
        ax.bar(xs, [acc.get((m, layer, clf), 0.0) for m, layer in reps], width=width, label=clf)
    ax.set_xticks(range(len(reps)))
    ax.set_xticklabels(
        [layer if m == INPUT else f"{m}\n{layer}" for m, layer in reps],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title("analytical classifiers on frozen representations")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_explained_variance(report: dict, path: str | Path) -> Path:
    """Cumulative explained variance, with the threshold, its dimension and the model's dimension."""
    cum = report["cumulative"]
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    dims = list(range(1, len(cum) + 1))
    ax.plot(dims, cum, marker=".", label="cumulative")
    ax.bar(dims, report["explained_variance_ratio"], alpha=0.3, label="per component")
    if report.get("threshold") is not None:
        ax.axhline(
            report["threshold"],
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"threshold {report['threshold']}",
        )
    if report.get("threshold_dim") is not None:
        ax.axvline(
            report["threshold_dim"],
            color="tab:red",
            linewidth=1,
            label=f"d = {report['threshold_dim']}",
        )
    if report.get("reduced_dim") is not None:
        kept = report.get("variance_kept")
        ax.axvline(
            report["reduced_dim"], color="tab:green", linewidth=1,
            label=f"model d = {report['reduced_dim']}" + (f" (keeps {kept:.3f})" if kept is not None else ""),
        )  # fmt: skip
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------- CLI
def _find(path: Path, stem: str) -> list[Path]:
    if path.is_file():
        return [path] if path.stem == stem else []
    return sorted(path.rglob(f"{stem}.csv"))


def compare_runs(inputs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Merge the separability and probe tables found under ``inputs`` and plot them together."""
    out: dict[str, Path] = {}
    for stem, plot in ((SEPARABILITY_FILE, plot_separability), (PROBES_FILE, plot_probes)):
        files = [f for p in inputs for f in _find(Path(p), stem)]
        if not files:
            continue
        rows = merge_tables([read_table(f) for f in files])
        out.update({f"{stem}.{k}": v for k, v in write_table(rows, out_dir, stem).items()})
        out[f"{stem}.png"] = plot(rows, Path(out_dir) / f"{stem}.png")
    if not out:
        raise ReportInputError(
            f"no {SEPARABILITY_FILE}.csv or {PROBES_FILE}.csv under {[str(p) for p in inputs]}: pass run "
            "directories of runs with the separability callback, or the CSV files"
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=compare_runs.__doc__)
    parser.add_argument(
        "inputs", nargs="+", help="run directories or separability/probes CSV files"
    )
    parser.add_argument("--out", default="separability_comparison", help="output directory")
    args = parser.parse_args(argv)
    for name, path in compare_runs(args.inputs, args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
