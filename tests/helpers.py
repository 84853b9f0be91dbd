"""Shared test doubles: tiny nets, data and modules for the callback and analysis tests, a
recording logger, and test-only callbacks (configs reference them as ``helpers.<name>``)."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class PoisonWeightsAtEpoch(Callback):
    """Set every weight to NaN at the start of ``epoch``: the next loss is NaN."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.net.parameters():
                    p.fill_(float("nan"))


class TinyGlassBox(nn.Module):
    """The glass-box contract in miniature and exactly equivariant: two e2cnn blocks of regular
    fields (C_N, or D_N with ``flips``), group pooling, an optional linear reduction, a linear
    classifier, and ``layers(x)`` returning the named fields GlassBoxNet returns."""

    def __init__(
        self,
        n_rot: int = 4,
        flips: bool = False,
        widths: tuple[int, int] = (2, 3),
        pool: bool = True,
        reduced_dim: int | None = 2,
        num_classes: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from e2cnn import gspaces
        from e2cnn import nn as enn

        import glassbox  # noqa: F401  (e2cnn numpy-2 patches)

        torch.manual_seed(seed)
        self.enn = enn
        self.gspace = gspaces.FlipRot2dOnR2(n_rot) if flips else gspaces.Rot2dOnR2(n_rot)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr])
        t1, t2 = (enn.FieldType(self.gspace, w * [self.gspace.regular_repr]) for w in widths)
        block1 = [enn.R2Conv(self.in_type, t1, 3, padding=1), enn.ReLU(t1)]
        if pool:
            block1.append(enn.PointwiseMaxPool(t1, 2))
        self.representation = enn.SequentialModule(
            OrderedDict(
                block1=enn.SequentialModule(*block1),
                block2=enn.SequentialModule(enn.R2Conv(t1, t2, 3, padding=1), enn.ReLU(t2)),
            )
        )
        self.group_pool = enn.GroupPooling(t2)
        if reduced_dim is not None:
            self.reduction = nn.Module()
            self.reduction.linear = nn.Linear(widths[1], reduced_dim)
        self.classifier = nn.Linear(reduced_dim or widths[1], num_classes)
        self.num_classes = num_classes

    def layers(self, x):
        fields = self.representation(self.enn.GeometricTensor(x, self.in_type))
        inv_map = self.group_pool(fields).tensor
        invariant = inv_map.mean((-2, -1))
        b, _, h, w = fields.tensor.shape
        order = self.gspace.fibergroup.order()
        equivariant = fields.tensor.view(b, -1, order, h, w).mean((-2, -1))
        out = SimpleNamespace(
            representation=fields,
            invariant_map=inv_map,
            invariant=invariant,
            equivariant=equivariant,
        )
        head_input = invariant
        if hasattr(self, "reduction"):
            out.reduced = head_input = self.reduction.linear(invariant)
        out.logits = self.classifier(head_input)
        return out

    def forward(self, x):
        return self.layers(x).logits


class TensorDataModule(pl.LightningDataModule):
    """In-memory splits ``{split: (x, y)}`` with the datamodule API the callbacks use
    (``tensors``, ``analysis_batch``); the test loader falls back to the validation split."""

    def __init__(self, data: dict, num_classes: int, batch_size: int = 32) -> None:
        super().__init__()
        self.data, self.num_classes, self.batch_size = data, num_classes, batch_size
        x = data["train"][0]
        self.channels, self.image_size = x.shape[1], x.shape[-1]

    def tensors(self, split: str):
        return self.data[split]

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            TensorDataset(*self.data[split]), batch_size=self.batch_size, shuffle=shuffle
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test" if "test" in self.data else "val")

    def analysis_batch(self, split="val", n=64, seed=0):
        x, y = self.data[split]
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]


class TinyModule(pl.LightningModule):
    """Cross-entropy training of ``net`` with Adam; logs val/acc and test/acc."""

    def __init__(self, net: nn.Module, name: str = "tiny", lr: float = 1e-2) -> None:
        super().__init__()
        self.net, self.name, self.lr = net, name, lr
        self.test_prefix = "test"

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean())

    def test_step(self, batch, _):
        x, y = batch
        self.log("test/acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def tiny_trainer(logger: Logger | None = None, callbacks=(), **kwargs) -> pl.Trainer:
    """A quiet CPU trainer without checkpoints or sanity checks."""
    return pl.Trainer(
        logger=logger if logger is not None else False,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


class RecordingLogger(Logger):
    """Captures what a callback sends to a W&B-like logger: ``history`` (each log_metrics
    call), ``metrics`` (the latest value of every key), tables and images."""

    name, version = "recording", 0

    def __init__(self) -> None:
        super().__init__()
        self.history, self.metrics, self.tables, self.images = [], {}, {}, {}

    def log_metrics(self, metrics, step=None):
        self.history.append(dict(metrics))
        self.metrics.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_table(self, key, columns, data):
        self.tables[key] = (columns, data)

    def log_image(self, key, images, caption=None):
        self.images[key] = (images, caption)
