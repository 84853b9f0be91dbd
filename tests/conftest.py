"""Shared fixtures: Hydra configs composed for tiny, offline, fast runs in a temp directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tiny, fast runs: few epochs and batches, small nets, no progress bar, CSV logging.
FAST = [
    "logger=csv",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    # the equivariance report runs once, on the tested checkpoint (its own tests cover the schedule)
    "callbacks.equivariance.every_n_epochs=0",
    "callbacks.equivariance.at_fit_end=false",
    "callbacks.equivariance.num_images=16",
    "data.batch_size=16",
]

# FAST for evaluate.py: evaluate.yaml has no data/model nodes and no training loop
EVAL_FAST = [
    o
    for o in FAST
    if not o.startswith(
        (
            "callbacks.model_summary",
            "trainer.max_epochs",
            "trainer.limit_train",
            "trainer.limit_val",
            "data.",
        )
    )
]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests: on a shared 2-core machine thread
    hand-offs cost more than they save (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compose(config_name: str, overrides: list[str], tmp_path: Path):
    """Compose a config like the entry scripts do, with run/log dirs inside ``tmp_path``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import glassbox.config  # noqa: F401  (registers the schemas and resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def cfg_train(tmp_path):
    """Factory: ``cfg_train(*overrides)`` → a fast train config writing into ``tmp_path``."""
    return lambda *overrides: compose("train", [*FAST, *overrides], tmp_path)


@pytest.fixture
def cfg_eval(tmp_path):
    """Factory: ``cfg_eval(*overrides)`` → a fast evaluate config writing into ``tmp_path/eval``."""
    fast = [*EVAL_FAST, "callbacks.separability=null"]
    return lambda *overrides: compose("evaluate", [*fast, *overrides], tmp_path / "eval")


def run_script(
    script: str, *args: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None
):
    """Run ``python <script> args...`` as a user would; returns CompletedProcess (text)."""
    import subprocess
    import sys

    full_env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
