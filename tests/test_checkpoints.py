"""Checkpoint safety: atomic writes, refusal of pickled objects, e2cnn eval-mode buffers in both
directions, and the NaN/Inf guard keeping the last good checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassbox import pipeline
from glassbox.errors import CheckpointError
from glassbox.models.module import CHECKPOINT_KEY
from glassbox.runtime.checkpoints import (
    AtomicCheckpointIO,
    atomic_torch_save,
    load_checkpoint,
    load_model,
    load_weights,
)

TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- atomic writes
def test_atomic_save_interrupted_mid_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.arange(4.0)}}, path)
    before = path.read_bytes()

    def dies_halfway(obj, fh):  # writes part of the bytes, then the process "dies"
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"state_dict": {"w": torch.zeros(4)}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.arange(4.0))
    assert _leftovers(tmp_path) == []


def test_trainers_write_checkpoints_atomically(cfg_train, tmp_path):
    for trainer_cfg in ("trainer=cpu", "trainer=slurm"):  # slurm outside SLURM: plain local run
        trainer = pipeline.build_trainer(cfg_train(trainer_cfg))
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), trainer_cfg
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, tmp_path / "sub" / "x.ckpt")
    assert torch.equal(
        io.load_checkpoint(tmp_path / "sub" / "x.ckpt")["state_dict"]["w"], torch.ones(3)
    )
    assert _leftovers(tmp_path / "sub") == []


# --------------------------------------------------------------------------- safe loading
class _Payload:
    """Unpickling this runs ``exec``: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "shared.ckpt"
    torch.save(
        {
            "state_dict": {"w": torch.ones(2)},
            CHECKPOINT_KEY: {"config": {"x": 1}},
            "extra": _Payload(marker),
        },
        path,
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "refused" in msg and "exec" in msg  # the cause names the offending global
    assert "Only load checkpoints written by glassbox" in msg  # and the fix
    assert not marker.exists()  # the payload never ran


def _tiny_module(cfg_train):
    cfg = cfg_train(*TINY)
    dm = pipeline.build_datamodule(cfg)
    return cfg, dm, pipeline.build_module(cfg, dm)


def _save(module, path: Path) -> Path:
    torch.save(
        {
            "state_dict": module.state_dict(),
            CHECKPOINT_KEY: {"config": module.run_config, "name": "glassbox"},
        },
        path,
    )
    return path


def test_e2cnn_eval_mode_buffers_load_in_both_directions(cfg_train, tmp_path):
    from e2cnn import nn as enn

    cfg, dm, source = _tiny_module(cfg_train)
    x, _ = dm.analysis_batch("val", n=8)
    with torch.no_grad():  # move away from the init so that stale buffers would show
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    source.eval()
    convs = [m for m in source.modules() if isinstance(m, enn.R2Conv)]
    assert convs and all(hasattr(c, "filter") for c in convs)  # e2cnn's eval-only buffers exist ...
    state = source.state_dict()
    assert not [
        k for k in state if k.endswith((".filter", ".expanded_bias"))
    ]  # ... but are not saved
    with torch.no_grad():
        want = source(x)

    # saved in eval mode → loaded into a model in train mode
    eval_ckpt = _save(source, tmp_path / "eval_saved.ckpt")
    _, _, into_train = _tiny_module(cfg_train)
    assert into_train.training
    load_weights(into_train, load_checkpoint(eval_ckpt), eval_ckpt)
    with torch.no_grad():
        assert torch.equal(into_train.eval()(x), want)

    # saved in train mode → loaded into a model already in eval mode (its cached filters are stale
    # until the load rebuilds them from the loaded weights)
    source.train()
    train_ckpt = _save(source, tmp_path / "train_saved.ckpt")
    _, _, into_eval = _tiny_module(cfg_train)
    into_eval.eval()
    with torch.no_grad():
        assert not torch.allclose(into_eval(x), want)
    load_weights(into_eval, load_checkpoint(train_ckpt), train_ckpt)
    with torch.no_grad():
        assert torch.equal(into_eval(x), want)

    # and through the notebook helper
    assert torch.equal(load_model(train_ckpt)(x).detach(), want)


# --------------------------------------------------------------------------- NaN / Inf guard
def test_nan_loss_stops_with_clear_message_and_last_good_checkpoint_evaluates(cfg_train, cfg_eval):
    cfg = cfg_train(
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=helpers.PoisonWeightsAtEpoch",
        "+callbacks.poison.epoch=1",
        *TINY,
    )
    with pytest.raises(SystemExit) as stop:
        pipeline.run(cfg, pipeline.train)
    msg = str(stop.value.code)
    assert msg.startswith("error: training loss became nan at epoch 1")
    assert "last good checkpoint (last.ckpt) is kept" in msg and "Lower model.optimizer.lr" in msg
    out = Path(cfg.paths.output_dir)
    assert not (out / "metrics.json").exists()  # no results claimed for a failed run
    last = out / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 2  # the end of the good epoch
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert _leftovers(out / "checkpoints") == []
    metrics = pipeline.evaluate(cfg_eval(f"ckpt_path={last}", "rotated_test.random=false"))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert (
        json.loads((out / "eval" / "metrics.json").read_text())["metrics"]["test/acc"]
        == metrics["test/acc"]
    )
