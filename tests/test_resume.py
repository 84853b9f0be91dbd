"""Resume: a run SIGKILLed mid-epoch continues in its run directory and, in deterministic mode with
the same seed, ends exactly where an uninterrupted run ends; nothing written is lost or torn."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT
from glassbox.errors import ConfigError
from glassbox.models.module import CHECKPOINT_KEY
from glassbox.resume import resume_command
from glassbox.runtime.checkpoints import load_checkpoint, resolve_resume_path, resume_candidates
from glassbox.runtime.loggers import ResumableCSVLogger
from glassbox.runtime.rng import collect_rng_state, set_rng_state

TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
]
# two epochs of three batches, bit-reproducible
RUN = [
    *FAST,
    *TINY,
    "+model.pca_fit_samples=128",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_test_batches=1",
    "trainer.deterministic=true",
]

KILLER = '''
import os, signal
from lightning.pytorch import Callback


class KillAt(Callback):
    """SIGKILL this process when (epoch, batch) starts: no handler, no clean-up (like the OOM killer)."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "WANDB_MODE": "disabled",
        "HYDRA_FULL_ERROR": "0",
    }


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *RUN, *extra, f"hydra.run.dir={run_dir}"]


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _per_epoch(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["epoch"]): float(r[key]) for r in rows if r.get(key) and r.get("epoch")}


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    base_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    env = _env(tmp_path)
    # The reference run and the run that gets killed, side by side.
    base = subprocess.Popen(
        _train_cmd(base_dir),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = subprocess.run(
        _train_cmd(run_dir, "+callbacks.kill={_target_: killer.KillAt, epoch: 1, batch: 1}"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    base_out, _ = base.communicate(timeout=600)
    assert base.returncode == 0, base_out[-3000:]
    assert killed.returncode == -9, killed.stderr[-3000:]  # died by SIGKILL, mid-epoch 1

    # What the kill left behind is whole: the end-of-epoch-0 checkpoint loads, nothing is torn.
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 3)
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "metrics.json").exists()
    rows_before = _csv_rows(run_dir)
    assert _per_epoch(rows_before, "val/loss").keys() == {0}

    # Resume with the run's own overrides (read back from .hydra/overrides.yaml), minus the killer.
    resumed = subprocess.run(
        [sys.executable, "-m", "glassbox.resume", str(run_dir), "~callbacks.kill"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    )

    # Final metrics and weights equal the uninterrupted run's, bit for bit.
    want = json.loads((base_dir / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert Path(got["best_ckpt"]).name == Path(want["best_ckpt"]).name
    keys = sorted(k for k, v in want["metrics"].items() if isinstance(v, float))
    print("\nresume test (uninterrupted vs SIGKILLed at epoch 1 batch 1 + resumed):")
    for k in keys:
        print(f"  {k:12s} {want['metrics'][k]:.10g}  {got['metrics'][k]:.10g}")
    assert {k: got["metrics"][k] for k in keys} == {k: want["metrics"][k] for k in keys}
    assert got["metrics"]["test/confusion_matrix"] == want["metrics"]["test/confusion_matrix"]
    final_want = torch.load(base_dir / "checkpoints" / "last.ckpt", weights_only=True)
    final_got = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (
        (final_got["epoch"], final_got["global_step"])
        == (final_want["epoch"], final_want["global_step"])
        == (1, 6)
    )
    for name, tensor in final_want["state_dict"].items():
        assert torch.equal(final_got["state_dict"][name], tensor), name

    # The metrics log kept its pre-kill rows and continued; every epoch matches the reference.
    rows = _csv_rows(run_dir)
    assert [{k: r[k] for k in rows_before[0]} for r in rows[: len(rows_before)]] == rows_before
    for key in ("val/loss", "train/loss", "val/acc"):
        assert _per_epoch(rows, key) == _per_epoch(_csv_rows(base_dir), key), key
    assert not list(run_dir.rglob("*.tmp"))


# --------------------------------------------------------------------------- pieces
def _ckpt(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": step, CHECKPOINT_KEY: {"config": {"x": 1}}}, path)
    return path


def test_last_resolves_to_the_newest_readable_checkpoint(tmp_path, caplog):
    assert resolve_resume_path(None, tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="glassbox.runtime.checkpoints"):
        assert resolve_resume_path("last", tmp_path) is None  # nothing yet: start from scratch
    assert "no checkpoint in" in caplog.text and "hydra.run.dir=<run dir>" in caplog.text
    last = _ckpt(tmp_path / "checkpoints" / "last.ckpt", 3)
    hpc = _ckpt(tmp_path / "hpc_ckpt_1.ckpt", 5)
    os.utime(last, (1, 1))
    assert resume_candidates(tmp_path) == [hpc, last]
    assert resolve_resume_path("last", tmp_path) == str(hpc)  # preempted after the last epoch end
    hpc.write_bytes(b"torn")  # e.g. written by an older, non-atomic version
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="glassbox.runtime.checkpoints"):
        assert resolve_resume_path("last", tmp_path) == str(last)
    assert "skipping unreadable checkpoint" in caplog.text


def test_resume_command_replays_the_runs_overrides(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- model=alexnet\n- trainer.max_epochs=5\n- ckpt_path=/old/last.ckpt\n"
    )
    cmd = resume_command(run_dir, ["trainer.max_epochs=8"])
    assert cmd[1] == str(ROOT / "train.py")
    assert cmd[2:] == [
        "model=alexnet",
        "trainer.max_epochs=5",
        "trainer.max_epochs=8",
        f"hydra.run.dir={run_dir.resolve()}",
        "ckpt_path=last",
    ]
    with pytest.raises(
        ConfigError,
        match=r"is not a glassbox run directory .* pass the directory a train.py run wrote",
    ):
        resume_command(tmp_path / "nowhere")


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(0)
    state = collect_rng_state()
    torch.save({"rng": state}, tmp_path / "rng.ckpt")
    want = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


def test_csv_logger_keeps_rows_repairs_a_torn_row_and_adds_columns(tmp_path):
    log_dir = tmp_path / "csv"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text(
        "epoch,step,val/loss\n0,2,2.5\n1,5,2.4\n2,8,2."
    )  # killed mid-row
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"val/loss": 2.3, "val/acc": 0.5, "epoch": 2}, step=8)
    logger.save()
    rows = _csv_rows(tmp_path)
    assert [(r["epoch"], r["step"], r["val/loss"], r["val/acc"]) for r in rows] == [
        ("0", "2", "2.5", ""),
        ("1", "5", "2.4", ""),
        ("2", "8", "2.3", "0.5"),
    ]
    logger.log_metrics({"val/loss": 2.2, "epoch": 3}, step=11)
    logger.save()
    assert [r["val/loss"] for r in _csv_rows(tmp_path)] == ["2.5", "2.4", "2.3", "2.2"]
    assert not list(log_dir.glob("*.tmp"))
