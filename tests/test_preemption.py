"""Preemption on SLURM: the requeue signal (SIGUSR1, or SIGTERM) makes Lightning save
``hpc_ckpt_<n>.ckpt`` and run ``scontrol requeue``; the checkpoint loads safely, evaluates, and the
requeued job resumes from it. SLURM is faked with its environment variables and an ``scontrol``
stub on PATH; the signals are real and sent to the running training process."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from lightning.pytorch import Callback

from glassbox import pipeline
from glassbox.errors import ConfigError
from glassbox.runtime.checkpoints import load_checkpoint
from glassbox.runtime.slurm import slurm_environment

TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
    "+model.pca_fit_samples=128",
]
JOB_ID = "4242"


class SignalAt(Callback):
    """Send ``sig`` to this process when training batch ``batch`` of ``epoch`` starts."""

    def __init__(self, sig: int, epoch: int = 1, batch: int = 1) -> None:
        self.sig, self.epoch, self.batch = sig, epoch, batch
        self.sent_at_step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.sent_at_step is None and (trainer.current_epoch, batch_idx) == (
            self.epoch,
            self.batch,
        ):
            self.sent_at_step = trainer.global_step
            os.kill(os.getpid(), self.sig)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """SLURM job environment plus an ``scontrol`` that logs its arguments; with ``kill`` it then
    SIGTERMs the job like a real requeue does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    script = bin_dir / "scontrol"
    script.write_text(
        '#!/bin/sh\necho "$@" >> "$GB_SCONTROL_LOG"\n[ -n "$GB_SCONTROL_KILL" ] && kill -TERM $PPID\nexit 0\n'
    )
    script.chmod(0o755)
    env = {
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "glassbox-train",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "GB_SCONTROL_LOG": str(log),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return log


def _with_callback(monkeypatch, callback: Callback) -> None:
    build = pipeline.build_callbacks
    monkeypatch.setattr(
        pipeline, "build_callbacks", lambda cfg, has_logger: [*build(cfg, has_logger), callback]
    )


def _usable(cfg_eval, ckpt_path: Path) -> dict:
    """A checkpoint is usable when it loads weights-only and evaluates to finite metrics."""
    ckpt = load_checkpoint(ckpt_path)
    metrics = pipeline.evaluate(cfg_eval(f"ckpt_path={ckpt_path}", "rotated_test.random=false"))
    assert (
        0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/loss"] == metrics["test/loss"]
    )  # not NaN
    return ckpt


def test_sigusr1_saves_hpc_checkpoint_requeues_and_the_requeued_job_resumes(
    cfg_train, cfg_eval, tmp_path, monkeypatch, fake_slurm, caplog
):
    monkeypatch.setenv("GB_SCONTROL_KILL", "1")  # the requeue stops the job, as on a cluster
    overrides = [
        "trainer=slurm",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "ckpt_path=last",
        *TINY,
    ]
    sender = SignalAt(signal.SIGUSR1, epoch=1, batch=1)
    _with_callback(monkeypatch, sender)
    with pytest.raises(SystemExit):  # Lightning stops the run on the requeue's SIGTERM
        pipeline.run(cfg_train(*overrides), pipeline.train)
    assert fake_slurm.read_text().split() == ["requeue", JOB_ID]
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    ckpt = _usable(cfg_eval, hpc)
    assert ckpt["global_step"] == sender.sent_at_step == 4  # saved mid-epoch 1, after 3 + 1 steps
    assert not (tmp_path / "metrics.json").exists()

    # The requeued job: the same command, in the same run directory (SLURM keeps the job id).
    monkeypatch.delenv("GB_SCONTROL_KILL")
    with caplog.at_level(logging.INFO, logger="glassbox.runtime.checkpoints"):
        metrics = pipeline.train(cfg_train(*overrides))
    assert f"resuming from {hpc}" in caplog.text
    final = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 2 and final["global_step"] > ckpt["global_step"]
    assert 0.0 <= metrics["test/acc"] <= 1.0 and (tmp_path / "metrics.json").is_file()


def test_sigterm_as_requeue_signal_saves_checkpoint_requeues_and_stops(
    cfg_train, cfg_eval, tmp_path, monkeypatch, fake_slurm
):
    sender = SignalAt(signal.SIGTERM, epoch=1, batch=0)
    _with_callback(monkeypatch, sender)
    cfg = cfg_train(
        "trainer=slurm", "trainer.plugins.1.requeue_signal=SIGTERM", "trainer.max_epochs=3", *TINY
    )
    with pytest.raises(SystemExit):
        pipeline.run(cfg, pipeline.train)
    assert fake_slurm.read_text().split() == ["requeue", JOB_ID]
    ckpt = _usable(cfg_eval, tmp_path / "hpc_ckpt_1.ckpt")
    assert ckpt["global_step"] == sender.sent_at_step == 2
    assert (
        load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 0
    )  # stopped in epoch 1


def test_slurm_environment_outside_slurm_and_bad_signal(monkeypatch):
    from lightning.fabric.plugins.environments import LightningEnvironment

    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert isinstance(slurm_environment(requeue_signal="USR1"), LightningEnvironment)
    with pytest.raises(ConfigError, match=r"requeue_signal='SIGKILL' .* use SIGUSR1"):
        slurm_environment(requeue_signal="SIGKILL")
