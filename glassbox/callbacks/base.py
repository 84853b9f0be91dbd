"""Shared plumbing of the analysis callbacks: when they run, which images and which network
they see, and what happens when an analysis cannot run.

An analysis callback only adapts: it picks a fixed batch of images, calls pure analysis code
on the network and hands the results to the loggers and to files in the run directory.
Subclasses implement :meth:`AnalysisCallback.analyse` (and :meth:`~AnalysisCallback.check_model`
for checks that must fail before training starts); this base decides *when* it runs (every
``every_n_epochs`` validation epochs, at the end of fit, at the end of test — the test that
``train.py`` runs on the best checkpoint, and ``evaluate.py``) and makes sure only global
rank 0 writes.

The callbacks work on any LightningModule and any data:

* **images** come, in order of preference, from ``data`` given to the callback (a tensor, an
  ``(images, labels)`` pair or a dataset; or a ``{split: ...}`` dict of them), from the
  datamodule's ``analysis_batch(split, n, seed)`` if it has one, else from the ``split``
  dataloader (the datamodule's, the module's or the one passed to ``fit``/``test``): ``n``
  items chosen with ``seed`` from its dataset (the first ``n`` when the dataset cannot be
  indexed). Batches may be tensors, tuples/lists ``(images, labels, ...)`` or dicts
  (``image_key`` / ``label_key``; by default the first of :data:`IMAGE_KEYS` /
  :data:`LABEL_KEYS` present);
* **the network** is ``getattr(module, model_attr)`` (dotted paths allowed); by default the
  module's ``net`` if it has one, else the module itself;
* **an analysis that cannot run** on the current model or data (one predicted class, too
  few images, a degenerate PCA, NaN features) logs one warning with the reason, writes
  ``status.json`` (``ran`` / ``skipped`` and why) into its output folder, and the run goes on
  (``on_error="raise"`` re-raises instead). A *misconfigured* callback (unknown layer,
  ``model_attr`` or batch key) raises one :class:`~glassbox.errors.GlassboxError` in
  ``setup``, before training starts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from glassbox.errors import AnalysisInputError, AnalysisTypeError, ConfigError
from glassbox.models.equivariant import rebuild_eval_caches
from glassbox.probe import eval_mode
from glassbox.results import Result, write_result

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ON_ERROR = ("skip", "raise")
# dict batches: where the images and labels are looked for when no key is configured
IMAGE_KEYS = ("image", "images", "img", "x", "input", "inputs", "pixel_values")
LABEL_KEYS = ("label", "labels", "y", "target", "targets")
STATUS_FILE = "status.json"


# --------------------------------------------------------------------------- batches
def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"a dict with keys {list(obj)}"
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {', '.join(_describe(o) for o in obj[:4])}"
    return f"a {type(obj).__name__}"


def _is_images(x: Any, item: bool) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point() and x.dim() == (3 if item else 4)


def split_batch(
    batch: Any,
    image_key: str | None = None,
    label_key: str | None = None,
    *,
    item: bool = False,
    where: str = "the batch",
) -> tuple[Tensor, Tensor | None]:
    """``(images, labels or None)`` of a batch (``item=True``: of one dataset item).

    Accepts an image tensor, a tuple/list whose first element holds the images and second
    (if any) the labels, or a dict (``image_key`` / ``label_key``, by default the first of
    :data:`IMAGE_KEYS` / :data:`LABEL_KEYS` present). Raises one
    :class:`~glassbox.errors.AnalysisInputError` naming what was found when no images are there.
    """
    shape = "(C, H, W)" if item else "(B, C, H, W)"
    labels = None
    if isinstance(batch, Mapping):
        if image_key is not None and image_key not in batch:
            raise AnalysisInputError(
                f"{where} is a dict with keys {list(batch)} and no image_key {image_key!r}: "
                "set image_key to the key that holds the images"
            )
        key = image_key or next((k for k in IMAGE_KEYS if k in batch), None)
        images = batch.get(key) if key is not None else None
        lkey = label_key or next((k for k in LABEL_KEYS if k in batch), None)
        if label_key is not None and label_key not in batch:
            raise AnalysisInputError(
                f"{where} is a dict with keys {list(batch)} and no label_key {label_key!r}: "
                "set label_key to the key that holds the labels"
            )
        labels = batch.get(lkey) if lkey is not None else None
    elif isinstance(batch, tuple | list) and batch:
        images = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    else:
        images = batch
    if not _is_images(images, item):
        hint = (
            "set the callback's image_key to the dict key that holds them"
            if isinstance(batch, Mapping)
            else "give the callback data=... or a datamodule with analysis_batch(split, n, seed)"
        )
        raise AnalysisInputError(
            f"{where} holds no float images {shape}: got {_describe(batch)}; {hint}"
        )
    if labels is not None:
        if isinstance(labels, int):
            labels = torch.tensor(labels)
        if not isinstance(labels, Tensor):
            labels = None
    return images, labels


class _PairDataset(Dataset):
    """A dataset of any item structure seen as ``(image, label)`` items."""

    def __init__(self, ds, image_key, label_key, where: str) -> None:
        self.ds, self.image_key, self.label_key, self.where = ds, image_key, label_key, where

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, y = split_batch(
            self.ds[i], self.image_key, self.label_key, item=True, where=f"an item of {self.where}"
        )
        if y is None:
            raise AnalysisInputError(
                f"items of {self.where} have no labels: set label_key, or give the callback "
                "data=(images, labels)"
            )
        return x, y


def _indexable(ds: Any) -> bool:
    try:
        return ds is not None and len(ds) > 0 and callable(getattr(ds, "__getitem__", None))
    except TypeError:
        return False


def _seeded_indices(n_total: int, n: int | None, seed: int) -> Tensor:
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


# --------------------------------------------------------------------------- the callback
class AnalysisCallback(Callback):
    """Base class: run :meth:`analyse` on a schedule, on rank 0, in eval mode, without grad.

    Args:
        output_dir: directory (normally the Hydra run directory) under which this callback
            writes into ``<output_dir>/<name>/<tag>/``.
        every_n_epochs: also run after every n-th validation epoch (0 disables).
        at_fit_end: run once when fit ends (on the final weights).
        at_test_end: run once when a test loop ends (the best checkpoint in ``train.py``,
            the given checkpoint in ``evaluate.py``).
        num_images: size of the fixed analysis batch.
        split: which split the analysis batch comes from (``train``, ``val`` or ``test``).
        seed: seed that picks the analysis batch, so every run sees the same images.
        data: images to analyse instead of the datamodule's: a ``(N, C, H, W)`` tensor, an
            ``(images, labels)`` pair, a dict batch, a dataset, or a ``{split: one of those}``
            dict (a split missing from it falls back to the datamodule).
        image_key / label_key: dict keys of the images / labels in dict batches (``None``:
            the first of :data:`IMAGE_KEYS` / :data:`LABEL_KEYS` present).
        model_attr: attribute (dotted path) of the LightningModule holding the network to
            analyse; ``None``: its ``net`` if it has one, else the module itself.
        on_error: ``skip`` (warn, write ``status.json``, go on) or ``raise`` for an analysis
            that cannot run on the current model or data.
    """

    name = "analysis"
    needs_grad = False
    needs_labels = False

    def __init__(
        self,
        output_dir: str | Path = ".",
        every_n_epochs: int = 0,
        at_fit_end: bool = False,
        at_test_end: bool = True,
        num_images: int = 64,
        split: str = "val",
        seed: int = 0,
        data: Any = None,
        image_key: str | None = None,
        label_key: str | None = None,
        model_attr: str | None = None,
        on_error: str = "skip",
    ) -> None:
        super().__init__()
        if every_n_epochs < 0:
            raise ConfigError(f"every_n_epochs must be >= 0 (0 disables), got {every_n_epochs}")
        if split not in SPLITS:
            raise ConfigError(f"split must be one of train/val/test, got {split!r}")
        if num_images < 1:
            raise ConfigError(f"num_images must be >= 1, got {num_images}")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if model_attr is not None and (not isinstance(model_attr, str) or not model_attr):
            raise ConfigError(
                f"model_attr must be an attribute name (e.g. 'net') or null, got {model_attr!r}"
            )
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.at_fit_end = at_fit_end
        self.at_test_end = at_test_end
        self.num_images = num_images
        self.split = split
        self.seed = seed
        self.data = data
        self.image_key, self.label_key = image_key, label_key
        self.model_attr = model_attr
        self.on_error = on_error
        self.results: dict[str, dict[str, float]] = {}  # tag → the scalars of that run
        self.status: dict[str, dict[str, Any]] = {}  # tag → {"status": ran|skipped, ...}
        self._trainer_loaders: dict[str, Any] = {}

    # ----------------------------------------------------------------- for subclasses
    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> Result:
        """Run the analysis and return its :class:`~glassbox.results.Result` (a plain
        ``{key: value}`` dict is taken as its scalars); the base class writes it into
        :meth:`out_dir` and hands it to the trainer's loggers."""
        raise NotImplementedError

    def check_model(self, net: nn.Module) -> None:
        """Raise a :class:`~glassbox.errors.GlassboxError` if the options do not fit ``net``
        (unknown layer, a head that cannot be split): called in ``setup``, before training."""

    def check_module(self, pl_module: nn.Module) -> None:
        """:meth:`check_model` on the network that ``model_attr`` picks out of ``pl_module``."""
        self.check_model(self.network(pl_module))

    # ----------------------------------------------------------------- the network
    def network(self, pl_module: nn.Module) -> nn.Module:
        """The network to analyse (see ``model_attr``)."""
        if self.model_attr is None:
            net = getattr(pl_module, "net", None)
            return net if isinstance(net, nn.Module) else pl_module
        obj: Any = pl_module
        for part in self.model_attr.split("."):
            if not hasattr(obj, part):
                children = [n for n, _ in pl_module.named_children()]
                raise ConfigError(
                    f"model_attr={self.model_attr!r}: {type(pl_module).__name__} has no attribute "
                    f"{part!r}; its submodules are: {', '.join(children) or '(none)'} "
                    "(null analyses the module itself)"
                )
            obj = getattr(obj, part)
        if not isinstance(obj, nn.Module):
            raise ConfigError(
                f"model_attr={self.model_attr!r} is a {type(obj).__name__}, not an nn.Module: "
                "name the attribute that holds the network"
            )
        return obj

    def model_label(self, pl_module: nn.Module, net: nn.Module) -> str:
        return (
            getattr(self, "model_name", None)
            or getattr(pl_module, "name", "")
            or type(net).__name__
        )

    # ----------------------------------------------------------------- data
    def _given(self, split: str) -> Any:
        data = self.data
        if isinstance(data, Mapping) and set(data) <= set(SPLITS):
            return data.get(split)
        return data

    def _loader(self, trainer: Trainer, pl_module: LightningModule, split: str):
        """The split's dataloader: the datamodule's, the module's, or the one given to fit/test."""
        method = f"{split}_dataloader"
        for owner in (trainer.datamodule, pl_module):
            fn = getattr(owner, method, None)
            if owner is None or not callable(fn):
                continue
            try:
                loader = fn()
            except Exception:  # Lightning's defaults raise when the hook is not implemented
                continue
            if loader is not None:
                return loader
        loader = {
            "train": getattr(trainer, "train_dataloader", None),
            "val": getattr(trainer, "val_dataloaders", None),
            "test": getattr(trainer, "test_dataloaders", None),
        }[split] or self._trainer_loaders.get(split)
        if isinstance(loader, Sequence) and not isinstance(loader, str):
            loader = loader[0] if loader else None
        if isinstance(loader, Mapping):
            loader = next(iter(loader.values()), None)
        if loader is not None and hasattr(loader, "flattened"):  # Lightning's CombinedLoader
            loader = loader.flattened[0] if loader.flattened else None
        if loader is None:
            raise AnalysisInputError(
                f"{self.name}: found no {split} data: no datamodule analysis_batch, no "
                f"{split}_dataloader and no {split} dataloader passed to the trainer; set the "
                "callback's split, or give it data=..."
            )
        if split in ("val", "test"):
            self._trainer_loaders[split] = loader
        return loader

    def _batch_from(self, source: Any, n: int, seed: int, where: str, collate=None):
        """(images, labels or None): ``n`` seeded items of a tensor, pair or dataset, else the
        first ``n`` of an iterable of batches."""
        if isinstance(source, Mapping):  # one batch as a dict of tensors
            x, y = split_batch(source, self.image_key, self.label_key, where=where)
            idx = _seeded_indices(x.shape[0], n, seed)
            return x[idx], (None if y is None else y[idx])
        if isinstance(source, Tensor) or (
            isinstance(source, tuple | list)
            and len(source) == 2
            and all(isinstance(t, Tensor) for t in source)
        ):
            x, y = (source, None) if isinstance(source, Tensor) else source
            x, _ = split_batch(x, where=where)
            idx = _seeded_indices(x.shape[0], n, seed)
            return x[idx], (None if y is None else y[idx])
        dataset = getattr(source, "dataset", source)  # a DataLoader's dataset
        if _indexable(dataset):
            idx = _seeded_indices(len(dataset), n, seed).tolist()
            collate = collate or getattr(source, "collate_fn", None) or default_collate
            return split_batch(
                collate([dataset[i] for i in idx]), self.image_key, self.label_key, where=where
            )
        xs, ys, seen = [], [], 0
        for batch in source:
            x, y = split_batch(batch, self.image_key, self.label_key, where=where)
            xs.append(x[: n - seen])
            ys.append(None if y is None else y[: n - seen])
            seen += xs[-1].shape[0]
            if seen >= n:
                break
        if not xs:
            raise AnalysisInputError(f"{where} yielded no images")
        y = None if any(v is None for v in ys) else torch.cat(ys)
        return torch.cat(xs), y

    def images(
        self, trainer: Trainer, pl_module: LightningModule, split: str, n: int
    ) -> tuple[Tensor, Tensor | None]:
        """``n`` fixed images (and labels when known) of ``split``, on the module's device."""
        given = self._given(split)
        dm = trainer.datamodule
        if given is not None:
            x, y = self._batch_from(given, n, self.seed, f"{self.name} data[{split!r}]")
        elif callable(getattr(dm, "analysis_batch", None)):
            x, y = dm.analysis_batch(split=split, n=n, seed=self.seed)
        else:
            loader = self._loader(trainer, pl_module, split)
            x, y = self._batch_from(loader, n, self.seed, f"the {split} dataloader's batch")
        if self.needs_labels and y is None:
            raise AnalysisInputError(
                f"{self.name} needs labels but the {split} batches have none: set label_key or "
                "give the callback data=(images, labels)"
            )
        device = pl_module.device
        return x.to(device), (None if y is None else y.to(device))

    def analysis_batch(self, trainer: Trainer, pl_module: LightningModule):
        """The fixed (images, labels or None) batch of ``split``, on the module's device."""
        return self.images(trainer, pl_module, self.split, self.num_images)

    def split_data(self, trainer: Trainer, pl_module: LightningModule, split: str, limit=None):
        """A whole split as ``(X, Y)`` tensors or a dataset of ``(image, label)`` items (for
        analyses that stream a split): the given data, the datamodule's ``tensors(split)``,
        its ``<split>_dataset``, or the split dataloader's dataset (else its first ``limit``
        batches' items)."""
        given = self._given(split)
        dm = trainer.datamodule
        where = f"the {split} data"
        if given is None and callable(getattr(dm, "tensors", None)):
            return dm.tensors(split)
        source = given
        if source is None:
            source = getattr(dm, f"{split}_dataset", None)
        if source is None:
            source = self._loader(trainer, pl_module, split)
        if isinstance(source, Tensor):
            raise AnalysisInputError(
                f"{self.name} needs labels: give data as (images, labels), not images alone"
            )
        if isinstance(source, Mapping):
            source = split_batch(source, self.image_key, self.label_key, where=where)
            if source[1] is None:
                raise AnalysisInputError(
                    f"{self.name} needs labels but {where} has none: set label_key"
                )
        if isinstance(source, tuple | list) and len(source) == 2:
            return tuple(source)
        dataset = getattr(source, "dataset", source)
        if _indexable(dataset):
            return _PairDataset(dataset, self.image_key, self.label_key, where)
        x, y = self._batch_from(source, limit or 10**9, self.seed, where)
        if y is None:
            raise AnalysisInputError(
                f"{self.name} needs labels but {where} has none: set label_key, or give "
                "data=(images, labels)"
            )
        return x, y

    def out_dir(self, tag: str) -> Path:
        path = self.output_dir / self.name / tag
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------- fail fast
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check options against the model and the data before any training step."""
        self.check_module(pl_module)
        if self._given(self.split) is None and not callable(
            getattr(trainer.datamodule, "analysis_batch", None)
        ):
            self._check_loader(trainer, pl_module)

    def _check_loader(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Only where a dataloader can be had before the loops start (a datamodule's or the
        # module's); loaders passed to fit/test are checked when the analysis runs.
        for owner in (trainer.datamodule, pl_module):
            fn = getattr(owner, f"{self.split}_dataloader", None)
            if owner is None or not callable(fn):
                continue
            try:
                loader = fn()
            except Exception:
                continue
            if loader is None:
                continue
            dataset = getattr(loader, "dataset", None)
            where = f"the {self.split} dataloader's batch"
            if _indexable(dataset):
                collate = getattr(loader, "collate_fn", None) or default_collate
                batch = collate([dataset[0]])
            else:
                batch = next(iter(loader), None)
                if batch is None:
                    return
            split_batch(batch, self.image_key, self.label_key, where=where)
            return

    # ----------------------------------------------------------------- scheduling
    def _write_status(self, tag: str, record: dict[str, Any]) -> None:
        self.status[tag] = record
        try:
            (self.out_dir(tag) / STATUS_FILE).write_text(json.dumps(record, indent=2))
        except OSError as err:  # a read-only or full disk must not end the run either
            log.warning("%s (%s): could not write %s: %s", self.name, tag, STATUS_FILE, err)

    def _run(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        start = time.perf_counter()
        try:
            with eval_mode(pl_module):
                if self.needs_grad:
                    rebuild_eval_caches(pl_module)
                # inference_mode(False) first: entering it turns grad mode back on
                with torch.inference_mode(False), torch.set_grad_enabled(self.needs_grad):
                    result = self.analyse(trainer, pl_module, tag)
            if not isinstance(result, Result):
                result = Result(self.name, scalars=dict(result or {}))
            # writing is part of the analysis: a full disk skips it too, training goes on
            write_result(result, self.out_dir(tag), trainer.loggers, step=trainer.global_step)
        except Exception as err:
            if self.on_error == "raise":
                raise
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            # one line for an expected reason; the traceback too for anything else (a bug)
            log.warning(
                "%s (%s) skipped, training goes on: %s",
                self.name,
                tag,
                reason,
                exc_info=not isinstance(err, AnalysisInputError | AnalysisTypeError),
            )
            self._write_status(
                tag,
                {"analysis": self.name, "tag": tag, "status": "skipped", "reason": reason},
            )
            return
        scalars = result.scalars
        self.results[tag] = dict(scalars)
        self._write_status(
            tag,
            {
                "analysis": self.name,
                "tag": tag,
                "status": "ran",
                "scalars": len(scalars),
                "seconds": round(time.perf_counter() - start, 3),
            },
        )
        log.info(
            "%s (%s): %d scalars written to %s",
            self.name,
            tag,
            len(scalars),
            self.output_dir / self.name / tag,
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = self.every_n_epochs
        if n and not trainer.sanity_checking and (trainer.current_epoch + 1) % n == 0:
            self._run(trainer, pl_module, f"epoch{trainer.current_epoch:03d}")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_fit_end:
            self._run(trainer, pl_module, "fit_end")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Only the test split's pass: the rotated test passes that follow it (rotated_test) test
        # the same weights, and the analysis batch does not depend on them.
        if self.at_test_end and getattr(pl_module, "test_prefix", "test") == "test":
            self._run(trainer, pl_module, "test")

    def final_results(self) -> dict[str, float]:
        """The scalars of the last analysis of the run: the tested checkpoint's if it ran,
        else the final weights', else the latest epoch's (empty if it never ran)."""
        for tag in ("test", "fit_end"):
            if tag in self.results:
                return self.results[tag]
        return self.results[max(self.results)] if self.results else {}


def analysis_results(trainer: Trainer) -> dict[str, float]:
    """:meth:`AnalysisCallback.final_results` of every analysis callback of ``trainer``."""
    out: dict[str, float] = {}
    for cb in trainer.callbacks:
        if isinstance(cb, AnalysisCallback):
            out.update(cb.final_results())
    return out
