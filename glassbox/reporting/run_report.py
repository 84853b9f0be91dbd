"""``report.html`` of one run directory, built from the files the run left behind.

    python -m glassbox.report <run dir>

Nothing is recomputed: the report reads ``.hydra/config.yaml``, ``metrics.json``,
``history.csv`` (:class:`~glassbox.callbacks.history.HistoryCallback`; a CSV logger's
``metrics.csv`` otherwise), and the analysis callbacks' folders ``equivariance/<tag>/``,
``separability/<tag>/`` and ``interpretation/<tag>/`` with their ``status.json``. It draws
three figures of its own (confusion matrix, training curves, equivariance over the epochs) into
``report_files/`` and shows the analyses' own PNGs where they lie. Sections (each with an
``id``, in this order): ``metrics``, ``training``, ``equivariance``, ``separability``,
``pose``, ``interpretation``, ``status``, ``config`` (the header names the run: model, data,
seed, epochs, optimizer, overrides). A section whose inputs are absent
says so and why (the analysis was not configured, was skipped, or the run is an evaluation).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from glassbox.errors import GlassboxError
from glassbox.reporting import html as H
from glassbox.utils.io import atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
ASSETS = "report_files"
# results first (the header names the run); the full configuration closes the page
SECTIONS = (
    ("metrics", "Test metrics"),
    ("training", "Training curves"),
    ("equivariance", "Equivariance vs depth"),
    ("separability", "Separability per layer"),
    ("pose", "Pose readout"),
    ("interpretation", "Interpretation"),
    ("status", "Analysis status"),
    ("config", "Configuration"),
)
ANALYSES = ("equivariance", "separability", "interpretation")
EPOCH_TAG = re.compile(r"^epoch(\d+)$")
# summary-table columns that are not measures
_ID_COLUMNS = ("model", "depth", "layer", "module")
_NA = "n/a"  # a measure that does not apply to a layer
# headline cards, when present in metrics.json
HEADLINE = (
    ("test accuracy", "test/acc"),
    ("test F1", "test/f1"),
    ("test loss", "test/loss"),
    ("val accuracy (last epoch)", "val/acc"),
    ("random-rotation test acc", "test_rotated/acc"),
)


class ReportInputError(GlassboxError):
    """The directory given to the report is not a run (or multirun) directory."""


# --------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("report: could not read %s: %s", path, err)
        return None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        log.warning("report: could not read %s: %s", path, err)
        return None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV as dicts; numeric cells as floats, blanks as None."""
    try:
        with open(path, newline="") as fh:
            return [{k: _value(v) for k, v in row.items() if k} for row in csv.DictReader(fh)]
    except (OSError, csv.Error) as err:
        log.warning("report: could not read %s: %s", path, err)
        return []


