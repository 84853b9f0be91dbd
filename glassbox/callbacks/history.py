"""A logger-independent training history: ``<output_dir>/history.csv``, one row per epoch.

Whatever logger a run uses (W&B offline, TensorBoard, CSV or none), the run directory keeps the
epoch-level metrics the module logged (``train/*``, ``val/*``, ...) and each optimizer's
learning rate, so the run report (:mod:`glassbox.reporting.run_report`) can draw the training
curves from files alone. A resumed run keeps the rows of the epochs before it and replaces the
rows of the epochs it trains again.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from glassbox.utils.io import atomic_write_text

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``history.csv`` as dicts of floats (blank cells left out)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if k and v not in ("", None)})
    return rows


class HistoryCallback(Callback):
    """Write ``history.csv`` into ``output_dir`` after every training epoch.

    Each row holds ``epoch``, ``step``, every scalar epoch-level metric logged so far in the
    epoch whose name starts with one of ``prefixes`` (the training metrics and those of the
    validation run that ended the epoch), and ``lr`` (``lr/<i>`` per parameter group when an
    optimizer has several). Only global rank 0 writes; the file is rewritten atomically.

    Args:
        output_dir: directory that receives history.csv (the run directory).
        prefixes: metric name prefixes to keep (``train/``, ``val/``); empty keeps every scalar.
    """

    def __init__(self, output_dir: str, prefixes: list[str] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.prefixes = tuple(prefixes) if prefixes is not None else ("train/", "val/")
        self.rows: list[dict[str, float]] = []
        self._loaded = False

    @property
    def path(self) -> Path:
        return self.output_dir / HISTORY_FILE

    def _load(self) -> None:
        # a resumed run continues the history that the earlier run wrote
        if not self._loaded and self.path.is_file():
            try:
                self.rows = read_history(self.path)
            except (OSError, ValueError, csv.Error) as err:
                log.warning("could not read %s (%s): starting a new history", self.path, err)
                self.rows = []
        self._loaded = True

    def _metrics(self, trainer: Trainer) -> dict[str, float]:
        out = {}
        for name, value in trainer.callback_metrics.items():
            if self.prefixes and not name.startswith(self.prefixes):
                continue
            v = _scalar(value)
            if v is not None:
                out[name] = v
        for i, opt in enumerate(trainer.optimizers):
            groups = opt.param_groups
            for j, group in enumerate(groups):
                key = "lr" if len(trainer.optimizers) == 1 else f"lr/opt{i}"
                if len(groups) > 1:
                    key = f"{key}/{j}"
                out[key] = float(group["lr"])
        return out

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._load()
        epoch = int(trainer.current_epoch)
        row = {"epoch": float(epoch), "step": float(trainer.global_step), **self._metrics(trainer)}
        self.rows = [r for r in self.rows if r.get("epoch", -1) < epoch] + [row]
        self._write()

    def _write(self) -> None:
        columns = ["epoch", "step"]
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in self.rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
        try:
            atomic_write_text(self.path, buf.getvalue())
        except OSError as err:  # the history is a convenience: never fail the run for it
            log.warning("could not write %s: %s", self.path, err)


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
