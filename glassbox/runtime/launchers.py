"""Hydra launchers/sweepers and Lightning DDP: one clear error when an optional plugin is
missing, and exactly one run directory (written by rank 0) per job.

Two things here run where Hydra and Lightning would otherwise fail obscurely:

* :func:`require_plugin` is the ``gb.plugin`` resolver used as ``_target_`` in
  ``conf/hydra/launcher/*.yaml`` and ``conf/hparams_search/*optuna*.yaml``. Those configs are
  self-contained (they do not extend the plugin's own schema), so they compose even when the
  plugin is not installed; Hydra resolves ``_target_`` only when it instantiates the sweeper
  or launcher, after composition and before any job, and the resolver then raises one error
  naming the extra to install.
* :func:`ddp_job` wraps each job of ``train.py``/``evaluate.py``. Lightning's DDP launcher
  restarts the entry script for ranks > 0 with the *command line* of the parent; in a Hydra
  multirun that command is the whole sweep (``-m a=1,2``), so every child would run every
  job in new directories. The patched command re-runs only this job's overrides, in this
  job's directory, without writing ``.hydra/`` or the job log. At the end of a job the
  process group is destroyed and the DDP environment restored, so the next job of a
  multirun in the same process starts a fresh group (Lightning only does this at exit).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.errors import CompactHydraException
from omegaconf.errors import InterpolationResolutionError

from glassbox.errors import GlassboxError

log = logging.getLogger(__name__)

# Environment variables Lightning sets in the launching process for its DDP children.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides the DDP child must not inherit: it runs this one job, in this job's directory.
_CHILD_DROP = ("hydra.mode=", "hydra.run.dir=", "hydra.job.name=", "hydra.output_subdir=")


class MissingPluginError(GlassboxError, CompactHydraException, InterpolationResolutionError):
    """A Hydra launcher/sweeper plugin selected in the config is not installed.

    Raised from inside an interpolation: as an ``InterpolationResolutionError`` OmegaConf passes it
    on unwrapped, and as a ``CompactHydraException`` Hydra prints its message, not a traceback.
    """


def require_plugin(target: str, extra: str) -> str:
    """Return ``target`` (a plugin class path) if it imports; else raise one clear error.

    Used as ``_target_: ${gb.plugin:<class path>,<extra>}`` so that selecting e.g.
    ``hydra/launcher=slurm`` without ``hydra-submitit-launcher`` installed says
    ``pip install -e '.[slurm]'`` instead of Hydra's "Unknown plugin class".
    """
    module_name, _, cls_name = str(target).rpartition(".")
    try:
        module = importlib.import_module(module_name)
        getattr(module, cls_name)
    except (ImportError, AttributeError) as err:
        raise MissingPluginError(
            f"the Hydra plugin {target} is not installed ({err}); it comes with the '{extra}' extra: "
            f"pip install -e '.[{extra}]'"
        ) from None
    return str(target)


# --------------------------------------------------------------------------- DDP under Hydra
def _entry_command(cwd: str, config_sources, config_name: str | None) -> list[str]:
    """The argv prefix that starts this program again: ``[script]`` or ``[-m, module]``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is None and sys.argv and sys.argv[0].endswith(".py"):
        return [os.path.join(cwd, sys.argv[0])]
    if spec is not None and not spec.name.startswith("submitit"):
        return ["-m", spec.name]
    # A submitit job process: __main__ is submitit's runner. The entry script sits next to the
    # primary config directory and is named like the config (train.py ↔ conf/train.yaml).
    for source in config_sources:
        if source.provider == "main" and source.schema == "file" and config_name:
            script = Path(source.path).parent / f"{config_name}.py"
            if script.is_file():
                return [str(script)]
    raise GlassboxError(
        "cannot tell which script to restart for the DDP ranks > 0 (this process was started "
        f"as {sys.argv[:1]}); run DDP jobs from train.py/evaluate.py, or use the SLURM launcher, "
        "where SLURM starts one task per device"
    )


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """Command and cwd for Lightning's DDP child ``local_rank`` of the current Hydra job.

    Replaces ``lightning``'s ``_hydra_subprocess_cmd``: the child composes this job's own
    overrides (not the parent's sweep command line) in run mode, into this job's directory,
    and neither writes ``.hydra/`` nor appends to the job's log file.
    """
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    command = [
        sys.executable,
        *_entry_command(hc.runtime.cwd, hc.runtime.config_sources, hc.job.config_name),
    ]
    # the config this job was composed from (a --config-name/-cp/-cd given to the parent)
    for source in hc.runtime.config_sources:
        if source.schema == "file" and source.provider == "main":
            command += ["--config-path", source.path]
        elif source.schema == "file" and source.provider == "command-line":
            command += ["--config-dir", source.path]
    if hc.job.config_name:
        command += ["--config-name", hc.job.config_name]
    command += list(hc.overrides.task)
    command += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_CHILD_DROP)]
    command += [
        f'hydra.run.dir="{hc.runtime.output_dir}"',
        f"hydra.job.name={hc.job.name}_ddp_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    root_handlers = list(hc.job_logging.get("root", {}).get("handlers") or [])
    if "file" in root_handlers:
        # The job log belongs to rank 0; the child logs to its console only.
        kept = ",".join(h for h in root_handlers if h != "file")
        command += [
            f"hydra.job_logging.root.handlers=[{kept}]",
            "++hydra.job_logging.handlers.file.delay=true",
        ]
    return command, hc.runtime.cwd


def patch_lightning_ddp_launcher() -> None:
    """Make Lightning's DDP script launcher start children with :func:`ddp_child_command`."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = ddp_child_command


@contextlib.contextmanager
def ddp_job() -> Iterator[None]:
    """Scope one Hydra job: patched DDP launcher inside, fresh process group for the next job."""
    patch_lightning_ddp_launcher()
    saved = {k: os.environ.get(k) for k in _DDP_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- ranks
def process_rank() -> int:
    """This process's global rank as the launcher set it, before any process group exists.

    ``RANK`` (torchrun, Lightning), then ``SLURM_PROCID`` (one process per ``srun`` task, also
    under submitit), then Lightning's DDP children (``NODE_RANK``/``LOCAL_RANK``; any non-zero one
    means not rank 0); 0 for a plain process."""
    for key in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(key)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                break
    try:
        node, local = int(os.environ.get("NODE_RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        return 0
    return node * 1_000_000 + local  # only "is it zero" matters before the group exists


def rank_zero_subdir(subdir: str | None = ".hydra") -> str | None:
    """``hydra.output_subdir``: ``subdir`` on global rank 0, ``None`` (Hydra writes no ``.hydra/``)
    on every other rank, so that one process per GPU (``srun``) leaves one copy of the config."""
    return subdir if process_rank() == 0 else None


class RankZeroFileHandler(logging.FileHandler):
    """The job log's file handler (``hydra.job_logging.handlers.file``): global rank 0 writes
    ``<run dir>/<task>.log``; the other ranks of a SLURM/torchrun job log to the console only
    (their handler writes to ``os.devnull``), so the log holds each line once."""

    def __init__(self, filename, mode: str = "a", encoding=None, delay: bool = False, errors=None):
        if process_rank() != 0:
            filename, delay = os.devnull, True
        super().__init__(filename, mode=mode, encoding=encoding, delay=delay, errors=errors)


# --------------------------------------------------------------------------- SLURM resources
class LauncherConfigError(GlassboxError, CompactHydraException, InterpolationResolutionError):
    """The SLURM launcher's resources cannot be derived from the trainer config (raised inside
    an interpolation, so Hydra prints the message rather than a traceback)."""


def _slurm_devices(accelerator, devices) -> tuple[bool, int]:
    """(wants GPUs, processes per node) for the SLURM request of a trainer config."""
    from omegaconf import ListConfig

    acc = str(accelerator or "auto").lower()
    gpu = acc in ("gpu", "cuda", "auto")  # auto on a GPU partition means the node's GPUs
    if acc not in ("gpu", "cuda", "auto", "cpu"):
        raise LauncherConfigError(
            f"trainer.accelerator={accelerator} cannot be sized for SLURM; use trainer=cpu, "
            "trainer=gpu or trainer=ddp (accelerator cpu, gpu or auto)"
        )
    if isinstance(devices, list | tuple | ListConfig):
        return gpu, len(devices)
    text = str(devices).strip()
    if "," in text and all(p.strip().isdigit() for p in text.split(",") if p.strip()):
        return gpu, len([p for p in text.split(",") if p.strip()])
    if text.lstrip("-").isdigit() and int(text) >= 1:
        return gpu, int(text)
    if text in ("auto", "-1", "None") and not gpu:
        return False, 1  # Lightning runs one CPU process for devices=auto
    raise LauncherConfigError(
        f"trainer.devices={devices} cannot size a SLURM request (the GPUs are counted on the compute "
        "node, not where the job is submitted); set the number per node, e.g. trainer.devices=4 "
        "(or a list such as trainer.devices=[0,1])"
    )


def slurm_gpus_per_node(accelerator, devices) -> int | None:
    """``hydra.launcher.gpus_per_node``: the trainer's device count, ``None`` (no GPU request)
    for a CPU trainer."""
    gpu, count = _slurm_devices(accelerator, devices)
    return count if gpu else None


def slurm_tasks_per_node(accelerator, devices) -> int:
    """``hydra.launcher.tasks_per_node``: one SLURM task per device (GPU, or CPU DDP process)."""
    return _slurm_devices(accelerator, devices)[1]


def under_submitit() -> bool:
    """Whether this process is a job that submitit's SLURM executor started (it owns requeue)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
