"""Test-only callbacks, referenced from configs by ``_target_: helpers.<name>``."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback


class PoisonWeightsAtEpoch(Callback):
    """Set every weight to NaN at the start of ``epoch``: the next loss is NaN."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.net.parameters():
                    p.fill_(float("nan"))
