"""Lightning's SLURM requeue as a config-friendly factory (``conf/trainer/slurm.yaml``)."""

from __future__ import annotations

import logging
import signal

from glassbox.errors import ConfigError

log = logging.getLogger(__name__)


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
    from glassbox.runtime.launchers import under_submitit

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
