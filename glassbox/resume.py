"""Resuming interrupted runs: RNG state in checkpoints, a CSV logger that continues its file,
Lightning's SLURM requeue, and ``python -m glassbox.resume <run dir>``.

An interrupted run continues *in its own run directory*::

    python train.py <the run's overrides> hydra.run.dir=<run dir> ckpt_path=last
    python -m glassbox.resume <run dir>          # the same, with the overrides read back from
                                                 # <run dir>/.hydra/overrides.yaml

``ckpt_path=last`` picks the newest of ``checkpoints/last.ckpt`` (end of every epoch) and
Lightning's ``hpc_ckpt_<n>.ckpt`` (written on a SLURM requeue signal); see
:func:`glassbox.checkpoints.resolve_resume_path`. With ``trainer.deterministic=true`` and the same
seed, a run resumed from an end-of-epoch checkpoint ends with the same weights and metrics as an
uninterrupted one, because :class:`RNGStateCallback` stores and restores the random streams that
shuffle the data and draw dropout masks and augmentations (tested in ``tests/test_resume.py``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from glassbox.errors import ConfigError
from glassbox.utils.io import atomic_write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- RNG state
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


# --------------------------------------------------------------------------- CSV logging
class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; this one keeps it
    and appends, repairs a last row that a SIGKILL cut short, and rewrites the file atomically
    when new columns appear."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        original = path.read_text()
        text = original
        if text and not text.endswith("\n"):  # the process died mid-row: drop the torso
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text)))
        header = next(csv.reader(io.StringIO(text)), [])
        self.metrics_keys = sorted(header)
        if text != original or header != self.metrics_keys:
            self._write_all(rows)
        log.info("continuing %s (%d rows kept)", path, len(rows))

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buf.getvalue())

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        self.metrics_keys = list(fieldnames)
        self._write_all(rows)

    def log_hparams(self, params: dict[str, Any]) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        target = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        tmp = target.with_name(f".{target.name}.tmp")
        save_hparams_to_yaml(tmp, self.hparams)
        os.replace(tmp, target)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume in the same run directory: earlier
    rows are kept and the resumed run appends (rows of the epoch that was cut short may appear
    twice; the ``epoch``/``step`` columns tell them apart). Local directories only."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


# --------------------------------------------------------------------------- SLURM
def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1"):
    """Lightning's ``SLURMEnvironment`` with the requeue signal given by name (config-friendly).

    On ``requeue_signal`` Lightning saves ``<run dir>/hpc_ckpt_<n>.ckpt`` and calls
    ``scontrol requeue $SLURM_JOB_ID``; the requeued job runs the same command, and
    ``ckpt_path=last`` resumes from that checkpoint. ``SIGUSR1`` pairs with
    ``#SBATCH --signal=USR1@90`` (warning before the time limit); ``SIGTERM`` also covers
    preemption, where SLURM sends SIGTERM then SIGKILL after the partition's grace time. Outside a
    SLURM job this returns a plain ``LightningEnvironment`` (one notice), so the config also runs
    on a laptop.
    """
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    name = str(requeue_signal).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in {"SIGUSR1", "SIGUSR2", "SIGTERM"} or not hasattr(signal, name):
        raise ConfigError(
            f"requeue_signal={requeue_signal!r} is not a signal SLURM sends before stopping a job; use SIGUSR1 "
            "(with #SBATCH --signal=USR1@90), SIGUSR2 or SIGTERM"
        )
    if not SLURMEnvironment.detect():
        log.info(
            "trainer=slurm outside a SLURM job: no requeue-on-%s (running as a plain local job)",
            name,
        )
        return LightningEnvironment()
    from glassbox.launchers import under_submitit

    if auto_requeue and under_submitit():
        # hydra/launcher=slurm: submitit owns requeue (USR2 → checkpoint → requeue); two
        # mechanisms would each `scontrol requeue` the job.
        log.info(
            "trainer=slurm under submitit's SLURM launcher: submitit requeues the job on its "
            "signal (USR2), Lightning's requeue-on-%s is off",
            name,
        )
        auto_requeue = False
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=getattr(signal, name))


# --------------------------------------------------------------------------- resume CLI
_REPLACED = ("ckpt_path=", "hydra.run.dir=", "+ckpt_path=", "++ckpt_path=")


def resume_command(run_dir: str | Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command that continues the training run in ``run_dir``: ``train.py`` with the run's
    own overrides (``.hydra/overrides.yaml``), then ``extra``, then
    ``hydra.run.dir=<run dir> ckpt_path=last``."""
    import yaml

    run_dir = Path(run_dir).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{run_dir} is not a glassbox run directory (no .hydra/overrides.yaml); pass the directory a "
            "train.py run wrote, e.g. logs/train/runs/<time> or logs/train/multiruns/<time>/<n>"
        )
    overrides = [str(o) for o in (yaml.safe_load(saved.read_text()) or [])]
    kept = [o for o in overrides if not o.startswith(_REPLACED)]
    script = ROOT / "train.py"
    if not script.is_file():
        raise ConfigError(
            f"train.py not found at {script}; run from a source checkout (pip install -e .)"
        )
    return [
        sys.executable,
        str(script),
        *kept,
        *extra,
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m glassbox.resume <run dir> [extra overrides...]``: continue an interrupted run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if args else 2
    try:
        cmd = resume_command(args[0], args[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("resuming:", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
