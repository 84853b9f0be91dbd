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

from glassbox.errors import ConfigError, NonFiniteLossError
from glassbox.models.reduction import refit_epoch_for
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
        pca_fit_samples: cap on training images used to fit a PCA reduction (at fit start, and
            again at the refit).
        pca_refit_fraction: a PCA reduction is fitted at fit start on the untrained
            representation; at the start of epoch ``round(f · max_epochs)`` (clamped to
            ``1 .. max_epochs - 1``) it is refitted on the trained representation, the
            classifier's first layer is re-expressed in the new basis, and from then on the
            representation is frozen (parameters and BatchNorm statistics: eval mode) while the
            reduction (if trainable) and the classifier are fine-tuned. So the final reduction
            is the PCA of the final representation. ``None``: no refit (the representation
            trains to the end under the fit-start PCA). Ignored without a PCA reduction; with
            ``max_epochs < 2`` (e.g. ``fast_dev_run``) there is no room for a second stage and
            the refit is skipped with a log line.
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
        pca_refit_fraction: float | None = 0.8,
    ) -> None:
        super().__init__()
        # The net is not a hyperparameter: e2cnn modules do not pickle, and the Hydra config
        # stored in the checkpoint (see on_save_checkpoint) rebuilds it.
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.name = name
        self.num_classes, self.monitor, self.pca_fit_samples = num_classes, monitor, pca_fit_samples
        if pca_refit_fraction is not None and not 0.0 < pca_refit_fraction < 1.0:
            raise ConfigError(
                f"model.pca_refit_fraction={pca_refit_fraction} must be a fraction of "
                "trainer.max_epochs in (0, 1), e.g. 0.8, or null for no refit"
            )
        self.pca_refit_fraction = pca_refit_fraction
        self._scheduled_refit: int | None = None  # the refit epoch of this fit (on_fit_start)
        self._freeze_by_discarding = False  # DDP: frozen parameters keep gradients (discarded)
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
        reduction = self._pca_reduction()
        self._scheduled_refit = self._refit_schedule(reduction)
        if reduction is not None and reduction.needs_fit:
            counts["pca/variance_kept"] = self._fit_pca(reduction)
            counts["pca/kept_dim"] = reduction.kept_dim
        for logger in self.loggers:
            logger.log_metrics({k: float(v) for k, v in counts.items()}, step=0)
        log.info("parameters: %s", counts)

    def _pca_reduction(self):
        reduction = getattr(self.net, "reduction", None)
        return reduction if getattr(reduction, "mode", None) == "pca" else None

    def _refit_schedule(self, reduction) -> int | None:
        """The epoch at whose start this fit refits the PCA, or None (see ``pca_refit_fraction``)."""
        trainer = self.trainer
        # DDPStrategy keeps its DistributedDataParallel arguments here. DDP without
        # find_unused_parameters expects a gradient for every parameter it wrapped: there the
        # frozen parameters keep requires_grad and get zero gradients (see training_step),
        # which are discarded before each step.
        ddp_kwargs = getattr(trainer.strategy, "_ddp_kwargs", None)
        self._freeze_by_discarding = bool(
            trainer.world_size > 1
            and ddp_kwargs is not None
            and not ddp_kwargs.get("find_unused_parameters", False)
        )
        if reduction is None or self.pca_refit_fraction is None or reduction.refitted:
            return None
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            raise ConfigError(
                f"model.pca_refit_fraction={self.pca_refit_fraction} is a fraction of trainer.max_epochs, "
                f"which is unbounded ({max_epochs}); set trainer.max_epochs, or model.pca_refit_fraction=null"
            )
        if trainer.fast_dev_run or max_epochs < 2:
            log.info(
                "PCA refit skipped: trainer.max_epochs=%s leaves no epoch for a second stage "
                "(the reduction stays the PCA of the representation at fit start)",
                max_epochs,
            )
            return None
        return refit_epoch_for(self.pca_refit_fraction, max_epochs)

    def on_train_epoch_start(self) -> None:
        reduction = self._pca_reduction()
        if (
            reduction is not None
            and self._scheduled_refit is not None
            and not reduction.refitted
            and self.current_epoch >= self._scheduled_refit
        ):
            self._refit_pca(reduction)
        self._keep_frozen()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._keep_frozen()  # a callback may have put the net back in train mode

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._representation_frozen():
            for p in self._frozen_parameters():
                p.grad = None  # optimizers skip parameters without a gradient (no weight decay)

    def on_train_end(self) -> None:
        reduction = self._pca_reduction()
        if self._scheduled_refit is not None and reduction is not None and not reduction.refitted:
            log.warning(
                "training stopped at epoch %d, before the PCA refit scheduled at epoch %d (early "
                "stopping, max_steps or max_time?): the reduction is still the PCA of the "
                "representation at fit start; lower model.pca_refit_fraction",
                self.current_epoch,
                self._scheduled_refit,
            )

    # ----------------------------------------------------------------- the PCA refit
    def _representation_parts(self) -> list[nn.Module]:
        """The net's modules before the reduction: everything but ``reduction`` and ``classifier``."""
        return [m for n, m in self.net.named_children() if n not in ("reduction", "classifier")]

    def _frozen_parameters(self):
        return [p for m in self._representation_parts() for p in m.parameters()]

    def _representation_frozen(self) -> bool:
        reduction = self._pca_reduction()
        return reduction is not None and reduction.refitted

    def _keep_frozen(self) -> None:
        """After the refit: representation parameters without gradients, its modules (BatchNorm
        statistics, e2cnn's expanded filters) in eval mode. Derived from the ``refit_epoch``
        buffer, so a run resumed in the second stage is frozen as well."""
        if not self._representation_frozen():
            return
        for part in self._representation_parts():
            if not self._freeze_by_discarding:
                for p in part.parameters():
                    p.requires_grad_(False)
            if any(m.training for m in part.modules()):
                # e2cnn caches its expanded filters in eval(): outside inference mode, and
                # without autograd (inference_mode(False) re-enables grad, so no_grad comes second)
                with torch.inference_mode(False), torch.no_grad():
                    part.eval()

    def _refit_pca(self, reduction) -> None:
        classifier = getattr(self.net, "classifier", None)
        first = None
        if classifier is not None:
            first = next((m for m in classifier.modules() if isinstance(m, nn.Linear)), None)
        before = reduction.variance_kept
        kept = self._fit_pca(reduction, carry=first, refit=True)
        reduction.refit_epoch.fill_(self.current_epoch)
        # the optimizer's moments of the re-expressed layers refer to the old basis: restart them
        changed = [*reduction.parameters(), *(first.parameters() if first is not None else ())]
        for optimizer in self.trainer.optimizers:
            for p in changed:
                optimizer.state.pop(p, None)
        self._keep_frozen()
        metrics = {
            "pca/variance_kept": kept,
            "pca/kept_dim": reduction.kept_dim,
            "pca/refit_epoch": self.current_epoch,
        }
        for logger in self.loggers:
            logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=self.global_step)
        log.info(
            "PCA reduction refitted at the start of epoch %d on the trained representation: %d "
            "components keep %.4f of its variance (the fit-start PCA kept %.4f of the untrained "
            "one's); the representation is frozen from now on",
            self.current_epoch,
            reduction.kept_dim,
            kept,
            before,
        )

    @torch.no_grad()
    def _fit_pca(self, reduction, carry: nn.Linear | None = None, refit: bool = False) -> float:
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
        reduction.fit(feats, carry=carry)
        kept = reduction.variance_kept
        if not refit:
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
        if self._freeze_by_discarding and self._representation_frozen():
            # plain DDP wants a gradient for every parameter, but the frozen representation runs
            # in eval mode (e2cnn's cached filters): a zero term gives its parameters zero
            # gradients, which on_before_optimizer_step discards
            loss = loss + 0.0 * sum(p.sum() for p in self._frozen_parameters())
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
