"""W&B on a cluster, without a server: offline runs, the run id kept in the run directory and
reused when the run resumes or is requeued, unique run names per job, the entity, and
``log_model`` turned off (not failing) when W&B cannot upload."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import FAST, run_script
from glassbox.utils import resolvers

resolvers.register()


@pytest.fixture
def offline(monkeypatch):
    """W&B offline (the conftest default is disabled) with no SLURM job around."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _logger(cfg):
    return instantiate(cfg.logger.wandb)


def test_resumed_run_continues_the_same_wandb_run(cfg_train, tmp_path, offline):
    """Two starts in one run directory (a run and its resume/requeue) log into one W&B run id,
    stored in <run dir>/wandb/run_id; a new run directory gets a new id."""
    import wandb

    cfg = cfg_train("logger=wandb")
    first = _logger(cfg)
    run_id = first.experiment.id
    assert (tmp_path / "wandb" / "run_id").read_text().strip() == run_id
    first.experiment.log({"x": 1.0})
    wandb.finish()

    again = _logger(cfg)  # the resumed job builds its logger from the same config
    assert again.experiment.id == run_id
    assert again._wandb_init["resume"] == "allow"
    wandb.finish()
    offline_runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, plus "-1" when both started within the same second
    assert len(offline_runs) == 2
    assert all(
        re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", n) for n in offline_runs
    )

    other = tmp_path / "other"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cfg.paths, "output_dir", str(other))
        assert _logger(cfg)._wandb_init["id"] != run_id


def test_explicit_id_wins(cfg_train, offline):
    logger = _logger(cfg_train("logger=wandb", "logger.wandb.id=abc123"))
    assert logger._wandb_init["id"] == "abc123"


def test_offline_log_model_is_turned_off_not_an_error(cfg_train, offline, caplog):
    """Lightning refuses log_model=True with offline=True; the factory turns it off instead."""
    with caplog.at_level(logging.WARNING, logger="glassbox.runtime.loggers"):
        logger = _logger(cfg_train("logger=wandb", "logger.wandb.log_model=true"))
    assert logger._log_model is False and logger._offline is True
    assert "log_model=True is turned off" in caplog.text


def test_online_keeps_log_model(cfg_train, monkeypatch):
    """Online (server reachable), log_model reaches Lightning's WandbLogger, which then uploads
    the best and last checkpoints at the end of training (nothing is contacted here: the
    experiment is never started)."""
    from glassbox.runtime import loggers

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(loggers, "_reachable", lambda host, timeout=2.0: True)
    logger = _logger(cfg_train("logger=wandb", "logger.wandb.log_model=true"))
    assert logger._log_model is True and logger._offline is False


def test_entity_and_unique_names(cfg_train, offline, monkeypatch):
    cfg = cfg_train("logger=wandb", "logger.wandb.entity=my-team", "seed=7")
    logger = _logger(cfg)
    assert logger._wandb_init["entity"] == "my-team"
    assert logger._wandb_init["name"] == "train-glassbox-digits-seed7"
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    assert _logger(cfg)._wandb_init["name"] == "train-glassbox-digits-seed7-slurm991"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "990")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _logger(cfg)._wandb_init["name"] == "train-glassbox-digits-seed7-slurm990_3"


def test_multirun_jobs_get_their_job_number(tmp_path, offline):
    from conftest import compose

    names = set()
    for num in (0, 1):
        cfg = compose(
            "train",
            [
                *FAST,
                "logger=wandb",
                "model=alexnet",
                "seed=3",
                "hydra.mode=MULTIRUN",
                f"hydra.job.num={num}",
            ],
            tmp_path / str(num),
        )
        names.add(_logger(cfg)._wandb_init["name"])
    assert names == {"train-alexnet-digits-seed3-job0", "train-alexnet-digits-seed3-job1"}


@pytest.mark.slow
def test_train_py_resume_logs_into_the_same_offline_run(tmp_path):
    """End to end: train.py with W&B offline, then the same run directory resumed with
    ckpt_path=last: one run id, two offline segments, both synced by `wandb sync` in order."""
    run_dir = tmp_path / "run"
    args = [
        *FAST,
        "model=alexnet",
        "logger=wandb",
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={tmp_path}",
    ]
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    first = run_script("train.py", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    second = run_script("train.py", *args, "trainer.max_epochs=2", "ckpt_path=last", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run_dir / "wandb" / "run_id").read_text().strip() == run_id
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2
    assert all(
        re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", p.name) for p in segments
    )
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert Path(run_dir / "checkpoints" / "last.ckpt").is_file()
