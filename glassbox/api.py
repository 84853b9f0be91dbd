"""The Python API for notebooks: a trained run back as a LightningModule and its datamodule.

>>> module, dm = glassbox.load_run("logs/train/runs/2024-01-01_12-00-00")  # doctest: +SKIP

``module.net`` is the bare network (eval mode), ``dm`` the datamodule the run was trained on
(set up; ``dm.analysis_batch(split, n)``, ``dm.tensors(split)`` and the dataloaders work), so
the analyses of :mod:`glassbox.equivariance`, :mod:`glassbox.analysis` and
:mod:`glassbox.interpret` run on them directly (README, "Python API").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glassbox.errors import CheckpointError

__all__ = ["find_checkpoint", "load_run"]


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint of a run directory: the best one its ``metrics.json`` names, else the
    newest ``checkpoints/epoch_*.ckpt``, else ``checkpoints/last.ckpt``; a file is returned as is."""
    path = Path(str(path)).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is neither a run directory nor a checkpoint file: pass a train.py run directory "
            "(logs/train/runs/<time>) or one of its checkpoints/*.ckpt"
        )
    metrics = path / "metrics.json"
    if metrics.is_file():
        try:
            best = json.loads(metrics.read_text()).get("best_ckpt")
        except (OSError, ValueError):
            best = None
        if best and Path(best).is_file():
            return Path(best)
    ckpts = path / "checkpoints"
    epochs = sorted(ckpts.glob("epoch_*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    if epochs:
        return epochs[-1]
    if (ckpts / "last.ckpt").is_file():
        return ckpts / "last.ckpt"
    found = sorted(path.glob("*.ckpt"))
    if found:
        return found[0]
    raise CheckpointError(
        f"run directory {path} holds no checkpoint (no metrics.json best_ckpt, no checkpoints/*.ckpt): "
        "pass the directory of a finished train.py run or a .ckpt file"
    )


def load_run(
    path: str | Path, data_overrides: dict[str, Any] | None = None, eval_mode: bool = True
):
    """``(module, datamodule)`` of a trained run (a run directory or a checkpoint file).

    The model and the data are rebuilt from the config stored in the checkpoint (safe loading,
    weights loaded strictly); ``data_overrides`` is merged into the data config (e.g.
    ``{"rotation": {"split": "test", "mode": "random"}}``). The module comes in eval mode.
    """
    import hydra
    from omegaconf import OmegaConf

    from glassbox.runtime.checkpoints import CHECKPOINT_KEY, load_checkpoint, load_weights
    from glassbox.utils import resolvers

    resolvers.register()
    ckpt_path = find_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    config = ckpt[CHECKPOINT_KEY]["config"]
    stored = OmegaConf.create(config)
    data_cfg = OmegaConf.merge(stored.data, data_overrides or {})
    dm = hydra.utils.instantiate(data_cfg)
    dm.setup("fit")
    module = hydra.utils.instantiate(stored.model)
    module.run_config = config
    load_weights(module, ckpt, ckpt_path)
    return (module.eval() if eval_mode else module), dm
