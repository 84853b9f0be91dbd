"""``report.html`` of a Hydra multirun: the jobs side by side.

    python -m glassbox.report logs/train/multiruns/<time>

The jobs are collected and grouped as by the sweep tables (:func:`glassbox.reporting.sweep.collect`,
:func:`glassbox.reporting.sweep.summarise`, :func:`glassbox.reporting.sweep.group_keys`,
:func:`glassbox.reporting.sweep.angle_curves`, :func:`glassbox.reporting.figures.plot_accuracy_vs_angle`): one group
per combination of the overrides that vary, except the seed; every number is the mean ± std
over a group's seeds. From the jobs' files (nothing recomputed) it adds the equivariance-vs-depth
overlay of the groups (tested checkpoint of each job) and the separability overlay, and links
every job's own ``report.html`` (built here for jobs that lack one). Sections: ``summary``,
``angle``, ``equivariance``, ``separability``, ``analysis``, ``jobs``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glassbox.reporting import html as H
from glassbox.reporting.run_report import (
    ASSETS,
    REPORT_FILE,
    _final_tag,
    _is_number,
    _read_csv,
    _tags,
    build_run_report,
)
from glassbox.utils.io import atomic_write_text

log = logging.getLogger(__name__)

SWEEP_SECTIONS = (
    ("summary", "Summary (mean ± std over seeds)"),
    ("angle", "Accuracy vs rotation angle"),
    ("equivariance", "Equivariance vs depth, per model"),
    ("separability", "Separability vs depth, per model"),
    ("analysis", "Final analysis scalars"),
    ("jobs", "Jobs"),
)
EQUIVARIANCE_MEASURES = ("invariance", "equivariance", "best_fit", "spatial")
SEPARABILITY_MEASURES = ("fisher", "ratio")


def _cell(mean: Any, std: Any, n: int, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    text = H.fmt(float(mean), digits)
    return text if n <= 1 else f"{text} ± {H.fmt(float(std), digits)}"


def _groups(df, keys: list[str]) -> list[str]:
    """The group label of every row, as :func:`glassbox.reporting.sweep.summarise` names the groups."""
    labels = []
    for _, row in df.iterrows():
        if not keys:
            labels.append(str(row.get("model") or "all"))
        elif keys == ["+model"]:
            labels.append(str(row["+model"]))
        else:
            labels.append(", ".join(f"{k[1:]}={row[k]}" for k in keys))
    return labels


def _summary_section(summary, headline: list[str]) -> str:
    columns = ["group", "n", *headline]
    rows, keys = [], []
    for _, r in summary.iterrows():
        n = int(r["n"])
        rows.append([r["group"], n, *[_cell(r[f"{m}/mean"], r[f"{m}/std"], n) for m in headline]])
        keys.append([None, None, *[f"{r['group']}/{m}" for m in headline]])
    return H.note(
        "n: finished jobs (seeds) of the group; the std is the sample std (ddof=1)."
    ) + H.table(columns, rows, keys)


def _angle_section(summary, out: Path, assets: Path) -> str:
    from glassbox.reporting.figures import plot_accuracy_vs_angle
    from glassbox.reporting.sweep import angle_curves

    curves = angle_curves(summary)
    if curves.empty:
        return H.missing(
            "no test_rot<angle>/acc metrics: set rotated_test.angles (e.g. "
            "rotated_test.angles=[0,45,90,135,180]) to test at fixed rotations"
        )
    png = plot_accuracy_vs_angle(curves, assets / "accuracy_vs_angle.png")
    groups = list(dict.fromkeys(curves["group"]))
    angles = sorted(curves["angle"].unique())
    rows = []
    for a in angles:
        row = [f"{a:g}°"]
        for g in groups:
            sel = curves[(curves["group"] == g) & (curves["angle"] == a)]
            row.append(
                _cell(sel["mean"].iloc[0], sel["std"].iloc[0], int(sel["n"].iloc[0]))
                if len(sel)
                else ""
            )
        rows.append(row)
    return H.figure(
        H.rel(png, out), "test accuracy against the rotation of the test images", width=760
    ) + H.table(["angle", *groups], rows)


def _job_tables(
    jobs: list[tuple[str, Path]], analysis: str, file: str
) -> dict[str, list[list[dict]]]:
    """``{group: [rows of each job's final <analysis>/<tag>/<file>]}``."""
    found: dict[str, list[list[dict]]] = {}
    for group, job in jobs:
        folder = job / analysis
        tags = [t for t in _tags(folder) if (folder / t / file).is_file()]
        tag = _final_tag(tags)
        if tag is None:
            continue
        rows = _read_csv(folder / tag / file)
        if rows:
            found.setdefault(group, []).append(rows)
    return found


def _overlay(
    found: dict[str, list[list[dict]]], measures: Sequence[str], path: Path, what: str, log_y: bool
) -> Path | None:
    """One panel per measure: per group, the mean ± std over its jobs against relative depth
    (0 = first measured layer, 1 = last), so nets of different length line up."""

    def groups_with(measure: str) -> int:
        return sum(
            any(_is_number(r.get(measure)) for rows in tables for r in rows)
            for tables in found.values()
        )

    # the two measures most groups have (a model comparison needs both models), in `measures` order
    present = sorted(
        (m for m in measures if groups_with(m)), key=lambda m: (-groups_with(m), measures.index(m))
    )[:2]
    if not present:
        return None
    fig = H.new_figure(figsize=(5.4 * len(present), 3.7))
    H.fixed_margins(fig, left=0.7, bottom=0.55, top=0.3, wspace=0.8, ncols=len(present))
    axes = fig.subplots(1, len(present), squeeze=False).ravel()
    for ax, measure in zip(axes, present):
        for gi, (group, tables) in enumerate(found.items()):
            # layers in the first job's order; the jobs of a group share their architecture
            layers = [str(r.get("layer")) for r in tables[0]]
            values: dict[str, list[float]] = {layer: [] for layer in layers}
            for rows in tables:
                for r in rows:
                    v = r.get(measure)
                    if str(r.get("layer")) in values and _is_number(v) and math.isfinite(v):
                        values[str(r.get("layer"))].append(float(v))
            pts = []
            for i, layer in enumerate(layers):
                vs = values[layer]
                if vs:
                    mean = sum(vs) / len(vs)
                    std = (
                        math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1))
                        if len(vs) > 1
                        else 0.0
                    )
                    pts.append((i / max(len(layers) - 1, 1), mean, std))
            if not pts:
                continue
            x, mean, std = zip(*pts)
            floor = 1e-8 if log_y else -math.inf
            lo = [max(m - s, floor) for m, s in zip(mean, std)]
            hi = [m + s for m, s in zip(mean, std)]
            mean = [max(m, floor) for m in mean]
            (line,) = ax.plot(
                x, mean, marker="o", ms=3, label=f"{group} (n={len(tables)})", color=f"C{gi}"
            )
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{what}: {measure}", fontsize=10)
        ax.set_xlabel("relative depth (0: first layer, 1: last)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return H.save(fig, path)


def _overlay_section(
    jobs, analysis: str, file: str, measures, out: Path, assets: Path, log_y: bool, caption: str
) -> str:
    found = _job_tables(jobs, analysis, file)
    if not found:
        return H.missing(
            f"no job wrote {analysis}/<tag>/{file}"
            + (
                " (train with callbacks=[default,separability])"
                if analysis == "separability"
                else ""
            )
        )
    png = _overlay(found, measures, assets / f"{analysis}_overlay.png", analysis, log_y)
    if png is None:
        return H.missing(f"the {analysis} tables hold none of {', '.join(measures)}")
    body = H.figure(H.rel(png, out), caption, width=1100)
    # the per-layer numbers behind the plot: one table per group
    for group, tables in found.items():
        cols = [c for c in tables[0][0] if c in measures]
        rows = []
        for i, r in enumerate(tables[0]):
            row = [r.get("layer")]
            for c in cols:
                vs = [
                    float(t[i][c])
                    for t in tables
                    if i < len(t) and _is_number(t[i].get(c)) and math.isfinite(t[i][c])
                ]
                if not vs:  # an equivariance measure that does not apply to the layer: n/a
                    row.append("n/a" if analysis == "equivariance" else "")
                    continue
                mean = sum(vs) / len(vs)
                std = (
                    math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1))
                    if len(vs) > 1
                    else 0.0
                )
                row.append(_cell(mean, std, len(vs), 4))
            rows.append(row)
        body += H.details(
            f"{group}: per-layer mean ± std over {len(tables)} job(s)",
            H.table(["layer", *cols], rows),
        )
    return body


