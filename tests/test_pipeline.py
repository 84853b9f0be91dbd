"""End to end: fast_dev_run per model × dataset, train → checkpoint → evaluate parity, multirun,
and the pipeline's bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_script
from glassbox import pipeline
from glassbox.errors import CheckpointError, ConfigError

TINY_GLASSBOX = [
    "model.net.widths=[2,3,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=3",
    "model.net.classifier_hidden=[8]",
]
TINY_ALEXNET = ["model.net.width_mult=0.125", "model.net.hidden=32"]
TINY = {"glassbox": TINY_GLASSBOX, "alexnet": TINY_ALEXNET}


@pytest.mark.parametrize("model", ["glassbox", "alexnet"])
@pytest.mark.parametrize("data", ["digits", "shapes"])
def test_fast_dev_run(cfg_train, model, data):
    cfg = cfg_train(
        f"model={model}", f"data={data}", "debug=fast_dev_run", "data.num_samples=64", *TINY[model]
    )
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert Path(cfg.paths.output_dir, "metrics.json").is_file()


def test_train_checkpoint_evaluate_same_numbers(cfg_train, cfg_eval, tmp_path):
    cfg = cfg_train("trainer.max_epochs=2", "rotated_test.angles=[90]", *TINY_GLASSBOX)
    train_metrics = pipeline.train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"] == "glassbox" and saved["metrics"]["test/acc"] == pytest.approx(
        train_metrics["test/acc"]
    )
    assert len(saved["metrics"]["test/confusion_matrix"]) == 10
    # the glass-box model is exactly invariant to 90°: same test accuracy on the rotated split
    assert train_metrics["test_rot90/acc"] == pytest.approx(train_metrics["test/acc"], abs=1e-6)
    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in ckpts} >= {"last.ckpt"} and len(ckpts) >= 2
    best = saved["best_ckpt"]
    ev = cfg_eval(f"ckpt_path={best}", "rotated_test.random=false", "rotated_test.angles=[90]")
    eval_metrics = pipeline.evaluate(ev)
    for key in ("test/acc", "test/f1", "test/loss", "test_rot90/acc"):
        assert eval_metrics[key] == pytest.approx(train_metrics[key], abs=1e-6), key
    assert json.loads(Path(ev.paths.output_dir, "metrics.json").read_text())["metrics"][
        "test/acc"
    ] == pytest.approx(train_metrics["test/acc"])


def test_evaluate_rejects_another_models_checkpoint(cfg_train, cfg_eval):
    cfg = cfg_train("trainer.max_epochs=1", "test=false", *TINY_GLASSBOX)
    pipeline.train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    with pytest.raises(ConfigError, match="holds a 'glassbox' model but model=alexnet"):
        pipeline.evaluate(cfg_eval(f"ckpt_path={last}", "model_name=alexnet"))
    # weights that do not fit the stored model config
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "classifier" not in k}
    other = last.with_name("other.ckpt")
    torch.save(ckpt, other)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        pipeline.evaluate(cfg_eval(f"ckpt_path={other}"))
    assert torch.load(last, weights_only=True)["state_dict"]  # the original checkpoint is intact


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda tmp: None, "no checkpoint given"),
        (lambda tmp: tmp / "missing.ckpt", "does not exist"),
        (
            lambda tmp: (
                (tmp / "corrupt.ckpt").write_bytes(b"not a checkpoint") and tmp / "corrupt.ckpt"
            ),
            "corrupt",
        ),
        (
            lambda tmp: torch.save({"state_dict": {}}, tmp / "plain.ckpt") or tmp / "plain.ckpt",
            "not written by glassbox",
        ),
    ],
)
def test_evaluate_bad_checkpoints(cfg_eval, tmp_path, setup, match):
    path = setup(tmp_path)
    with pytest.raises(CheckpointError, match=match):
        pipeline.evaluate(cfg_eval(f"ckpt_path={path}" if path else "ckpt_path=null"))


def test_channel_mismatch_in_config(cfg_train):
    with pytest.raises(ConfigError, match=r"model.net.in_channels=3 does not match the data \(1\)"):
        pipeline.train(cfg_train("model.net.in_channels=3", *TINY_GLASSBOX))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cfg_train):
    from glassbox.errors import NonFiniteLossError

    cfg = cfg_train(
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=helpers.PoisonWeightsAtEpoch",
        "+callbacks.poison.epoch=1",
        *TINY_GLASSBOX,
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        pipeline.train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 0 and all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_cli_multirun_two_models_and_unknown_names(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_script(
        "train.py",
        "-m",
        "model=glassbox,alexnet",
        "debug=fast_dev_run",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        "model.net.width_mult=0.125" if False else "data.batch_size=8",
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = sorted(sweep.glob("*/metrics.json"))
    assert len(metrics) == 2
    assert {json.loads(p.read_text())["model"] for p in metrics} == {"glassbox", "alexnet"}
    bad = run_script("train.py", "model=resnet", cwd=tmp_path, timeout=120)
    assert (
        bad.returncode != 0
        and "Could not find 'model/resnet'" in bad.stderr
        and "glassbox" in bad.stderr
    )
    bad = run_script("train.py", "data=imagenet", cwd=tmp_path, timeout=120)
    assert (
        bad.returncode != 0
        and "Could not find 'data/imagenet'" in bad.stderr
        and "digits" in bad.stderr
    )
    noarg = run_script("evaluate.py", cwd=tmp_path, timeout=120)
    assert noarg.returncode != 0 and "ckpt_path" in noarg.stderr
