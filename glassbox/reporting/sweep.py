"""Aggregate the jobs of Hydra multiruns into one table and one plot (the CLI is
``python -m glassbox.report <multirun dir> [more sweep dirs] [--out DIR]``).

Every job directory holding a ``metrics.json`` (written by ``train.py``/``evaluate.py``) becomes
one row, with the job's command-line overrides (``.hydra/overrides.yaml``) and its seed as
columns. Jobs are grouped by the overrides that vary across the sweep, except the seed, and
every metric is summarised as mean ± std over the seeds of a group. Written into ``--out``
(default: the first sweep directory):

* ``results.csv``  one row per job: overrides, seed, every scalar metric;
* ``summary.csv``  one row per group: ``<metric>/mean``, ``<metric>/std``, ``n``;
* ``results.md``   the headline metrics per group, the accuracy-against-angle table, the final
  scalars of the analysis callbacks (``equivariance/…``, ``separability/…``,
  ``interpretation/…``) per group, the jobs;
* ``accuracy_vs_angle.png``  test accuracy against rotation angle per group (mean ± std), from
  the ``test_rot<angle>/acc`` metrics of ``rotated_test.angles`` (skipped when there are none).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from glassbox.data.transforms import mean_over_turn
from glassbox.errors import ConfigError
from glassbox.reporting.figures import plot_accuracy_vs_angle
from glassbox.reporting.tables import markdown_table

log = logging.getLogger(__name__)

SEED_KEYS = ("seed", "data.seed")
ANGLE_METRIC = re.compile(r"^test_rot(-?\d+(?:\.\d+)?)/(\w+)$")
HEADLINE = ("val/acc", "test/acc", "test/f1", "test_rotated/acc", "test_rot_mean/acc")
# train/val/test metrics and the learning rate; every other prefix is an analysis callback's
NOT_ANALYSIS = re.compile(r"^(train|val|test\w*)/|^lr-")


class ReportError(ConfigError):
    """The given directory holds no job results to aggregate."""


# --------------------------------------------------------------------------- collecting
def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories below ``sweep_dir``: those with a metrics.json or a .hydra/ folder."""
    found = {p.parent for p in sweep_dir.rglob("metrics.json")}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    # submitit's own folder and W&B/CSV logger dirs are not jobs
    return sorted(
        (
            d
            for d in found
            if not any(part.startswith(".") for part in d.relative_to(sweep_dir).parts)
        ),
        key=lambda d: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(d))],
    )


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _seed(job_dir: Path, overrides: dict[str, str]):
    for key in SEED_KEYS:
        if key in overrides:
            return _number(overrides[key])
    config = job_dir / ".hydra" / "config.yaml"
    if config.is_file():
        seed = (yaml.safe_load(config.read_text()) or {}).get("seed")
        if seed is not None:
            return seed
    return None


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def collect(sweep_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per job: ``job``, ``status``, ``seed``, ``model``, ``data``, the job's overrides
    (one column per key, prefixed ``+``) and every scalar metric of its metrics.json."""
    rows = []
    for sweep in map(Path, sweep_dirs):
        if not sweep.is_dir():
            raise ReportError(
                f"{sweep} is not a directory; pass a multirun directory such as "
                "logs/train/multiruns/<time> (the one holding the job folders 0, 1, ...)"
            )
        for job in _job_dirs(sweep):
            overrides = _overrides(job)
            row = {"job": str(job.relative_to(sweep.parent)), "status": "ok"}
            metrics_file = job / "metrics.json"
            if metrics_file.is_file():
                record = json.loads(metrics_file.read_text())
                row.update({k: record.get(k) for k in ("model", "data", "task")})
                row.update(
                    {
                        k: float(v)
                        for k, v in (record.get("metrics") or {}).items()
                        if isinstance(v, int | float) and not isinstance(v, bool)
                    }
                )
            else:
                row["status"] = "no metrics.json (failed or running)"
            row["seed"] = _seed(job, overrides)
            row.update({f"+{k}": v for k, v in overrides.items()})
            rows.append(row)
    if not any(r["status"] == "ok" for r in rows):
        raise ReportError(
            f"no metrics.json found under {', '.join(map(str, sweep_dirs))}: pass the directory of a "
            "finished multirun (python train.py -m ... writes logs/train/multiruns/<time>/<job>/metrics.json)"
        )
    df = pd.DataFrame(rows)
    angles = angle_columns(df.columns, "acc")
    if angles:  # jobs written before the metric existed: from their per-angle accuracies
        fallback = df[list(angles.values())].apply(
            lambda r: mean_over_turn(dict(zip(angles, r))) if r.notna().all() else float("nan"),
            axis=1,
        )
        logged = df.get("test_rot_mean/acc")
        df["test_rot_mean/acc"] = fallback if logged is None else logged.fillna(fallback)
    return df


# --------------------------------------------------------------------------- grouping
def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if "/" in c and not c.startswith("+")]


def group_keys(df: pd.DataFrame) -> list[str]:
    """Override columns that vary across the finished jobs, except the seed."""
    ok = df[df["status"] == "ok"]
    keys = []
    for col in df.columns:
        if not col.startswith("+") or col[1:] in SEED_KEYS:
            continue
        if ok[col].astype(str).nunique(dropna=False) > 1:
            keys.append(col)
    return keys


def _label(row: pd.Series, keys: list[str]) -> str:
    if not keys:
        return str(row.get("model") or "all")
    if keys == ["+model"]:
        return str(row["+model"])
    return ", ".join(f"{k[1:]}={row[k]}" for k in keys)


def summarise(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Per group (``keys``, default :func:`group_keys`): n and mean/std over seeds of each metric.

    The std is the sample standard deviation (ddof=1); 0 for a group of one job.
    """
    ok = df[df["status"] == "ok"].copy()
    keys = group_keys(df) if keys is None else keys
    ok["group"] = ok.apply(lambda r: _label(r, keys), axis=1)
    metrics = metric_columns(ok)
    grouped = ok.groupby("group", sort=False)
    columns = {"n": grouped.size()}
    for m in metrics:
        columns[f"{m}/mean"] = grouped[m].mean()
        columns[f"{m}/std"] = grouped[m].std(ddof=1).fillna(0.0)
    return pd.DataFrame(columns).reset_index()


def angle_columns(columns, metric: str = "acc") -> dict[float, str]:
    """``{angle: column}`` of the ``test_rot<angle>/<metric>`` names in ``columns``, by angle."""
    found = {}
    for col in map(str, columns):
        m = ANGLE_METRIC.match(col)
        if m and m.group(2) == metric:
            found[float(m.group(1))] = col
    return dict(sorted(found.items()))


def angle_curves(summary: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """Long table ``group, angle, mean, std, n`` of ``test_rot<angle>/<metric>``."""
    rows = []
    means = [c[: -len("/mean")] for c in summary.columns if c.endswith("/mean")]
    for angle, col in angle_columns(means, metric).items():
        for _, r in summary.iterrows():
            rows.append(
                {
                    "group": r["group"],
                    "angle": angle,
                    "mean": r[f"{col}/mean"],
                    "std": r[f"{col}/std"],
                    "n": int(r["n"]),
                }
            )
    return pd.DataFrame(rows, columns=["group", "angle", "mean", "std", "n"])


# --------------------------------------------------------------------------- writing
def _mean_std(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    out = summary[["group", "n"]].copy()
    for m in metrics:
        out[m] = [
            _cell(mu, sd, n, ".4f", ".4f")
            for mu, sd, n in zip(summary[f"{m}/mean"], summary[f"{m}/std"], summary["n"])
        ]
    return out


def _cell(mean, std, n, mean_fmt: str, std_fmt: str) -> str:
    """``mean ± std``; the mean alone for a group of one job (no spread to report)."""
    if pd.isna(mean):
        return ""
    return f"{mean:{mean_fmt}}" if n == 1 else f"{mean:{mean_fmt}} ± {std:{std_fmt}}"


def analysis_tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{prefix: table}``: per analysis prefix (``equivariance``, ...), one row per metric and
    one ``mean ± std`` column per group (blank where a group lacks the metric, e.g. a layer
    that only one model has)."""
    means = [c[: -len("/mean")] for c in summary.columns if c.endswith("/mean")]
    tables: dict[str, list[dict]] = {}
    for metric in means:
        if NOT_ANALYSIS.match(metric):
            continue
        prefix, _, name = metric.partition("/")
        row = {"metric": name}
        for _, r in summary.iterrows():
            row[r["group"]] = _cell(r[f"{metric}/mean"], r[f"{metric}/std"], r["n"], ".4g", ".2g")
        tables.setdefault(prefix, []).append(row)
    return {prefix: pd.DataFrame(rows) for prefix, rows in tables.items()}


def interpretation_tables(summary: pd.DataFrame, measures=("AD", "AI")) -> dict[str, pd.DataFrame]:
    """``{protocol: table}`` in the shape of Lam et al.'s table: one row per method, one
    ``<group> <measure>`` column (mean ± std) per group, from the
    ``interpretation/<protocol>/<method>/<measure>`` metrics."""
    tables: dict[str, dict[str, dict]] = {}
    for col in summary.columns:
        parts = col.split("/")
        if len(parts) != 5 or parts[0] != "interpretation" or parts[4] != "mean":
            continue
        _, protocol, method, measure, _ = parts
        if measure not in measures:
            continue
        row = tables.setdefault(protocol, {}).setdefault(method, {"method": method})
        metric = col[: -len("/mean")]
        for _, r in summary.iterrows():
            row[f"{r['group']} {measure}"] = _cell(
                r[f"{metric}/mean"], r[f"{metric}/std"], r["n"], ".2f", ".2f"
            )
    return {p: pd.DataFrame(list(rows.values())) for p, rows in tables.items()}


def write_report(
    sweep_dirs: Sequence[str | Path], out_dir: str | Path | None = None
) -> dict[str, Path]:
    """Collect, summarise and write the CSVs, the markdown and the angle plot; return their paths."""
    df = collect(sweep_dirs)
    summary = summarise(df)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out / "results.csv",
        "summary": out / "summary.csv",
        "markdown": out / "results.md",
    }
    df.to_csv(paths["results"], index=False)
    summary.to_csv(paths["summary"], index=False)

    headline = [m for m in HEADLINE if f"{m}/mean" in summary.columns]
    curves = angle_curves(summary)
    md = [f"# Results: {', '.join(map(str, sweep_dirs))}", ""]
    md += [
        f"{int((df['status'] == 'ok').sum())} of {len(df)} jobs finished; mean ± std over seeds.",
        "",
    ]
    md += ["## Summary", "", markdown_table(_mean_std(summary, headline), floatfmt=".4f"), ""]
    if not curves.empty:
        table = curves.assign(
            value=[
                _cell(m, s, n, ".4f", ".4f")
                for m, s, n in zip(curves["mean"], curves["std"], curves["n"])
            ]
        )
        wide = table.pivot(index="angle", columns="group", values="value")
        wide = wide[list(dict.fromkeys(curves["group"]))].reset_index()  # groups in sweep order
        wide["angle"] = [f"{a:g}°" for a in wide["angle"]]
        md += [
            "## Test accuracy against rotation angle",
            "",
            markdown_table(wide, floatfmt=".4f"),
            "",
        ]
        md += ["![accuracy against angle](accuracy_vs_angle.png)", ""]
        paths["plot"] = plot_accuracy_vs_angle(curves, out / "accuracy_vs_angle.png")
    else:
        log.info("no test_rot<angle>/acc metrics (rotated_test.angles was empty): no angle plot")
    for protocol, table in interpretation_tables(summary).items():
        md += [f"## interpretation: AD/AI, {protocol} protocol", "", markdown_table(table), ""]
    for prefix, table in analysis_tables(summary).items():
        md += [
            f"## {prefix} (final analysis of each job)",
            "",
            markdown_table(table, floatfmt=".4f"),
            "",
        ]
    varying = group_keys(df)
    jobs = df[["job", "status", *varying, "seed", *[m for m in HEADLINE if m in df.columns]]]
    jobs = jobs.rename(columns={k: k[1:] for k in varying})
    md += ["## Jobs", "", markdown_table(jobs, floatfmt=".4f"), ""]
    paths["markdown"].write_text("\n".join(md).rstrip() + "\n")
    return paths
