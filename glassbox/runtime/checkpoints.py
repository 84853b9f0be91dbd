"""Checkpoints: safe loading (weights_only unpickling, clear errors), atomic saving, and finding the
checkpoint an interrupted run resumes from."""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from glassbox.errors import CheckpointError
from glassbox.models.module import CHECKPOINT_KEY
from glassbox.utils.io import atomic_write

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """Load a glassbox checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the cause and the fix for a missing path, a
    missing file, a corrupt file, a file carrying arbitrary pickled objects, or a checkpoint
    that was not written by glassbox.
    """
    if path is None or str(path) in ("", "None", "null"):
        raise CheckpointError(
            "no checkpoint given: pass ckpt_path=<run dir>/checkpoints/last.ckpt (or one of its epoch_*.ckpt)"
        )
    path = Path(str(path)).expanduser()
    if path.is_dir():
        inside = sorted(
            str(p.relative_to(path))
            for p in [*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")]
        )
        raise CheckpointError(
            f"ckpt_path={path} is a directory, not a checkpoint file; pass one of its checkpoints"
            + (f": {', '.join(inside)}" if inside else " (it holds none: is it a run directory?)")
        )
    if not path.is_file():
        there = sorted(p.name for p in path.parent.glob("*.ckpt")) if path.parent.is_dir() else []
        hint = f"; checkpoints there: {', '.join(there)}" if there else ""
        raise CheckpointError(
            f"checkpoint {path} does not exist{hint}. Pass ckpt_path= a .ckpt file a training run wrote"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} carries pickled objects that are not plain tensors/containers and was refused "
            f"for safety ({_unsafe_global(err)}). Only load checkpoints written by glassbox; if you trust this "
            "file, re-save its state_dict with plain types."
        ) from None
    except (
        Exception
    ) as err:  # a torn or foreign file fails in many ways (EOFError, IndexError, ...)
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


def _unsafe_global(err: Exception) -> str:
    """The object torch's weights-only unpickler refused, e.g. ``GLOBAL builtins.exec``."""
    text = str(err)
    found = re.search(
        r"Unsupported global: (GLOBAL [\w.]+)|Unsupported operand \d+|Unsupported class [\w.]+",
        text,
    )
    if found:
        return found.group(0)
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()[0]


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


def load_model(path: str | Path, eval_mode: bool = True):
    """A glassbox checkpoint as a ready ``ClassificationModule`` (``.net`` is the bare net), for
    notebooks and analysis code: safe loading, the model rebuilt from the config stored in the
    checkpoint, weights loaded strictly, eval mode by default."""
    import hydra
    from omegaconf import OmegaConf

    ckpt = load_checkpoint(path)
    stored = OmegaConf.create(ckpt[CHECKPOINT_KEY]["config"])
    module = hydra.utils.instantiate(stored.model)
    module.run_config = ckpt[CHECKPOINT_KEY]["config"]
    load_weights(module, ckpt, path)
    return module.eval() if eval_mode else module


# --------------------------------------------------------------------------- atomic writes
def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``.

    The bytes go to a temporary file in the same directory, are fsynced, and the file is
    renamed over ``path`` (``os.replace`` is atomic within one file system), so a crash or a
    SIGKILL mid-save leaves either the old checkpoint or the new one, never a torso.
    """
    path = atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself (POSIX); not possible on every platform/file system.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that writes local checkpoints atomically (:func:`atomic_torch_save`).

    Lightning's own ``TorchCheckpointIO`` stages the file in the system temp directory and moves
    it; when that is another file system (``/tmp`` on tmpfs, a cluster's scratch) the move is a
    plain copy, which a preemption can cut in half. Remote paths (``s3://`` ...) keep Lightning's
    fsspec transaction. Enabled for every run by ``conf/trainer/default.yaml`` (``plugins``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


# --------------------------------------------------------------------------- resuming
HPC_PATTERN = "hpc_ckpt_*.ckpt"


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """Checkpoints a run can resume from, newest first: ``checkpoints/last*.ckpt`` (written at
    the end of every epoch) and Lightning's SLURM ``hpc_ckpt_<n>.ckpt`` (written on preemption)."""
    run_dir = Path(run_dir)
    found = [*(run_dir / "checkpoints").glob("last*.ckpt"), *run_dir.glob(HPC_PATTERN)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _requeued() -> int:
    """How many times SLURM has requeued this job (0 outside SLURM or on the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", 0))
    except ValueError:
        return 0


def resolve_resume_path(ckpt_path: str | Path | None, run_dir: str | Path) -> str | None:
    """Turn the ``ckpt_path`` option of ``train.py`` into a checkpoint file (or ``None``).

    ``"last"`` means the newest readable checkpoint of ``run_dir`` (see :func:`resume_candidates`;
    an unreadable one is skipped with a warning). When there is none, training starts from scratch
    with a warning, so a SLURM script can always pass ``ckpt_path=last``. Any other value must be an
    existing glassbox checkpoint (checked by :func:`load_checkpoint`). In a job SLURM requeued
    (``SLURM_RESTART_COUNT`` ≥ 1, by preemption, ``scontrol requeue`` or submitit) no ``ckpt_path``
    also means ``"last"`` when the run directory holds a checkpoint, so a requeue never restarts a
    run from scratch over its own checkpoints.
    """
    if ckpt_path is None or str(ckpt_path) in ("", "None", "null"):
        if not _requeued() or not resume_candidates(run_dir):
            return None
        # A requeued SLURM job runs its command again in the same run directory: continue it.
        log.info("SLURM job requeued (SLURM_RESTART_COUNT=%s): resuming", _requeued())
        ckpt_path = "last"
    if str(ckpt_path) == "last":
        for candidate in resume_candidates(run_dir):
            try:
                load_checkpoint(candidate)
            except CheckpointError as err:
                log.warning("skipping unreadable checkpoint: %s", err)
                continue
            log.info("resuming from %s", candidate)
            return str(candidate)
        log.warning(
            "ckpt_path=last: no checkpoint in %s yet, so training starts from scratch. To resume an "
            "earlier run, pass its directory: hydra.run.dir=<run dir> (or python -m glassbox.resume <run dir>)",
            run_dir,
        )
        return None
    load_checkpoint(ckpt_path)
    return str(Path(str(ckpt_path)).expanduser())


def check_resumable(module: torch.nn.Module, path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint at ``path`` is safe to load and holds
    weights for exactly ``module``'s parameters and buffers (same names and shapes); checked before
    Lightning restores a run, whose own error would be a bare ``load_state_dict`` traceback."""
    ckpt = load_checkpoint(path)
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    missing, unexpected = sorted(have.keys() - got.keys()), sorted(got.keys() - have.keys())
    shapes = [
        f"{k}: {got[k]} vs {have[k]}" for k in sorted(have.keys() & got.keys()) if got[k] != have[k]
    ]
    if not (missing or unexpected or shapes):
        return
    name = net_name(ckpt)
    details = "; ".join(
        part
        for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"shape mismatch {', '.join(shapes[:3])}" if shapes else "",
        )
        if part
    )
    raise CheckpointError(
        f"cannot resume from {path}: it holds a {name!r} model that does not fit the configured one "
        f"({details}). Resume with the run's original overrides (python -m glassbox.resume <run dir> "
        "replays them) or drop ckpt_path to start a new run"
    )
