"""Merge the separability and probe tables of several runs and plot them together::

    python -m glassbox.reporting.compare RUN_A RUN_B --out comparison/

where ``RUN_*`` are run directories (searched for ``separability.csv`` / ``probes.csv``) or
the CSV files themselves. One run holds one model; this puts the glass-box net, AlexNet and
the raw pixels side by side.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from glassbox.analysis.results import PROBES_FILE, SEPARABILITY_FILE
from glassbox.errors import ReportInputError
from glassbox.reporting.figures import plot_probes, plot_separability
from glassbox.reporting.tables import merge_tables, read_table, write_table


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
    parser = argparse.ArgumentParser(
        prog="python -m glassbox.reporting.compare", description=compare_runs.__doc__
    )
    parser.add_argument(
        "inputs", nargs="+", help="run directories or separability/probes CSV files"
    )
    parser.add_argument("--out", default="separability_comparison", help="output directory")
    args = parser.parse_args(argv)
    for name, path in compare_runs(args.inputs, args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