def _analysis_section(summary) -> str:
    from glassbox.reporting.sweep import analysis_tables

    tables = analysis_tables(summary)
    if not tables:
        return H.missing("no analysis scalars in the jobs' metrics.json")
    body = H.note(
        "the final scalars of each analysis callback (tested checkpoint), mean ± std over seeds"
    )
    for prefix, table in tables.items():
        body += H.details(f"{prefix} ({len(table)} scalars)", H.dataframe_table(table))
    return body


def _jobs_section(
    df, jobs_dirs: dict[int, Path], varying: list[str], headline: list[str], out: Path
) -> str:
    columns = ["job", "report", "status", *[k[1:] for k in varying], "seed", *headline]
    rows, keys = [], []
    for i, r in df.iterrows():
        job_dir = jobs_dirs[i]
        report = job_dir / REPORT_FILE
        link = (
            f'<a href="{H.esc(H.rel(report, out))}">report</a>'
            if report.is_file()
            else '<span class="missing">none</span>'
        )
        values = [r.get(m) for m in headline]
        rows.append(
            [
                H.esc(r["job"]),
                link,
                H.esc(r["status"]),
                *[H.esc(r.get(k, "")) for k in varying],
                H.esc("" if r.get("seed") is None else r.get("seed")),
                *[v if _is_number(v) and not math.isnan(v) else "" for v in values],
            ]
        )
        keys.append([None] * (4 + len(varying)) + [f"{r['job']}/{m}" for m in headline])
    n_text = 4 + len(varying)
    return H.table(columns, rows, keys, html_columns=range(n_text))


