"""The classification LightningModule shared by every net."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from glassbox.errors import NonFiniteLossError
from glassbox.runtime.devices import full_precision

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "glassbox"


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training of ``net`` with accuracy, macro-F1 and a test confusion matrix.

    Args:
        net: any ``nn.Module`` mapping images to logits (``GlassBoxNet``, ``AlexNet``, ...).
        optimizer: a partial (Hydra ``_partial_: true``) taking ``params``.
        scheduler: optional partial taking ``optimizer``; stepped per epoch on ``monitor``.
        num_classes: number of classes (from the data config).
        name: the model's config name (``glassbox``, ``alexnet``), stored in checkpoints.
        pca_fit_samples: cap on training images used to fit a PCA reduction at fit start.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 10,
        name: str = "",
        label_smoothing: float = 0.0,
        monitor: str = "val/loss",
        pca_fit_samples: int = 4096,
    ) -> None:
        super().__init__()
        # The net is not a hyperparameter: e2cnn modules do not pickle, and the Hydra config
        # stored in the checkpoint (see on_save_checkpoint) rebuilds it.
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.name = name
        self.num_classes, self.monitor, self.pca_fit_samples = num_classes, monitor, pca_fit_samples
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_confmat = MulticlassConfusionMatrix(num_classes)
        self.test_prefix = "test"
        self.confusion_matrix: torch.Tensor | None = None
        self.run_config: dict | None = None  # set by the pipeline; saved into checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_test_prefix(self, prefix: str) -> None:
        """Log the next test run under ``<prefix>/...`` (e.g. ``test_rot90``)."""
        self.test_prefix = prefix
        self.test_metrics = self.test_metrics.clone(prefix=f"{prefix}/")

    # ----------------------------------------------------------------- fit set-up
    def on_fit_start(self) -> None:
        counts = {"params/total": sum(p.numel() for p in self.net.parameters())}
        counts["params/trainable"] = sum(
            p.numel() for p in self.net.parameters() if p.requires_grad
        )
        if hasattr(self.net, "parameter_counts"):
            counts.update({f"params/{k}": v for k, v in self.net.parameter_counts().items()})
        reduction = getattr(self.net, "reduction", None)
        if getattr(reduction, "needs_fit", False):
            counts["pca/variance_kept"] = self._fit_pca(reduction)
            counts["pca/kept_dim"] = reduction.kept_dim
        for logger in self.loggers:
            logger.log_metrics({k: float(v) for k, v in counts.items()}, step=0)
        log.info("parameters: %s", counts)

    @torch.no_grad()
    def _fit_pca(self, reduction) -> float:
        dm = self.trainer.datamodule
        images, _ = dm.tensors("train")
        images = images[
            torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[
                : self.pca_fit_samples
            ]
        ]
        was_training = self.net.training
        self.net.eval()
        # on the module's device and in its dtype, outside any autocast (16-mixed): the fit is exact
        dtype = next(self.net.parameters()).dtype
        with full_precision():
            feats = torch.cat(
                [self.net.layers(b.to(self.device, dtype)).invariant for b in images.split(256)]
            )
        self.net.train(was_training)
        reduction.fit(feats)
        kept = reduction.variance_kept
        log.info(
            "PCA reduction fitted on %d training representations: %d components keep %.1f%% of the variance",
            len(feats),
            reduction.kept_dim,
            100 * kept,
        )
        return kept

    # ----------------------------------------------------------------- steps
    def _step(self, batch):
        x, y = batch
        logits = self.net(x)
        return self.criterion(logits, y), logits, y

    def training_step(self, batch, batch_idx: int):
        loss, logits, y = self._step(batch)
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite:
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                "Training stopped; the last good checkpoint (last.ckpt) is kept. Lower model.optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data for NaNs."
            )
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int):
        loss, logits, y = self._step(batch)
        self.val_metrics.update(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int):
        loss, logits, y = self._step(batch)
        self.test_metrics.update(logits, y)
        self.test_confmat.update(logits, y)
        self.log(f"{self.test_prefix}/loss", loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        self.confusion_matrix = self.test_confmat.compute().cpu()
        self.test_confmat.reset()

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain containers only, so the checkpoint loads with torch.load(weights_only=True).
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.run_config,
            "name": self.name,
            "net_class": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
        }
