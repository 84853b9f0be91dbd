"""SLURM on a CPU: one process per task as ``srun`` starts them (2 gloo processes with SLURM's
environment variables), the sbatch request derived from the trainer through submitit's API,
and the one requeue mechanism per launcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, FAST, ROOT

TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
    *(o for o in FAST if not o.startswith(("callbacks.equivariance.", "trainer="))),
    "++callbacks.equivariance=null",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_env(rank: int, ntasks: int, port: int) -> dict[str, str]:
    """What ``srun --ntasks-per-node=2`` sets for task ``rank`` of job 4242 on one node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    env.update(
        WANDB_MODE="disabled",
        HYDRA_FULL_ERROR="0",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="train",
        SLURM_NTASKS=str(ntasks),
        SLURM_NTASKS_PER_NODE=str(ntasks),
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NODELIST="localhost",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    return env


def test_srun_tasks_only_global_rank_zero_writes_the_run_files(tmp_path):
    """Two processes of one SLURM job (gloo DDP, SLURMEnvironment): rank 0 writes ``.hydra/``,
    ``train.log``, ``metrics.json`` and the checkpoints; rank 1, given a directory of its own to
    make any write visible, leaves it empty. Both ranks trained together (world size 2)."""
    port = _free_port()
    dirs = [tmp_path / "rank0", tmp_path / "rank1"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *TINY,
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                f"hydra.run.dir={dirs[rank]}",
                f"paths.log_dir={tmp_path / 'logs'}",
            ],
            cwd=ROOT,
            env=_slurm_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for rank, (proc, out) in enumerate(zip(procs, outs)):
        assert proc.returncode == 0, f"rank {rank}:\n{out[-3000:]}"
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in out, out[-3000:]
    rank0, rank1 = dirs
    assert (rank0 / ".hydra" / "config.yaml").is_file()
    assert (rank0 / "train.log").is_file() and (rank0 / "metrics.json").is_file()
    assert list((rank0 / "checkpoints").glob("*.ckpt"))
    metrics = json.loads((rank0 / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # the PCA fit ran on both ranks, yet the log holds rank 0's line only
    assert (rank0 / "train.log").read_text().count("PCA reduction fitted") == 1
    assert "PCA reduction fitted" in outs[1]  # rank 1 did log it, to its console
    assert sorted(p.relative_to(rank1) for p in rank1.rglob("*")) == []


def test_process_rank_reads_the_launchers_variables(monkeypatch):
    from glassbox.runtime.launchers import process_rank, rank_zero_subdir

    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert process_rank() == 0 and rank_zero_subdir(".hydra") == ".hydra"
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert process_rank() == 3 and rank_zero_subdir(".hydra") is None
    monkeypatch.setenv("RANK", "0")  # torchrun's/Lightning's global rank wins
    assert process_rank() == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("SLURM_PROCID")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a Lightning DDP child
    assert process_rank() != 0


# --------------------------------------------------------------------------- sbatch request
def _hydra_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from glassbox.utils import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def _sbatch(tmp_path: Path, monkeypatch, overrides: list[str]) -> list[str]:
    """The sbatch script submitit would submit for job 0 of this config (nothing is submitted)."""
    import submitit
    from hydra.utils import instantiate

    cfg = _hydra_cfg(["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides])
    launcher = instantiate(cfg.hydra.launcher)
    captured = {}

    class _Job:
        def results(self):
            return ["done"]

    def fake_map_array(self, fn, *args):
        captured["executor"] = self
        return [_Job() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=1"]], initial_job_idx=0)
    executor = captured["executor"]._executor
    return executor._make_submission_file_text(
        "python -u -m submitit.core._submit", "uid"
    ).splitlines()


def test_cpu_trainer_requests_no_gpu(tmp_path, monkeypatch):
    sbatch = _sbatch(tmp_path, monkeypatch, ["trainer=cpu"])
    assert not [line for line in sbatch if "gpu" in line.lower() or "gres" in line]
    assert "#SBATCH --ntasks-per-node=1" in sbatch


def test_cpu_ddp_trainer_requests_tasks_not_gpus(tmp_path, monkeypatch):
    sbatch = _sbatch(tmp_path, monkeypatch, ["trainer=ddp", "trainer.accelerator=cpu"])
    assert "#SBATCH --ntasks-per-node=2" in sbatch
    assert not [line for line in sbatch if "gpu" in line.lower()]


@pytest.mark.parametrize(
    ("devices", "n"), [("3", 3), ("[0,1]", 2), ("'0,1,2,3'", 4)], ids=["count", "list", "str"]
)
def test_gpu_devices_size_the_request(tmp_path, monkeypatch, devices, n):
    sbatch = _sbatch(tmp_path, monkeypatch, ["trainer=gpu", f"trainer.devices={devices}"])
    assert f"#SBATCH --gpus-per-node={n}" in sbatch and f"#SBATCH --ntasks-per-node={n}" in sbatch


@pytest.mark.parametrize("devices", ["auto", "-1"])
def test_gpu_devices_auto_is_one_clear_error(devices):
    from glassbox.runtime.launchers import LauncherConfigError

    cfg = _hydra_cfg(["hydra/launcher=slurm", "trainer=gpu", f"trainer.devices={devices}"])
    with pytest.raises(
        LauncherConfigError, match=r"set the number per node, e\.g\. trainer\.devices=4"
    ):
        cfg.hydra.launcher.gpus_per_node  # noqa: B018  (read when Hydra instantiates the launcher)


def test_cpu_devices_auto_is_one_task():
    cfg = _hydra_cfg(["hydra/launcher=slurm", "trainer=cpu", "trainer.devices=auto"])
    assert cfg.hydra.launcher.gpus_per_node is None and cfg.hydra.launcher.tasks_per_node == 1


# --------------------------------------------------------------------------- one requeue mechanism
@pytest.fixture
def slurm_job(monkeypatch):
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    return monkeypatch


def test_lightning_requeues_in_a_hand_written_sbatch_job(slurm_job):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from glassbox.runtime.slurm import slurm_environment

    env = slurm_environment(auto_requeue=True, requeue_signal="USR1")
    assert isinstance(env, SLURMEnvironment)
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1


def test_submitit_owns_requeue_under_the_slurm_launcher(slurm_job):
    """submitit's job sets SUBMITIT_EXECUTOR=slurm and requeues on USR2 itself; Lightning's
    handler is then off, so the job is never requeued twice."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from glassbox.runtime.slurm import slurm_environment

    slurm_job.setenv("SUBMITIT_EXECUTOR", "slurm")
    env = slurm_environment(auto_requeue=True, requeue_signal="SIGUSR1")
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False


def test_launcher_signal_is_submitits_usr2(tmp_path, monkeypatch):
    sbatch = _sbatch(tmp_path, monkeypatch, ["trainer=cpu"])
    assert "#SBATCH --signal=USR2@120" in sbatch and "#SBATCH --requeue" in sbatch
    assert "export SUBMITIT_EXECUTOR=slurm" in sbatch  # what under_submitit() reads


def test_requeued_job_resumes_without_ckpt_path(tmp_path, monkeypatch):
    """A requeued job (SLURM_RESTART_COUNT ≥ 1) runs its command again: with no ckpt_path it
    continues from the run directory's newest checkpoint instead of starting over."""
    import torch

    from glassbox.runtime.checkpoints import resolve_resume_path

    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert resolve_resume_path(None, tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolve_resume_path(None, tmp_path) is None  # nothing to resume yet
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "glassbox": {"config": {"seed": 1}}, "epoch": 0}, last)
    got = resolve_resume_path(None, tmp_path)
    assert got is not None and Path(got).resolve() == last.resolve()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resolve_resume_path(None, tmp_path) is None
