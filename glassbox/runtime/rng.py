"""Random streams in checkpoints: :class:`RNGStateCallback` saves the global RNG state (torch
CPU/CUDA, numpy, python) in every checkpoint and restores it when a run resumes, so that a
resumed run with ``trainer.deterministic=true`` ends with the same weights and metrics as an
uninterrupted one (tested in ``tests/test_resume.py``)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def collect_rng_state() -> dict[str, Any]:
    """The global random streams (torch CPU/CUDA, numpy, python) as plain tensors and tuples,
    so that a checkpoint holding them still loads with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(Callback):
    """Save the global RNG streams in every checkpoint; restore them when a run resumes.

    Lightning checkpoints hold weights, optimizer, scheduler and loop state but not the random
    streams, so a resumed run would shuffle its next epoch (and draw dropout masks and random
    rotations) differently from the run it continues. The streams captured at save time (the end of
    an epoch, for ``last.ckpt``) must be back in place when the resumed run creates its train
    dataloader iterator, which Lightning does right after the sanity validation (whose own
    iterator draws from the streams). So they are set when fit starts (after the restore) and set
    again when the sanity check ends. With several processes (DDP) each rank has its own streams and only
    rank 0's are saved, so nothing is restored there.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def _apply(self, trainer: Trainer) -> None:
        if self._pending is not None and trainer.world_size == 1:
            set_rng_state(self._pending)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._apply(trainer)  # restored before on_fit_start; enough when there is no sanity check

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._apply(trainer)  # the sanity check's dataloader drew from the streams: set them again

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending = None
