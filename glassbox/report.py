"""Reports from the command line: ``python -m glassbox.report <multirun dir> [...] [--out DIR]``.

The aggregation lives in :mod:`glassbox.reporting.sweep`; this module is the entry point
(and keeps ``glassbox.report.write_report`` & co. importable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from glassbox.reporting.figures import plot_accuracy_vs_angle
from glassbox.reporting.sweep import (
    ReportError,
    analysis_tables,
    angle_columns,
    angle_curves,
    collect,
    group_keys,
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
    "main",
    "metric_columns",
    "plot_accuracy_vs_angle",
    "summarise",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glassbox.report",
        description="Tabulate the jobs of Hydra multiruns (CSV + markdown) and plot accuracy against angle.",
    )
    parser.add_argument(
        "sweep_dirs", nargs="+", help="multirun directories, e.g. logs/train/multiruns/<time>"
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: the first sweep dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = write_report(args.sweep_dirs, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
