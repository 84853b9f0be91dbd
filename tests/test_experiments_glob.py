"""Every experiment under fast_dev_run, as a new user would try them: analyses that cannot run on
a one-step model (e.g. interpretations when every image is predicted as one class) are skipped
with a status.json, and every job finishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONF, run_script
from glassbox import pipeline

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _statuses(run_dir: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(run_dir)): json.loads(p.read_text())
        for p in run_dir.glob("*/*/status.json")
    }


@pytest.mark.slow
def test_every_experiment_passes_fast_dev_run_from_the_command_line(tmp_path):
    """``python train.py -m 'experiment=glob(*)' ++trainer.fast_dev_run=true logger=csv`` (about
    100 s on 2 cores: one Python/Hydra start-up per experiment)."""
    proc = run_script(
        "train.py", "-m", "experiment=glob(*)", "++trainer.fast_dev_run=true", "logger=csv",
        f"hydra.sweep.dir={tmp_path}", f"paths.root_dir={tmp_path}",
        timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    jobs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert len(jobs) == len(EXPERIMENTS)
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())["metrics"]
        assert 0.0 <= metrics["test/acc"] <= 1.0
        for where, status in _statuses(job).items():
            assert status["status"] in ("ran", "skipped"), where
            if status["status"] == "skipped":
                assert status["reason"] and f"{status['analysis']} ({status['tag']}) skipped" in out


def test_the_interpretation_experiment_survives_fast_dev_run(cfg_train):
    """The case that used to end the sweep: a one-step glass-box model predicts one class."""
    cfg = cfg_train(
        "experiment=interpretation", "debug=fast_dev_run", "data.num_samples=64",
        "model.net.widths=[2,2,4]", "model.net.group_order=4", "model.net.reduced_dim=4",
        "callbacks.interpretation.num_reference=64", "callbacks.interpretation.baselines=[]",
    )  # fmt: skip
    metrics = pipeline.train(cfg)
    run = Path(cfg.paths.output_dir)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and (run / "metrics.json").is_file()
    status = json.loads((run / "interpretation" / "test" / "status.json").read_text())
    assert status["analysis"] == "interpretation" and status["tag"] == "test"
    if status["status"] == "skipped":
        assert status["reason"].startswith("EmptyClassError: all reference images are predicted")
    else:
        assert metrics["interpretation/num_interpretations"] >= 2
    assert sorted(p.name for p in (run / "interpretation").iterdir()) == ["test"]
