"""Devices and precision: the start-up check of ``trainer.accelerator``/``trainer.devices``
against the machine, and exact (autocast-free) arithmetic for analyses.

:func:`check_trainer_devices` runs before the Trainer is built, so a GPU config on a machine
without CUDA, or more GPUs than the machine has, stops in one line that names the fix instead
of Lightning's multi-line ``MisconfigurationException`` (or, worse, a job that queues on a
cluster and dies minutes later).

:func:`full_precision` disables autocast (CUDA and CPU) in its scope: analyses whose results are
compared exactly (PCA fit, decision boundaries, SCSC, equivariance errors, separability) must not
run in float16/bfloat16 when a trainer with ``precision=16-mixed`` happens to call them inside
its autocast region.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from glassbox.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")


def cuda_device_count() -> int:
    """Visible CUDA devices (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _requested(devices: Any) -> tuple[int | None, list[int]]:
    """``trainer.devices`` as (count or None for "all"/"auto", explicit indices)."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return None, []
    if isinstance(devices, int | str) and not isinstance(devices, bool):
        text = str(devices).strip()
        if "," in text:  # "0,1" = these device indices
            try:
                ids = [int(p) for p in text.split(",") if p.strip()]
            except ValueError:
                ids = None
            if ids is not None:
                return len(ids), ids
        else:
            try:
                return int(text), []
            except ValueError:
                pass
    else:
        try:
            ids = [int(d) for d in devices]
        except (TypeError, ValueError):
            ids = None
        if ids is not None:
            return len(ids), ids
    raise ConfigError(
        f"trainer.devices={devices!r} is not a device count or list; use a number (trainer.devices=2), "
        "a list of GPU indices (trainer.devices=[0,1]), -1 or auto (all visible GPUs)"
    )


def check_trainer_devices(trainer_cfg: Any) -> None:
    """One clear :class:`ConfigError` when the trainer's accelerator/devices cannot run here.

    * ``accelerator=gpu``/``cuda`` without CUDA → names ``trainer=cpu`` / ``trainer.accelerator=cpu``;
    * more GPUs (or a GPU index) than ``torch.cuda.device_count()`` → names the count present;
    * ``devices`` that is neither a count, a list, ``-1`` nor ``auto``.

    Inside a SLURM job of several tasks the GPU count is the node's, as SLURM exposes it; the
    check is the same."""
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto").lower()
    devices = trainer_cfg.get("devices", "auto")
    count, ids = _requested(devices)
    if count is not None and count < 1:
        raise ConfigError(
            f"trainer.devices={devices!r} asks for no device; use a positive number, a list, -1 or auto"
        )
    present = cuda_device_count()
    if accelerator not in GPU_ACCELERATORS and not (accelerator == "auto" and present):
        return  # CPU: trainer.devices is a number of processes, any count runs
    if present == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU (torch.cuda.is_available() "
            f"is False, torch {torch.__version__}); train on the CPU with trainer=cpu (or "
            "trainer.accelerator=cpu), or run where a GPU and a CUDA build of torch are present"
        )
    if count is not None and count > present:
        raise ConfigError(
            f"trainer.devices={devices!r} asks for {count} GPUs but this machine has {present}; "
            f"set trainer.devices={present} (or -1/auto for all of them)"
        )
    bad = [i for i in ids if not 0 <= i < present]
    if bad:
        raise ConfigError(
            f"trainer.devices={devices!r} names GPU {bad[0]} but this machine has GPUs 0..{present - 1}; "
            f"pick indices below {present}"
        )


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Disable autocast (CUDA and CPU) in this scope; also usable as a decorator. Tensors keep
    their dtypes: exact analyses upcast their own inputs where they need float64."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield
