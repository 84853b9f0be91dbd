"""DDP on CPU (gloo, 2 processes): same test accuracy as 1 process, metrics and analysis gathered
over the ranks, one run directory per job, written by rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_script

# A binary task (digits 0 vs 1, 360 images) that a small C4 glass-box model learns in a few
# epochs, so that 1 and 2 processes both reach a stable accuracy.
RUN = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "data.classes=[0,1]",
    "data.batch_size=16",
    "model.net.widths=[4,4,8]",
    "model.net.group_order=4",
    "model.net.reduced_dim=8",
    "model.net.classifier_hidden=[8]",
    "trainer.max_epochs=3",
    "model.optimizer.lr=0.01",
    "logger=csv",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]
# The equivariance callback on the tested checkpoint: an analysis result to compare across runs.
EQUIVARIANCE = [
    "callbacks.equivariance.every_n_epochs=0",
    "callbacks.equivariance.at_fit_end=false",
    "callbacks.equivariance.at_test_end=true",
    "callbacks.equivariance.num_images=16",
    "callbacks.equivariance.measures=[invariance,equivariance]",
]
# What a job directory holds when one process writes it (rank 0 of a DDP job, or 1 process).
JOB_FILES = {
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "train.log",
    "metrics.json",
    "csv/metrics.csv",
    "csv/hparams.yaml",
    "checkpoints/last.ckpt",
    "history.csv",
    "report.html",
}


def files(job: Path) -> set[str]:
    return {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file()}


def check_single_writer(job: Path, extra: tuple[str, ...] = ()) -> None:
    """``job`` holds what one writer leaves (plus files under the ``extra`` prefixes)."""
    found = files(job)
    assert found >= JOB_FILES, JOB_FILES - found
    unexpected = {
        f
        for f in found - JOB_FILES
        if not f.startswith(("checkpoints/epoch_", "report_files/", *extra))
    }
    assert not unexpected, f"unexpected files {unexpected}"
    assert len([f for f in found if f.startswith("checkpoints/epoch_")]) == 1  # save_top_k=1
    # rank 1 logs to its console only: the job log holds one copy of each rank-agnostic line
    assert (job / "train.log").read_text().count("PCA reduction fitted") == 1


def equivariance_values(run_dir: Path) -> dict[tuple, float]:
    records = json.loads((run_dir / "equivariance" / "test" / "equivariance.json").read_text())
    return {(r["layer"], r["element"], r["measure"]): float(r["value"]) for r in records}


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory) -> Path:
    """``train.py -m trainer.devices=1,2``: the same job with 1 and with 2 DDP processes."""
    log_dir = tmp_path_factory.mktemp("logs")
    proc = run_script(
        "train.py",
        "-m",
        "trainer.devices=1,2",
        *RUN,
        "callbacks=[default,equivariance]",
        *EQUIVARIANCE,
        f"paths.log_dir={log_dir}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (log_dir / "train" / "runs").exists()  # no stray single-run directory
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def test_ddp_two_processes_match_one_in_a_multirun(ddp_sweep):
    """Lightning's DDP child must re-run only its own job (not the sweep), in that job's
    directory; the next job of the multirun gets a fresh process group."""
    assert sorted(p.name for p in ddp_sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    results = {}
    for job in (ddp_sweep / "0", ddp_sweep / "1"):
        check_single_writer(job, extra=("equivariance/test/",))
        results[job.name] = json.loads((job / "metrics.json").read_text())["metrics"]
    one, two = results["0"], results["1"]
    # The test metrics are gathered over both ranks: the confusion matrix counts every test
    # image once (72 images, split evenly, so DistributedSampler pads nothing).
    assert sum(map(sum, one["test/confusion_matrix"])) == 72
    assert sum(map(sum, two["test/confusion_matrix"])) == 72
    assert one["test/acc"] >= 0.9
    assert two["test/acc"] == pytest.approx(one["test/acc"], abs=0.1)


def test_ddp_evaluation_equals_one_process_exactly(ddp_sweep, tmp_path):
    """The same checkpoint tested by 2 DDP processes (evaluate.py, a single run) gives exactly
    the metrics and the equivariance report of the 1-process test at the end of training."""
    job = ddp_sweep / "0"
    (ckpt,) = (job / "checkpoints").glob("epoch_*.ckpt")  # the best one, tested by train.py
    proc = run_script(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "rotated_test.random=false",
        "callbacks.separability=null",
        "callbacks.rich_progress_bar=null",
        *EQUIVARIANCE,
        f"paths.log_dir={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank: 1]" in proc.stdout + proc.stderr  # the second rank ran
    assert [p.name for p in (tmp_path / "evaluate").iterdir()] == ["runs"]
    (run,) = (tmp_path / "evaluate" / "runs").iterdir()  # one directory for both ranks
    assert {
        ".hydra/config.yaml",
        "metrics.json",
        "evaluate.log",
        "equivariance/test/equivariance.json",
    } <= files(run)
    assert (run / "evaluate.log").read_text().count("metrics written to") == 1

    trained = json.loads((job / "metrics.json").read_text())["metrics"]
    evaluated = json.loads((run / "metrics.json").read_text())["metrics"]
    assert evaluated["test/confusion_matrix"] == trained["test/confusion_matrix"]
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-7)
    assert evaluated["test/f1"] == pytest.approx(trained["test/f1"], abs=1e-7)
    # rank 0 analyses the fixed analysis batch with the synchronised weights: same report
    one, two = equivariance_values(job), equivariance_values(run)
    assert one.keys() == two.keys() and len(one) > 0
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_ddp_single_train_run_writes_one_directory(tmp_path):
    proc = run_script(
        "train.py",
        "trainer.devices=2",
        *RUN,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"paths.log_dir={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["runs"]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    check_single_writer(run)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert sum(map(sum, metrics["test/confusion_matrix"])) == 72


@pytest.mark.slow
def test_ddp_inside_a_submitit_local_job(tmp_path):
    """In a submitit job __main__ is submitit's runner: the DDP child is started from the
    entry script next to the config directory, in the job's directory."""
    proc = run_script(
        "train.py",
        "-m",
        "hydra/launcher=local",
        "trainer.devices=2",
        "seed=1",
        *RUN,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"paths.log_dir={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    check_single_writer(sweep / "0")
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "[rank: 1]" in logs  # the second rank ran, and joined this job


@pytest.mark.slow
def test_pca_refit_under_plain_ddp(tmp_path):
    """``strategy=ddp`` (no unused-parameter search, what ``trainer=gpu trainer.devices=4``
    gives): after the refit the frozen representation runs in eval mode and its parameters take
    no part in the loss; they get zero gradients instead of failing DDP's check."""
    proc = run_script(
        "train.py", *RUN, "trainer.devices=2", "trainer.strategy=ddp", "callbacks=default",
        "callbacks.equivariance=null", f"hydra.run.dir={tmp_path}",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    assert log.count("PCA reduction refitted at the start of epoch 2") == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["test/acc"] >= 0.9
