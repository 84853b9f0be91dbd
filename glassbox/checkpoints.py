"""Safe checkpoint loading: weights_only unpickling, clear errors, model rebuilt from the stored config."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from glassbox.errors import CheckpointError
from glassbox.models.module import CHECKPOINT_KEY


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """Load a glassbox checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the cause and the fix for a missing path, a
    missing file, a corrupt file, a file carrying arbitrary pickled objects, or a checkpoint
    that was not written by glassbox.
    """
    if path is None or str(path) in ("", "None", "null"):
        raise CheckpointError(
            "no checkpoint given: pass ckpt_path=/path/to/run/checkpoints/last.ckpt (or best)"
        )
    path = Path(str(path)).expanduser()
    if not path.is_file():
        hint = (
            f"; checkpoints there: {', '.join(sorted(p.name for p in path.parent.glob('*.ckpt')))}"
            if path.parent.is_dir()
            else ""
        )
        raise CheckpointError(
            f"checkpoint {path} does not exist{hint}. Pass ckpt_path= a .ckpt file a training run wrote"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} carries pickled objects that are not plain tensors/containers and was refused "
            f"for safety ({str(err).splitlines()[0]}). Only load checkpoints written by glassbox; if you trust this "
            "file, re-save its state_dict with plain types."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Use another checkpoint of the run (e.g. last.ckpt or an epoch checkpoint) or retrain"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); pass a .ckpt written by train.py"
        )
    meta = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or not meta.get("config"):
        raise CheckpointError(
            f"{path} was not written by glassbox (it has no stored run config), so its model cannot be rebuilt; "
            "pass a checkpoint from a glassbox train.py run"
        )
    return ckpt


def net_name(ckpt: dict[str, Any]) -> str:
    """Short name (``glassbox``/``alexnet``/...) of the model a checkpoint holds."""
    meta = ckpt[CHECKPOINT_KEY]
    return str(meta.get("name") or meta["net_class"])


def load_weights(module: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load the checkpoint's state dict strictly; a mismatch means another model's checkpoint."""
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        first = "; ".join(str(err).splitlines()[1:3]).strip()
        raise CheckpointError(
            f"checkpoint {path} does not fit the model its config describes ({first}). It was probably written "
            "by another model or version: pass a checkpoint of this model or retrain"
        ) from None