def build_sweep_report(
    sweep_dirs: Sequence[str | Path], out_dir: str | Path | None = None, job_reports: bool = True
) -> Path:
    """Write ``report.html`` (figures under ``report_files/``) into ``out_dir`` (default: the
    first sweep directory) from the jobs' files; with ``job_reports``, build the
    ``report.html`` of every finished job that has none. Returns the report's path."""
    from glassbox.reporting.sweep import HEADLINE, collect, group_keys, summarise

    start = time.perf_counter()
    df = collect(sweep_dirs)
    summary = summarise(df)
    varying = group_keys(df)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dirs[0])
    assets = out / ASSETS
    assets.mkdir(parents=True, exist_ok=True)

    roots = [Path(s) for s in sweep_dirs]
    job_dirs: dict[int, Path] = {}
    for i, r in df.iterrows():
        for root in roots:
            candidate = root.parent / r["job"]
            if candidate.is_dir():
                job_dirs[i] = candidate
                break
    ok = df[df["status"] == "ok"]
    if job_reports:
        for i in ok.index:
            job = job_dirs.get(i)
            if job is not None and not (job / REPORT_FILE).is_file():
                try:
                    build_run_report(job)
                except Exception as err:  # noqa: BLE001 - a broken job keeps the sweep report
                    log.warning("report: could not build the report of %s: %s", job, err)
    labels = dict(zip(ok.index, _groups(ok, varying)))
    jobs = [(labels[i], job_dirs[i]) for i in ok.index if i in job_dirs]

    headline = [m for m in HEADLINE if f"{m}/mean" in summary.columns]
    page = H.Page(
        f"sweep: {len(ok)} of {len(df)} jobs, {len(summary)} group(s)",
        ", ".join(str(Path(s).resolve()) for s in sweep_dirs)
        + (f"; grouped by {', '.join(k[1:] for k in varying)}" if varying else ""),
    )
    builders = {
        "summary": lambda: _summary_section(summary, headline),
        "angle": lambda: _angle_section(summary, out, assets),
        "equivariance": lambda: _overlay_section(
            jobs,
            "equivariance",
            "equivariance_summary.csv",
            EQUIVARIANCE_MEASURES,
            out,
            assets,
            True,
            "mean error over the group's elements against relative depth, on each job's tested "
            "checkpoint; line: mean over the group's seeds, band: ± std",
        ),
        "separability": lambda: _overlay_section(
            jobs,
            "separability",
            "separability.csv",
            SEPARABILITY_MEASURES,
            out,
            assets,
            False,
            "class separability of each layer's features against relative depth; line: mean over "
            "the group's seeds, band: ± std",
        ),
        "analysis": lambda: _analysis_section(summary),
        "jobs": lambda: _jobs_section(df, job_dirs, varying, headline, out),
    }
    page.build(SWEEP_SECTIONS, builders)
    path = atomic_write_text(out / REPORT_FILE, page.render())
    log.info("sweep report written to %s (%.1f s)", path, time.perf_counter() - start)
    return path
