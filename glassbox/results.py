"""One result type for every analysis, and one writer for it.

An analysis returns a :class:`Result`: scalars, named tables, named figures, JSON documents
and (rarely) tensors to keep. :func:`write_result` turns it into files in a folder and into
logger calls, with one key scheme:

* scalars ``<analysis>/<layer>/<measure>`` (``<analysis>/<measure>`` for whole-model
  numbers) → ``logger.log_metrics`` of every logger (W&B, TensorBoard, CSV);
* tables ``<analysis>/<name>`` → ``<file>.csv`` (and ``.json`` / ``.md`` when asked) and
  ``logger.log_table`` where a logger has tables (W&B);
* figures ``<analysis>/<name>`` → ``<file>.png`` and ``logger.log_image`` (W&B) or
  ``experiment.add_image`` (TensorBoard);
* documents → ``<file>.json``; objects → ``torch.save`` into ``<file>``.

No Lightning here: ``loggers`` is any sequence of objects with those methods, so a notebook
can write a Result to a folder with ``write_result(result, "out/")``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glassbox.errors import AnalysisInputError
from glassbox.reporting.tables import TableLike, as_frame, json_text, write_table

log = logging.getLogger(__name__)

__all__ = ["Image", "Result", "Table", "log_result", "write_files", "write_result"]


@dataclass
class Table:
    """A named table: ``data`` (a DataFrame or rows), the file stem it is written to in
    ``formats`` (none: not written), and whether loggers get it."""

    data: pd.DataFrame
    file: str | None = None
    formats: tuple[str, ...] = ("csv",)
    log: bool = True


@dataclass
class Image:
    """One figure: a matplotlib ``Figure`` (saved as ``<file>.png``) or the path of an image
    already written; ``caption`` goes to the loggers."""

    figure: Any
    file: str | None = None
    caption: str = ""
    dpi: int = 120


@dataclass
class Result:
    """What an analysis produced (see the module docstring for the key scheme)."""

    analysis: str
    scalars: dict[str, float] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    figures: dict[str, list[Image]] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)

    def key(self, *parts: str) -> str:
        """``<analysis>/<part>/...``: the key of a scalar, table or figure of this result."""
        return "/".join([self.analysis, *map(str, parts)])

    def add_scalar(self, *parts: str, value: float) -> None:
        """``add_scalar(layer, measure, value=v)`` → ``<analysis>/<layer>/<measure>``.

        Missing and non-finite values are not logged (a logger would draw them as gaps or
        reject them); they stay in the tables."""
        if value is None:
            return
        value = float(value)
        if math.isfinite(value):
            self.scalars[self.key(*parts)] = value

    def add_table(
        self,
        name: str,
        data: TableLike,
        file: str | None = None,
        formats: Sequence[str] = ("csv",),
        log: bool = True,
    ) -> None:
        """Add a table, written as ``<file or name>.<format>`` for each of ``formats`` (an
        empty ``formats``: only logged)."""
        self.tables[name] = Table(as_frame(data), file or name, tuple(formats), log)

    def add_figure(
        self, name: str, figure: Any, file: str | None = None, caption: str = "", dpi: int = 120
    ) -> None:
        """Add a figure under ``name`` (several figures may share one name: one logger key)."""
        self.figures.setdefault(name, []).append(Image(figure, file or name, caption, dpi))

    def add_document(self, file: str, document: Any) -> None:
        self.documents[file] = document

    def add_object(self, file: str, obj: Any) -> None:
        self.objects[file] = obj


# --------------------------------------------------------------------------- files
def _save_figure(figure: Any, path: Path, dpi: int) -> Path:
    if isinstance(figure, str | Path):
        src = Path(figure)
        if src.resolve() != path.resolve():
            path.write_bytes(src.read_bytes())
        return path
    if not callable(getattr(figure, "savefig", None)):
        raise AnalysisInputError(
            f"a figure must be a matplotlib Figure or an image path, got {type(figure).__name__}"
        )
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def write_files(result: Result, folder: str | Path) -> dict[str, Path]:
    """Write every table, figure, document and object of ``result`` into ``folder``;
    return ``{what: path}`` (``table:<name>.<format>``, ``figure:<name>``, ...)."""
    import torch

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, table in result.tables.items():
        if table.file is not None and table.formats:
            written = write_table(table.data, out, table.file, table.formats)
            paths.update({f"table:{name}.{ext}": p for ext, p in written.items()})
    for name, images in result.figures.items():
        for i, image in enumerate(images):
            path = _save_figure(image.figure, out / f"{image.file or name}.png", image.dpi)
            paths[f"figure:{name}" if len(images) == 1 else f"figure:{name}[{i}]"] = path
    for file, document in result.documents.items():
        path = out / f"{file}.json"
        path.write_text(json_text(document))
        paths[f"document:{file}"] = path
    for file, obj in result.objects.items():
        torch.save(obj, out / file)
        paths[f"object:{file}"] = out / file
    return paths


# --------------------------------------------------------------------------- loggers
def _cell(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _table_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    return [str(c) for c in frame.columns], [
        [_cell(v) for v in row] for row in frame.itertuples(index=False)
    ]


def _log_images(logger: Any, key: str, files: list[Path], captions: list[str], step: int) -> None:
    if callable(getattr(logger, "log_image", None)):  # W&B
        kwargs = {"caption": captions} if any(captions) else {}
        logger.log_image(key=key, images=[str(p) for p in files], **kwargs)
        return
    add_image = getattr(getattr(logger, "experiment", None), "add_image", None)
    if callable(add_image):  # TensorBoard
        from matplotlib.image import imread

        for i, path in enumerate(files):
            tag = key if len(files) == 1 else f"{key}/{i}"
            add_image(tag, imread(path)[..., :3], global_step=step, dataformats="HWC")


def log_result(
    result: Result,
    loggers: Iterable[Any],
    step: int = 0,
    files: Mapping[str, Path] | None = None,
) -> None:
    """Send ``result`` to ``loggers``: scalars to ``log_metrics``; tables to ``log_table``
    where a logger has it; figures (the files :func:`write_files` wrote) as images."""
    files = files or {}
    for logger in loggers:
        if result.scalars:
            logger.log_metrics(dict(result.scalars), step=step)
        if callable(getattr(logger, "log_table", None)):
            for name, table in result.tables.items():
                if table.log:
                    columns, rows = _table_rows(table.data)
                    logger.log_table(key=result.key(name), columns=columns, data=rows)
        for name, images in result.figures.items():
            keys = (
                [f"figure:{name}"]
                if len(images) == 1
                else [f"figure:{name}[{i}]" for i in range(len(images))]
            )
            paths = [files[k] for k in keys if k in files]
            if paths:
                captions = [im.caption for im in images]
                _log_images(logger, result.key(name), paths, captions, step)


def write_result(
    result: Result,
    folder: str | Path,
    loggers: Iterable[Any] = (),
    step: int = 0,
) -> dict[str, Path]:
    """:func:`write_files` into ``folder``, then :func:`log_result` to ``loggers``."""
    files = write_files(result, folder)
    log_result(result, loggers, step, files)
    return files
