"""The figures of the reports, drawn without pyplot (safe in headless runs and notebooks).

Every ``plot_*`` function returns the matplotlib ``Figure`` when ``path`` is ``None``, else
saves it as a PNG there and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from glassbox.errors import AnalysisInputError

INPUT = "pixels"  # the raw-pixel baseline row of the separability tables
_MODEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_PIXEL_COLOR = "tab:gray"
_PLOT_FLOOR = 1e-8  # exact zeros are drawn here on the log axis of plot_depth


def save_figure(fig: Figure, path: str | Path | None, dpi: int = 120):
    """``fig`` if ``path`` is None, else the PNG written at ``path``."""
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------- separability
def _model_order(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows if r["model"] != INPUT))


def plot_separability(
    rows: Sequence[dict],
    path: str | Path | None = None,
    measures: Sequence[str] = ("intra", "inter", "ratio", "fisher"),
) -> Figure | Path:
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
    return save_figure(fig, path)


def plot_probes(rows: Sequence[dict], path: str | Path | None = None) -> Figure | Path:
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
    return save_figure(fig, path)


def plot_explained_variance(report: dict, path: str | Path | None = None) -> Figure | Path:
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
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------- equivariance
def plot_depth(
    records,
    path: str | Path | None = None,
    measures: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure | Path:
    """Error against depth, one line per measure; one line style per model when overlaid.

    ``records`` is a list (models told apart by ``record.model``) or a {model name: records}
    mapping. Errors are averaged over the exact group elements (interpolated ones are drawn
    dashed-dotted as their own lines). With several models the x axis is the relative depth
    (0 = first measured layer, 1 = output) so nets of different length line up. The log
    axis draws exact zeros at 1e-8. Prediction consistency goes into the title.
    """
    from glassbox.equivariance.results import ERROR_MEASURES, INTERPOLATED, summary_table

    table = summary_table(records)
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
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------- sweeps
def plot_accuracy_vs_angle(
    curves: pd.DataFrame, path: str | Path | None = None, metric: str = "acc"
) -> Figure | Path:
    """Mean ± std band per group against the rotation angle (``curves``: the long table
    ``group, angle, mean, std, n`` of :func:`glassbox.reporting.sweep.angle_curves`).

    Each legend entry gives the group's mean over one full turn (angles equal modulo 360°
    counted once); the legend sits outside the axes so it never hides a curve; dotted lines
    mark the multiples of 90°, the only angles the pixel grid represents exactly (the others
    are interpolated)."""
    from glassbox.data.transforms import mean_over_turn

    fig = Figure(figsize=(8.5, 4.2))
    ax = fig.subplots()
    lo, hi = curves["angle"].min(), curves["angle"].max()
    for a in range(0, 361, 90):
        if lo <= a <= hi:
            ax.axvline(a, color="0.55", lw=0.8, ls=":", zorder=0)
    for group, g in curves.groupby("group", sort=False):
        g = g.sort_values("angle")
        n = int(g["n"].iloc[0])
        turn = mean_over_turn(dict(zip(g["angle"], g["mean"])))
        label = f"{group} (n={n}): mean {turn:.3f}"
        (line,) = ax.plot(g["angle"], g["mean"], marker="o", ms=3, label=label)
        ax.fill_between(
            g["angle"],
            g["mean"] - g["std"],
            g["mean"] + g["std"],
            color=line.get_color(),
            alpha=0.2,
        )
    ax.set_xticks(
        [a for a in range(0, 361, 45) if lo <= a <= hi] or sorted(curves["angle"].unique())
    )
    ax.set_xlabel("rotation of the test images (degrees; dotted: exact on the pixel grid)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} against rotation angle (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        title="mean over angles",
        title_fontsize=7,
    )
    fig.tight_layout()
    return save_figure(fig, path)
