"""Launchers and sweepers: submitit's local executor and Optuna for real, the SLURM launcher
through submitit's own API (no cluster), and one clear error when a plugin is not installed."""

from __future__ import annotations

import json
import math
import os
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import CONF, FAST, ROOT, run_script

# Tiny glass-box runs: one short epoch each, without the equivariance report (on by default).
TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
    *(o for o in FAST if not o.startswith("callbacks.equivariance.")),
    "++callbacks.equivariance=null",
]


def hydra_cfg(overrides: list[str]):
    """``train.py``'s composed config including the ``hydra`` node (launcher, sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from glassbox.utils import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def job_dirs(log_dir: Path) -> list[Path]:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


# --------------------------------------------------------------------------- SLURM, no cluster
class _FakeJob:
    def results(self):
        return ["done"]


def test_slurm_launcher_submission_parameters(tmp_path, monkeypatch):
    """The composed SLURM launcher, run through the plugin's launch() up to submitit's
    map_array, yields the expected executor and sbatch script (nothing is submitted)."""
    import submitit
    from hydra.utils import instantiate

    cfg = hydra_cfg(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    captured = {}

    def fake_map_array(self, fn, *args):
        captured["executor"], captured["fn"], captured["args"] = self, fn, args
        return [_FakeJob() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    # submitit's SLURM executor looks for `srun` on the PATH; a stub stands in for the cluster
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0) == ["done", "done"]

    executor = captured["executor"]._executor
    assert type(executor).__name__ == "SlurmExecutor"
    assert executor.max_num_timeout == 3  # requeued up to 3 times on timeout
    assert Path(executor.folder).parent == tmp_path / "sweep" / ".submitit"
    overrides, _, job_nums = captured["args"][:3]
    assert [list(o) for o in overrides] == [["seed=1"], ["seed=2"]] and list(job_nums) == [0, 1]
    sbatch = executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",  # one DDP rank per task = trainer.devices
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
    ):
        assert line in sbatch.splitlines(), f"{line!r} missing from:\n{sbatch}"
    assert "srun" in sbatch


def test_slurm_launcher_defaults_follow_the_trainer():
    cfg = hydra_cfg(["hydra/launcher=slurm"])  # trainer=default: one device, one node
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1)
    assert launcher.additional_parameters.requeue is True


# --------------------------------------------------------------------------- Optuna on submitit local
def test_optuna_study_on_the_local_submitit_launcher(tmp_path):
    """Two TPE trials asked at once and run as a 2-job multirun by submitit's local executor
    (one process per job), with the versions pip resolves today. The list-valued choice and
    the log-uniform lr reach the jobs, and the best value is the best trial's val/acc."""
    proc = run_script(
        "train.py",
        "-m",
        "hparams_search=glassbox_optuna",
        "hydra/launcher=local",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "model.net.widths=choice([2,2,4],[2,4,4])",  # merged into the config's params
        *[o for o in TINY if not o.startswith("model.net.widths")],
        f"paths.log_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    jobs = job_dirs(tmp_path)
    assert [p.name for p in jobs] == ["0", "1"]
    # each job ran in its own submitit process and returned its result to the sweeper
    assert len(list((jobs[0].parent / ".submitit").glob("*/*_result.pkl"))) == 2
    values = []
    for job in jobs:
        overrides = dict(
            o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        )
        assert overrides["model.net.widths"] in ("[2,2,4]", "[2,4,4]")
        assert 3e-4 <= float(overrides["model.optimizer.lr"]) <= 1e-2
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["model"]["net"]["widths"] == json.loads(overrides["model.net.widths"])
        assert config["model"]["optimizer"]["lr"] == pytest.approx(
            float(overrides["model.optimizer.lr"])
        )
        values.append(json.loads((job / "metrics.json").read_text())["metrics"]["val/acc"])
    result = yaml.safe_load((jobs[0].parent / "optimization_results.yaml").read_text())
    assert math.isclose(result["best_value"], max(values), abs_tol=1e-6)
    assert set(result["best_params"]) == {"model.net.widths", "model.optimizer.lr"}


def test_optuna_config_composes_with_the_plugin():
    cfg = hydra_cfg(["hparams_search=glassbox_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc"
    assert set(sweeper.params) == {
        "model.net.group_order",
        "model.net.widths",
        "model.optimizer.lr",
    }
    assert cfg.model.name == "glassbox"


# --------------------------------------------------------------------------- missing plugins
@pytest.mark.parametrize(
    "overrides, module, extra",
    [
        (["hparams_search=glassbox_optuna"], "hydra_plugins.hydra_optuna_sweeper", "optuna"),
        (["hydra/launcher=local"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
        (["hydra/launcher=slurm"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
    ],
)
def test_missing_plugin_names_the_extra(overrides, module, extra, monkeypatch):
    import importlib

    from glassbox.runtime.launchers import MissingPluginError

    real = importlib.import_module

    def no_plugin(name, *args, **kwargs):
        if name.startswith(module):
            raise ModuleNotFoundError(f"No module named {module!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_plugin)
    cfg = hydra_cfg(overrides)  # composing works without the plugin
    node = cfg.hydra.sweeper if "hparams_search" in overrides[0] else cfg.hydra.launcher
    with pytest.raises(MissingPluginError, match=rf"pip install -e '\.\[{extra}\]'"):
        node._target_  # noqa: B018  (what Hydra reads when it instantiates the plugin)


def _python_without(tmp_path: Path, *hidden: str) -> list[str]:
    """A Python command that sees this environment's packages except the Hydra plugin
    packages ``hidden`` (as if they were not installed)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    site_dir = tmp_path / "site"
    (site_dir / "hydra_plugins").mkdir(parents=True)
    for entry in purelib.iterdir():
        if entry.name != "hydra_plugins":
            (site_dir / entry.name).symlink_to(entry)
    for entry in (purelib / "hydra_plugins").iterdir():
        if entry.name not in hidden:
            (site_dir / "hydra_plugins" / entry.name).symlink_to(entry)
    boot = (
        f"import runpy, site, sys; site.addsitedir({str(site_dir)!r}); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return [sys.executable, "-S", "-c", boot]


def test_slurm_launcher_without_plugin_fails_with_one_clear_message(tmp_path):
    import subprocess

    python = _python_without(tmp_path, "hydra_submitit_launcher")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util as u; print(u.find_spec('hydra_plugins.hydra_submitit_launcher'))"
    )
    assert (
        subprocess.run([*python, str(probe)], capture_output=True, text=True).stdout.strip()
        == "None"
    )

    proc = subprocess.run(
        [
            *python,
            "train.py",
            "-m",
            "hydra/launcher=slurm",
            "seed=1,2",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode != 0
    assert "pip install -e '.[slurm]'" in proc.stderr
    assert "full_key: hydra.launcher._target_" in proc.stderr
    assert "Traceback" not in proc.stderr  # one message, not a stack trace
    assert not (tmp_path / "logs" / "train" / "multiruns").exists() or not any(
        (tmp_path / "logs" / "train" / "multiruns").rglob("metrics.json")
    )
