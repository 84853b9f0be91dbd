"""Reports from the command line: ``python -m glassbox.report <multirun dir> [...] [--out DIR]``.

The aggregation lives in :mod:`glassbox.reporting.sweep`; this module is the entry point
(and keeps ``glassbox.report.write_report`` & co. importable). Besides the CSV/markdown tables
and the angle plot it writes the sweep's static HTML report ``report.html``
(:mod:`glassbox.reporting.sweep_report`). Given one run directory instead
(``python -m glassbox.report logs/train/runs/<time>``), it rebuilds that run's ``report.html``
from its files (:mod:`glassbox.reporting.run_report`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from glassbox.errors import GlassboxError
from glassbox.reporting.figures import plot_accuracy_vs_angle
from glassbox.reporting.sweep import (
    ReportError,
    analysis_tables,
    angle_columns,
    angle_curves,
    collect,
    group_keys,
    interpretation_tables,
    metric_columns,
    summarise,
    write_report,
)

__all__ = [
    "ReportError",
    "analysis_tables",
    "angle_columns",
    "angle_curves",
    "collect",
    "group_keys",
    "interpretation_tables",
    "main",
    "metric_columns",
    "plot_accuracy_vs_angle",
    "summarise",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glassbox.report",
        description="Tabulate the jobs of Hydra multiruns (CSV + markdown + report.html) and plot accuracy "
        "against angle; given one run directory, (re)build its report.html.",
    )
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        help="multirun directories, e.g. logs/train/multiruns/<time>, or one run directory",
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: the first sweep dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # one run directory (metrics.json or .hydra/ directly inside): its report.html only
    first = Path(args.sweep_dirs[0])
    is_run = (first / "metrics.json").is_file() or (first / ".hydra").is_dir()
    try:
        if len(args.sweep_dirs) == 1 and is_run:
            from glassbox.reporting.run_report import build_run_report

            print(f"report: {build_run_report(first)}")
            return 0
        paths = write_report(args.sweep_dirs, args.out)
        from glassbox.reporting.sweep_report import build_sweep_report

        paths["report"] = build_sweep_report(args.sweep_dirs, args.out)
    except GlassboxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
