"""The results aggregator on a real 2×2 multirun (model × seed), which also logs to W&B offline:
one W&B run per job, grouped by the sweep, with the run config."""

from __future__ import annotations

import json
import statistics
import struct
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST, run_script
from glassbox import report

ANGLES = [0, 90, 180]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``train.py -m model=glassbox,alexnet seed=1,2``: tiny runs, tested at 0/90/180°."""
    log_dir = tmp_path_factory.mktemp("logs")
    proc = run_script(
        "train.py",
        "-m",
        "model=glassbox,alexnet",
        "seed=1,2",
        *(o for o in FAST if not o.startswith(("logger=", "callbacks.equivariance.num_images"))),
        "logger=[csv,wandb]",
        f"rotated_test.angles=[{','.join(map(str, ANGLES))}]",
        "+model.pca_fit_samples=64",
        # FAST runs the equivariance report on the tested checkpoint only; cheaper still
        "callbacks.equivariance.num_images=8",
        "callbacks.equivariance.measures=[invariance,consistency]",
        f"paths.log_dir={log_dir}",
        env={"WANDB_MODE": "offline"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep_dir


def job_metrics(sweep: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for n in range(4):
        record = json.loads((sweep / str(n) / "metrics.json").read_text())
        cfg = (sweep / str(n) / ".hydra" / "overrides.yaml").read_text()
        seed = int(
            next(line for line in cfg.splitlines() if line.startswith("- seed=")).split("=")[1]
        )
        out[(record["model"], seed)] = record["metrics"]
    return out


def test_report_table_is_mean_and_std_over_seeds(sweep, tmp_path):
    paths = report.write_report([sweep], tmp_path / "out")
    jobs = pd.read_csv(paths["results"])
    assert len(jobs) == 4 and set(jobs["status"]) == {"ok"}
    assert sorted(zip(jobs["+model"], jobs["seed"])) == sorted(
        (m, s) for m in ("glassbox", "alexnet") for s in (1, 2)
    )
    summary = pd.read_csv(paths["summary"]).set_index("group")
    assert list(summary.index) == ["glassbox", "alexnet"]  # grouped by model, not by seed
    truth = job_metrics(sweep)
    for model in ("glassbox", "alexnet"):
        assert summary.loc[model, "n"] == 2
        for metric in ("test/acc", "val/acc", *[f"test_rot{a}/acc" for a in ANGLES]):
            values = [truth[(model, s)][metric] for s in (1, 2)]
            assert summary.loc[model, f"{metric}/mean"] == pytest.approx(statistics.mean(values))
            assert summary.loc[model, f"{metric}/std"] == pytest.approx(statistics.stdev(values))
        mean_over_angles = statistics.mean(
            statistics.mean(truth[(model, s)][f"test_rot{a}/acc"] for a in ANGLES) for s in (1, 2)
        )
        assert summary.loc[model, "test_rot_mean/acc/mean"] == pytest.approx(mean_over_angles)

    md = paths["markdown"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| glassbox | 2 |"))
    mean, std = summary.loc["glassbox", "test/acc/mean"], summary.loc["glassbox", "test/acc/std"]
    assert f"{mean:.4f} ± {std:.4f}" in row
    assert "| 90° |" in md and "![accuracy against angle](accuracy_vs_angle.png)" in md


def test_analysis_scalars_reach_metrics_json_and_the_report(sweep, tmp_path):
    """The equivariance report of the tested checkpoint: run once per job (not again at the
    rotated test passes), its scalars in metrics.json, and tabulated per model by the report."""
    truth = job_metrics(sweep)
    for n in range(4):
        log = (sweep / str(n) / "train.log").read_text()
        assert log.count("equivariance (test):") == 1, n
        assert sorted(p.name for p in (sweep / str(n) / "equivariance").iterdir()) == ["test"]
    for model in ("glassbox", "alexnet"):
        for s in (1, 2):
            assert 0.0 <= truth[(model, s)]["equivariance/output/consistency"] <= 1.0
    # the glass-box output is exactly invariant under C4
    assert all(truth[("glassbox", s)]["equivariance/output/invariance"] < 1e-5 for s in (1, 2))

    paths = report.write_report([sweep], tmp_path)
    summary = pd.read_csv(paths["summary"]).set_index("group")
    tables = report.analysis_tables(summary.reset_index())
    assert list(tables) == ["equivariance"]
    table = tables["equivariance"].set_index("metric")
    assert list(table.columns) == ["glassbox", "alexnet"]
    mean = statistics.mean(truth[("alexnet", s)]["equivariance/output/consistency"] for s in (1, 2))
    assert table.loc["output/consistency", "alexnet"].startswith(f"{mean:.4g} ± ")
    # layers of one model only are blank in the other's column
    assert table.loc["features.0/invariance", "glassbox"] == ""
    assert table.loc["features.0/invariance", "alexnet"] != ""
    rows = list(table.index)  # in layer-depth order (metrics.json keeps the logged order)
    assert rows.index("representation.block1/invariance") < rows.index("output/invariance")
    assert rows.index("features.3/invariance") < rows.index("features.10/invariance")
    assert "## equivariance (final analysis of each job)" in paths["markdown"].read_text()


def test_report_plot_and_angle_curves(sweep, tmp_path):
    assert report.main([str(sweep), "--out", str(tmp_path)]) == 0
    png = tmp_path / "accuracy_vs_angle.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert width > 400 and height > 300
    curves = report.angle_curves(pd.read_csv(tmp_path / "summary.csv"))
    assert sorted(set(curves["group"])) == ["alexnet", "glassbox"]
    assert sorted(set(curves["angle"])) == [float(a) for a in ANGLES]
    truth = job_metrics(sweep)
    row = curves[(curves["group"] == "alexnet") & (curves["angle"] == 90.0)].iloc[0]
    assert row["mean"] == pytest.approx(
        statistics.mean(truth[("alexnet", s)]["test_rot90/acc"] for s in (1, 2))
    )


# --------------------------------------------------------------------------- W&B
def _wandb_records(path: Path):
    """Records of an offline ``.wandb`` file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):  # FULL, FIRST
            pending = chunk
        else:  # MIDDLE, LAST
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_one_wandb_run_per_job_grouped_by_sweep_with_config(sweep):
    run_ids = set()
    truth = job_metrics(sweep)
    for n in range(4):
        runs = list((sweep / str(n) / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"job {n}: {runs}"  # wandb.finish() between jobs
        config, run = {}, None
        for record in _wandb_records(runs[0]):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({i.key: json.loads(i.value_json) for i in run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        assert run is not None
        run_ids.add(run.run_id)
        assert run.run_group == sweep.name  # gb.wandb_group: the sweep directory's name
        assert run.job_type == "train"
        assert (config["model"]["name"], config["seed"]) in truth
        assert config["rotated_test"]["angles"] == ANGLES
    assert len(run_ids) == 4


# --------------------------------------------------------------------------- bad input
def test_report_errors_and_failed_jobs(tmp_path):
    with pytest.raises(report.ReportError, match="not a directory"):
        report.collect([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ReportError, match="no metrics.json found"):
        report.collect([tmp_path / "empty"])
    assert report.main([str(tmp_path / "empty")]) == 2

    # one finished job per seed and a job that crashed before writing metrics.json
    sweep = tmp_path / "sweep"
    for n, (seed, acc) in enumerate([(1, 0.5), (2, 0.7), (3, None)]):
        job = sweep / str(n)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- model=glassbox\n")
        if acc is not None:
            metrics = {"test/acc": acc, "test_rot90/acc": acc / 2, "test/confusion_matrix": [[1]]}
            (job / "metrics.json").write_text(json.dumps({"model": "glassbox", "metrics": metrics}))
    df = report.collect([sweep])
    assert list(df["status"]) == ["ok", "ok", "no metrics.json (failed or running)"]
    assert "test/confusion_matrix" not in df.columns
    summary = report.summarise(df).set_index("group")
    assert summary.loc["glassbox", "n"] == 2
    assert summary.loc["glassbox", "test/acc/mean"] == pytest.approx(0.6)
    assert summary.loc["glassbox", "test/acc/std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert "2 of 3 jobs finished" in report.write_report([sweep])["markdown"].read_text()
    # a group of one job (an Optuna trial): its mean, no "± 0"
    single = report.write_report([sweep / "0"], tmp_path / "single")["markdown"].read_text()
    assert "| glassbox | 1 | 0.5000 |" in single and "| 90° | 0.2500 |" in single
    assert "0.5000 ±" not in single and "0.2500 ±" not in single