def _value(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _tags(folder: Path) -> list[str]:
    """Sub-folders of an analysis folder in schedule order: epochs, fit_end, test, others."""
    if not folder.is_dir():
        return []
    tags = [p.name for p in folder.iterdir() if p.is_dir()]

    def order(tag: str):
        m = EPOCH_TAG.match(tag)
        if m:
            return (0, int(m.group(1)), tag)
        return ({"fit_end": 1, "test": 2}.get(tag, 3), 0, tag)

    return sorted(tags, key=order)


def _final_tag(tags: list[str]) -> str | None:
    """The tag a report shows first: the tested checkpoint, else the final weights, else the
    latest epoch."""
    for tag in ("test", "fit_end"):
        if tag in tags:
            return tag
    return tags[-1] if tags else None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class RunFiles:
    """What one run directory holds, read once."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
        self.config_text = (
            (run_dir / ".hydra" / "config.yaml").read_text()
            if (run_dir / ".hydra" / "config.yaml").is_file()
            else ""
        )
        overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
        self.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
        record = (
            _read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else None
        )
        self.record = record if isinstance(record, dict) else {}
        metrics = self.record.get("metrics")
        self.metrics: dict[str, Any] = metrics if isinstance(metrics, dict) else {}
        self.task = self.record.get("task") or self.config.get("task_name") or "run"


# --------------------------------------------------------------------------- sections
def _headline(run: RunFiles) -> str:
    """One line naming the run: seed, epochs, optimizer, command-line overrides."""
    rows = dict(_config_rows(run))
    parts = [
        f"seed {rows['seed']}" if "seed" in rows else "",
        f"{rows['max epochs']} epochs max" if "max epochs" in rows else "",
        str(rows.get("optimizer", "")),
        f"overrides: {rows['command-line overrides']}"
        if rows.get("command-line overrides", "none") != "none"
        else "",
    ]
    return " · ".join(p for p in parts if p)


def _config_section(run: RunFiles) -> str:
    rows = _config_rows(run)
    body = H.table(["setting", "value"], [(k, str(v)) for k, v in rows])
    if run.config_text:
        body += H.details("full configuration (.hydra/config.yaml)", H.pre(run.config_text))
    else:
        body += H.missing("no .hydra/config.yaml in this run directory")
    return body


def _config_rows(run: RunFiles) -> list[tuple[str, Any]]:
    cfg = run.config
    optimizer = _get(cfg, "model.optimizer") or {}
    callbacks = cfg.get("callbacks") if isinstance(cfg.get("callbacks"), Mapping) else {}
    loggers = cfg.get("logger") if isinstance(cfg.get("logger"), Mapping) else {}
    rows = [
        ("task", run.task),
        ("model", run.record.get("model") or _get(cfg, "model.name")),
        ("network", _get(cfg, "model.net._target_")),
        ("data", run.record.get("data") or _get(cfg, "data.name")),
        ("batch size", _get(cfg, "data.batch_size")),
        ("seed", cfg.get("seed")),
        ("max epochs", _get(cfg, "trainer.max_epochs")),
        ("accelerator", _get(cfg, "trainer.accelerator")),
        ("precision", _get(cfg, "trainer.precision")),
        (
            "optimizer",
            " ".join(
                str(x)
                for x in (
                    str(optimizer.get("_target_", "")).rsplit(".", 1)[-1],
                    f"lr={optimizer['lr']}" if "lr" in optimizer else "",
                    f"weight_decay={optimizer['weight_decay']}"
                    if "weight_decay" in optimizer
                    else "",
                )
                if x
            )
            if isinstance(optimizer, Mapping)
            else None,
        ),
        ("checkpoint", run.record.get("ckpt_path") or run.record.get("best_ckpt")),
        ("callbacks", ", ".join(k for k, v in callbacks.items() if isinstance(v, Mapping))),
        ("loggers", ", ".join(k for k, v in loggers.items() if isinstance(v, Mapping)) or "none"),
        ("command-line overrides", " ".join(run.overrides) or "none"),
    ]
    return [(k, v) for k, v in rows if v not in (None, "")]


def _plot_confusion(matrix: list[list[float]], path: Path) -> Path:
    n = len(matrix)
    fig = H.new_figure(figsize=(min(2.4 + 0.45 * n, 9.5), min(1.6 + 0.42 * n, 8.5)))
    H.fixed_margins(fig, left=0.7, right=1.0, bottom=0.6, top=0.35)
    ax = fig.add_subplot()
    totals = [sum(r) or 1 for r in matrix]
    share = [[v / t for v in r] for r, t in zip(matrix, totals)]
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = matrix[i][j]
                ax.text(
                    j,
                    i,
                    f"{int(v)}" if float(v).is_integer() else f"{v:.2g}",
                    ha="center",
                    va="center",
                    fontsize=7 if n > 12 else 8,
                    color="white" if share[i][j] > 0.6 else "black",
                )
    ticks = list(range(n))
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("test confusion matrix (colour: share of the true class)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, pad=0.03)
    return H.save(fig, path)


def _metrics_section(run: RunFiles, assets: Path) -> str:
    if not run.metrics:
        return H.missing(
            "no metrics.json: the run did not finish (or is still running); rerun it or "
            "resume it with ckpt_path=last"
        )
    m = run.metrics
    body = H.cards([(label, m[key], key) for label, key in HEADLINE if _is_number(m.get(key))])
    scalars = [(k, v) for k, v in m.items() if _is_number(v)]
    tested = [(k, v) for k, v in scalars if k.split("/")[0].startswith("test")]
    fitted = [(k, v) for k, v in scalars if k.split("/")[0] in ("train", "val")]
    tables = ""
    if tested:
        tables += "<h3>Test</h3>" + H.table(
            ["metric", "value"], [(k, v) for k, v in tested], keys=[(None, k) for k, _ in tested]
        )
    if fitted:
        tables += "<h3>Last training epoch</h3>" + H.table(
            ["metric", "value"], [(k, v) for k, v in fitted], keys=[(None, k) for k, _ in fitted]
        )
    matrix = m.get("test/confusion_matrix")
    if isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix):
        png = _plot_confusion(matrix, assets / "confusion_matrix.png")
        plot = H.figure(
            H.rel(png, run.dir), "rows: true class, columns: predicted class", width=520
        )
    else:
        plot = H.missing("no test/confusion_matrix in metrics.json (the run was not tested)")
    # the tables and the confusion matrix side by side: all of it on the first screen
    return body + f'<div class="grid"><div>{tables}</div>{plot}</div>'


def _history(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Epoch rows from history.csv, else from a CSV logger's metrics.csv (last value per epoch)."""
    path = run_dir / "history.csv"
    if path.is_file():
        return _read_csv(path), "history.csv"
    for logged in sorted(run_dir.glob("csv/**/metrics.csv")):
        by_epoch: dict[float, dict[str, Any]] = {}
        for row in _read_csv(logged):
            epoch = row.get("epoch")
            if not _is_number(epoch):
                continue
            merged = by_epoch.setdefault(epoch, {"epoch": epoch})
            merged.update(
                {
                    k: v
                    for k, v in row.items()
                    if v is not None and k.startswith(("train/", "val/", "lr"))
                }
            )
        rows = [by_epoch[e] for e in sorted(by_epoch) if len(by_epoch[e]) > 1]
        if rows:  # an evaluation's CSV log has test metrics only: no history
            return rows, H.rel(logged, run_dir)
    return [], ""


def _best_epoch(run: RunFiles) -> int | None:
    m = re.search(r"epoch_(\d+)", str(run.record.get("best_ckpt") or ""))
    return int(m.group(1)) if m else None


def _plot_history(rows: list[dict[str, Any]], path: Path, best: int | None) -> Path:
    from matplotlib.ticker import MaxNLocator

    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("epoch", "step")))
    # one panel per measured quantity (loss, acc, ...: the part after the split), lr last
    panels: dict[str, list[str]] = {}
    for c in columns:
        name = "learning rate" if c.startswith("lr") else c.split("/", 1)[-1]
        panels.setdefault(name, []).append(c)
    order = sorted(
        panels, key=lambda p: (p == "learning rate", {"loss": 0, "acc": 1}.get(p, 2), p)
    )[:8]
    ncols = min(4, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = H.new_figure(figsize=(3.6 * ncols, 2.9 * nrows))
    H.fixed_margins(
        fig, left=0.55, bottom=0.5, top=0.3, wspace=0.6, hspace=0.8, ncols=ncols, nrows=nrows
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = {"train": "C0", "val": "C1"}
    for ax, name in zip(axes, order):
        values = []
        for i, c in enumerate(panels[name]):
            pts = [
                (r["epoch"], r[c])
                for r in rows
                if _is_number(r.get(c)) and _is_number(r.get("epoch"))
            ]
            if pts:
                values += [v for _, v in pts]
                color = colors.get(c.split("/", 1)[0], f"C{2 + i}")
                ax.plot(*zip(*pts), marker="o", ms=3, label=c, color=color)
        if best is not None:
            ax.axvline(best, color="0.55", linestyle=":", linewidth=1.2, label="best checkpoint")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        positive = [v for v in values if v > 0]
        if name == "learning rate" and positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
        elif name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    return H.save(fig, path)


def _training_section(run: RunFiles, assets: Path) -> str:
    rows, source = _history(run.dir)
    if not any(k not in ("epoch", "step") for r in rows for k in r):
        if run.task == "evaluate":
            return H.missing("an evaluation of a checkpoint: no training in this run")
        return H.missing(
            "no history.csv (and no CSV logger metrics.csv): add callbacks.history "
            "(conf/callbacks/history.yaml, part of callbacks=default) to keep the training curves"
        )
    best = _best_epoch(run)
    png = _plot_history(rows, assets / "training_curves.png", best)
    body = H.figure(
        H.rel(png, run.dir),
        f"{len(rows)} epochs from {source}"
        + (f"; dotted line: the best checkpoint (epoch {best})" if best is not None else ""),
    )
    last = rows[-1]
    shown = [(k, v) for k, v in last.items() if k not in ("epoch", "step") and _is_number(v)]
    body += H.details(
        "per-epoch values",
        H.table(
            ["epoch", *[k for k, _ in shown]],
            [
                [int(r["epoch"]), *[r.get(k) for k, _ in shown]]
                for r in rows
                if _is_number(r.get("epoch"))
            ],
        ),
    )
    return body


def _measures(rows: list[dict[str, Any]]) -> list[str]:
    """Error measures with any finite value: invariance, equivariance, best_fit, spatial first."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    found = [
        c
        for c in cols
        if c not in _ID_COLUMNS
        and c != "consistency"
        and any(_is_number(r.get(c)) and math.isfinite(r[c]) for r in rows)
    ]
    first = ("invariance", "equivariance", "best_fit", "spatial")
    return sorted(
        found, key=lambda c: (first.index(c) if c in first else len(first), cols.index(c))
    )


def _plot_equivariance_epochs(
    summaries: dict[str, list[dict[str, Any]]], measures: list[str], path: Path
) -> Path:
    from matplotlib import colormaps

    measures = measures[:2]
    ncols = len(measures)
    nrows = 1
    fig = H.new_figure(figsize=(5.6 * ncols, 3.9))
    H.fixed_margins(fig, left=0.7, bottom=1.3, top=0.3, wspace=0.8, ncols=ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    epochs = [t for t in summaries if EPOCH_TAG.match(t)]
    cmap = colormaps["viridis"]
    layers: list[str] = []
    for rows in summaries.values():
        layers += [str(r.get("layer")) for r in sorted(rows, key=lambda r: r.get("depth") or 0)]
    layers = list(dict.fromkeys(layers))
    for ax, measure in zip(axes, measures):
        for tag, rows in summaries.items():
            rows = sorted(rows, key=lambda r: r.get("depth") or 0)
            pts = [
                (layers.index(str(r["layer"])), max(r[measure], 1e-8))
                for r in rows
                if _is_number(r.get(measure)) and math.isfinite(r[measure])
            ]
            if not pts:
                continue
            if tag in epochs:
                i = epochs.index(tag)
                color = cmap(i / max(len(epochs) - 1, 1))
                style = {"color": color, "linewidth": 1.2, "alpha": 0.85}
                label = tag if i in (0, len(epochs) - 1) else None
            else:
                style = {
                    "color": "k" if tag == "test" else "C3",
                    "linewidth": 2.0,
                    "linestyle": "--",
                }
                label = "tested checkpoint" if tag == "test" else tag
            ax.plot(*zip(*pts), marker="o", ms=2.5, label=label, **style)
        ax.set_yscale("log")
        ax.set_title(f"{measure} error vs depth", fontsize=10)
        ax.set_xticks(range(len(layers)), layers, rotation=35, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(measures) :]:
        ax.set_visible(False)
    return H.save(fig, path)


def _equivariance_section(run: RunFiles, assets: Path) -> str:
    folder = run.dir / "equivariance"
    tags = [t for t in _tags(folder) if (folder / t / "equivariance_summary.csv").is_file()]
    if not tags:
        return _absent(run, "equivariance", folder)
    final = _final_tag(tags)
    rows = _read_csv(folder / final / "equivariance_summary.csv")
    what = {"test": "the tested checkpoint", "fit_end": "the final weights"}.get(final, final)
    body = H.note(
        f"Mean error over the group's elements per layer, on {what} "
        f"(equivariance/{final}/). Lower is more equivariant; 0 = exact."
    )
    png = folder / final / "equivariance.png"
    if png.is_file():
        body += H.figure(H.rel(png, run.dir), f"equivariance/{final}/equivariance.png", width=900)
    columns = [c for c in rows[0] if c != "model"] if rows else []
    measured = [c for c in columns if c not in _ID_COLUMNS and c != "note"]
    body += H.table(
        columns,  # a measure a layer does not have (e.g. the Lie derivative of regular fields): n/a
        [[_NA if c in measured and r.get(c) is None else r.get(c) for c in columns] for r in rows],
        keys=[[f"equivariance/{r.get('layer')}/{c}" for c in columns] for r in rows],
    )
    over = [t for t in tags if EPOCH_TAG.match(t) or t in ("fit_end", "test")]
    if sum(1 for t in over if EPOCH_TAG.match(t)) >= 2:
        summaries = {t: _read_csv(folder / t / "equivariance_summary.csv") for t in over}
        measures = _measures([r for rs in summaries.values() for r in rs])
        if measures:
            epngs = _plot_equivariance_epochs(
                summaries, measures, assets / "equivariance_epochs.png"
            )
            body += "<h3>Change over the epochs</h3>" + H.figure(
                H.rel(epngs, run.dir),
                "one line per validation epoch (dark: first, yellow: last); dashed black: the tested checkpoint",
            )
    else:
        body += H.note(
            "fewer than two per-epoch analyses (equivariance/epochNNN/): no change over epochs to draw "
            "(callbacks.equivariance.every_n_epochs=1 measures every epoch)"
        )
    return body


def _separability_section(run: RunFiles) -> str:
    folder = run.dir / "separability"
    tags = [t for t in _tags(folder) if (folder / t / "separability.csv").is_file()]
    if not tags:
        return _absent(run, "separability", folder)
    final = _final_tag(tags)
    out = folder / final
    rows = _read_csv(out / "separability.csv")
    body = H.note(
        f"Class separability of each layer's features (separability/{final}/separability.csv)"
        + (f"; other analyses: {', '.join(t for t in tags if t != final)}" if len(tags) > 1 else "")
    )
    figs = ""
    for name in ("separability.png", "probes.png", "pca_explained_variance.png"):
        if (out / name).is_file():
            figs += H.figure(H.rel(out / name, run.dir), f"separability/{final}/{name}", width=400)
    body += f'<div class="grid">{figs}</div>'
    columns = [c for c in rows[0] if c != "model"] if rows else []
    body += H.table(
        columns,
        [[r.get(c) for c in columns] for r in rows],
        keys=[[f"separability/{r.get('layer')}/{c}" for c in columns] for r in rows],
    )
    probes = _read_csv(out / "probes.csv") if (out / "probes.csv").is_file() else []
    if probes:
        pcols = [c for c in probes[0] if c != "model"]
        body += "<h3>Linear probes</h3>" + H.table(
            pcols, [[r.get(c) for c in pcols] for r in probes]
        )
    pca = _read_json(out / "pca.json") if (out / "pca.json").is_file() else None
    if isinstance(pca, dict):
        flat = [(k, v) for k, v in pca.items() if _is_number(v) or isinstance(v, str)]
        body += "<h3>PCA of the invariant features</h3>" + H.table(["quantity", "value"], flat)
    return body


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        out = []
        for k, v in tree.items():
            out += _flatten(v, f"{prefix}{k}/" if isinstance(v, Mapping) else f"{prefix}{k}")
        return out
    if isinstance(tree, list):
        return [(prefix, ", ".join(H.fmt(x) for x in tree))]
    return [(prefix, tree)]


def _pose_section(run: RunFiles) -> str:
    found = sorted(run.dir.glob("separability/*/pose.json"))
    if not found:
        return H.missing(
            "no pose.json: the pose readout runs inside the separability analysis, on glass-box "
            "models with a rotation order divisible by 4 and upright data"
        )
    tags = _tags(run.dir / "separability")
    final = (
        _final_tag([p.parent.name for p in found if p.parent.name in tags]) or found[-1].parent.name
    )
    pose = _read_json(run.dir / "separability" / final / "pose.json")
    rows = _flatten(pose) if pose is not None else []
    return H.note(
        f"Pose readout of the equivariant features (separability/{final}/pose.json): "
        "how well the rotation of an image is read off its feature fields"
    ) + H.table(
        ["quantity", "value"], rows, keys=[(None, f"separability/pose/{k}") for k, _ in rows]
    )


def _ad_ai_table(evaluation: Any) -> str:
    methods = evaluation.get("methods") if isinstance(evaluation, Mapping) else None
    if isinstance(methods, Mapping):
        cols = list(dict.fromkeys(k for v in methods.values() if isinstance(v, Mapping) for k in v))
        rows = [[name, *[_get(v, c) for c in cols]] for name, v in methods.items()]
    elif isinstance(methods, list) and methods and isinstance(methods[0], Mapping):
        cols = [c for c in methods[0] if c != "method"]
        rows = [[r.get("method", ""), *[r.get(c) for c in cols]] for r in methods]
    else:
        return H.missing("evaluation.json holds no AD/AI table")
    return H.table(
        ["method", *[f"{c} (%)" if c in ("AD", "AI") else c for c in cols]], rows, digits=2
    )


def _interpretation_section(run: RunFiles) -> str:
    folder = run.dir / "interpretation"
    tags = [
        t
        for t in _tags(folder)
        if (folder / t / "evaluation.json").is_file() or any((folder / t).glob("gallery_*.png"))
    ]
    if not tags:
        return _absent(run, "interpretation", folder)
    final = _final_tag(tags)
    out = folder / final
    body = ""
    evaluation = (
        _read_json(out / "evaluation.json") if (out / "evaluation.json").is_file() else None
    )
    meta = (
        _read_json(out / "interpretations.json")
        if (out / "interpretations.json").is_file()
        else None
    )
    if isinstance(meta, Mapping):
        its = meta.get("interpretations") or []
        body += H.note(
            f"{len(its)} representative interpretations at layer {meta.get('layer')} "
            f"(interpretation/{final}/); each gallery: the seed image, the top-ranked covered images "
            "and their heat maps"
        )
        if its and isinstance(its[0], Mapping):
            cols = [c for c in its[0] if _is_number(its[0][c]) or isinstance(its[0][c], str)][:8]
            body += H.details(
                "interpretations",
                H.table(cols, [[r.get(c) for c in cols] for r in its if isinstance(r, Mapping)]),
            )
    if evaluation is not None:
        keep = evaluation.get("keep_fraction") if isinstance(evaluation, Mapping) else None
        body += "<h3>Faithfulness: average drop (AD, lower is better) and average increase (AI, higher is better)</h3>"
        if keep is not None:
            body += H.note(f"the image is masked to the top {H.fmt(keep, 2)} of each heat map")
        body += _ad_ai_table(evaluation)
    galleries = sorted(
        out.glob("gallery_*.png"),
        key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
    )
    if galleries:
        body += (
            '<h3>Galleries</h3><div class="grid">'
            + "".join(H.figure(H.rel(p, run.dir), p.name, width=600) for p in galleries)
            + "</div>"
        )
    return body


def _absent(run: RunFiles, name: str, folder: Path) -> str:
    """Why an analysis section is empty: skipped (status.json), not configured, or no output."""
    statuses = (
        [_read_json(p) for p in sorted(folder.glob("*/status.json"))] if folder.is_dir() else []
    )
    skipped = [s for s in statuses if isinstance(s, Mapping) and s.get("status") == "skipped"]
    if skipped:
        return H.missing(
            f"the {name} analysis was skipped: "
            + "; ".join(f"{s.get('tag')}: {s.get('reason')}" for s in skipped)
        )
    configured = _get(run.config, f"callbacks.{name}")
    if not isinstance(configured, Mapping):
        hint = {
            "equivariance": "callbacks=default includes it",
            "separability": "train with callbacks=[default,separability], or run evaluate.py",
            "interpretation": "run evaluate.py callbacks=evaluate_ri",
        }[name]
        return H.missing(f"the {name} analysis was not configured for this run ({hint})")
    return H.missing(f"the {name} analysis is configured but wrote no results into {name}/")


def _status_section(run: RunFiles) -> str:
    rows = []
    for name in ANALYSES:
        folder = run.dir / name
        for tag in _tags(folder):
            s = (
                _read_json(folder / tag / "status.json")
                if (folder / tag / "status.json").is_file()
                else None
            )
            if not isinstance(s, Mapping):
                rows.append((name, tag, '<span class="missing">no status.json</span>', ""))
                continue
            status = str(s.get("status", "?"))
            detail = (
                str(s.get("reason", ""))
                if status != "ran"
                else f"{s.get('scalars', '?')} scalars in {H.fmt(s.get('seconds'), 2)} s"
            )
            css = "ok" if status == "ran" else "skipped"
            rows.append((name, tag, f'<span class="{css}">{H.esc(status)}</span>', H.esc(detail)))
        if not _tags(folder):
            configured = isinstance(_get(run.config, f"callbacks.{name}"), Mapping)
            rows.append(
                (
                    name,
                    "",
                    '<span class="missing">'
                    + ("configured, never ran" if configured else "not configured")
                    + "</span>",
                    "",
                )
            )
    return H.table(["analysis", "tag", "status", "details"], rows, html_columns=(2, 3))


# --------------------------------------------------------------------------- the report
def build_run_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (and its figures under ``report_files/``) from the
    run's files; return its path. Raises :class:`ReportInputError` for a directory that is
    not a run directory."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(
            f"{run_dir} is not a directory; pass a run directory such as logs/train/runs/<time>"
        )
    if not (run_dir / "metrics.json").is_file() and not (run_dir / ".hydra").is_dir():
        raise ReportInputError(
            f"{run_dir} holds neither metrics.json nor .hydra/: pass a run directory written by "
            "train.py or evaluate.py (logs/<task>/runs/<time>) or a multirun directory"
        )
    run = RunFiles(run_dir)
    assets = run_dir / ASSETS
    assets.mkdir(exist_ok=True)
    title = f"{run.task}: {run.record.get('model') or _get(run.config, 'model.name') or 'model'} on {run.record.get('data') or _get(run.config, 'data.name') or 'data'}"
    page = H.Page(title, _headline(run) + " · " + str(run_dir.resolve()))
    builders = {
        "config": lambda: _config_section(run),
        "metrics": lambda: _metrics_section(run, assets),
        "training": lambda: _training_section(run, assets),
        "equivariance": lambda: _equivariance_section(run, assets),
        "separability": lambda: _separability_section(run),
        "pose": lambda: _pose_section(run),
        "interpretation": lambda: _interpretation_section(run),
        "status": lambda: _status_section(run),
    }
    page.build(SECTIONS, builders)
    path = atomic_write_text(run_dir / REPORT_FILE, page.render())
    log.info("run report written to %s (%.1f s)", path, time.perf_counter() - start)
    return path
