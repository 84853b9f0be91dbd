"""Shared scheduling and output plumbing for the analysis callbacks.

An analysis callback only adapts: it picks a fixed batch from the datamodule, calls pure
analysis code on ``pl_module.net`` and hands the results to the loggers and to files in
the run directory. Subclasses implement :meth:`analyse`; this base decides *when* it runs
(every ``every_n_epochs`` validation epochs, at the end of fit, at the end of test — the
test that ``train.py`` runs on the best checkpoint, and ``evaluate.py``) and makes sure
only global rank 0 writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from glassbox.models.equivariant import rebuild_eval_caches

log = logging.getLogger(__name__)


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
        split: which split the analysis batch comes from (``val`` or ``test``).
        seed: seed that picks the analysis batch, so every run sees the same images.
    """

    name = "analysis"
    needs_grad = False

    def __init__(
        self,
        output_dir: str | Path = ".",
        every_n_epochs: int = 0,
        at_fit_end: bool = False,
        at_test_end: bool = True,
        num_images: int = 64,
        split: str = "val",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0 (0 disables), got {every_n_epochs}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of train/val/test, got {split!r}")
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.at_fit_end = at_fit_end
        self.at_test_end = at_test_end
        self.num_images = num_images
        self.split = split
        self.seed = seed
        self.results: dict[str, dict[str, float]] = {}  # tag → the scalars of that run

    # ----------------------------------------------------------------- for subclasses
    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> dict[str, float]:
        """Run the analysis; write files under :meth:`out_dir`; return scalars to log."""
        raise NotImplementedError

    def analysis_batch(self, trainer: Trainer, pl_module: LightningModule):
        """The fixed (images, labels) batch, on the module's device."""
        x, y = trainer.datamodule.analysis_batch(
            split=self.split, n=self.num_images, seed=self.seed
        )
        return x.to(pl_module.device), y.to(pl_module.device)

    def out_dir(self, tag: str) -> Path:
        path = self.output_dir / self.name / tag
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------- scheduling
    def _run(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        if self.needs_grad:
            rebuild_eval_caches(pl_module)
        try:
            with torch.set_grad_enabled(self.needs_grad), torch.inference_mode(False):
                scalars = self.analyse(trainer, pl_module, tag)
        finally:
            pl_module.train(was_training)
        self.results[tag] = dict(scalars or {})
        if scalars and trainer.loggers:
            step = trainer.global_step
            for logger in trainer.loggers:
                logger.log_metrics(dict(scalars), step=step)
        log.info(
            "%s (%s): %d scalars written to %s",
            self.name,
            tag,
            len(scalars or {}),
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


def log_table(trainer: Trainer, key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Log a table to every W&B logger of the trainer (other loggers have no tables)."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key=key, columns=columns, data=rows)


def log_image(
    trainer: Trainer, key: str, paths: list[str | Path], captions: list[str] | None = None
) -> None:
    """Log image files to every W&B logger, and to TensorBoard as figures where present."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            kwargs = {"caption": captions} if captions else {}
            logger.log_image(key=key, images=[str(p) for p in paths], **kwargs)
