"""EquivarianceCallback in a tiny Lightning run: files written, numbers logged."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn

from glassbox.callbacks.equivariance import EquivarianceCallback
from helpers import RecordingLogger, TensorDataModule, TinyModule, tiny_trainer


class C4Classifier(nn.Module):
    """Exactly C4-equivariant e2cnn block → group pooling → global pool → linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        gs = gspaces.Rot2dOnR2(4)
        self.in_type = enn.FieldType(gs, [gs.trivial_repr])
        fields = enn.FieldType(gs, 4 * [gs.regular_repr])
        self.block = enn.SequentialModule(
            enn.R2Conv(self.in_type, fields, 3, padding=1),
            enn.InnerBatchNorm(fields),
            enn.ReLU(fields),
            enn.PointwiseMaxPool(fields, 2),
        )
        self.group_pool = enn.GroupPooling(fields)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(
            self.pool(self.group_pool(self.block(enn.GeometricTensor(x, self.in_type))).tensor)
        )


def tiny_data() -> TensorDataModule:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (96,), generator=g)
    x = 0.3 * torch.randn(96, 1, 12, 12, generator=g)
    x[y == 1, :, 4:8, 4:8] += 2.0  # class 1: a bright centre square (rotation invariant)
    return TensorDataModule({"train": (x[:64], y[:64]), "val": (x[64:], y[64:])}, num_classes=2)


def test_callback_logs_and_writes_the_report(tmp_path):
    cb = EquivarianceCallback(
        output_dir=tmp_path, every_n_epochs=1, at_fit_end=True, num_images=24, group="C4"
    )
    logger = RecordingLogger()
    trainer = tiny_trainer(logger, [cb], max_epochs=2, limit_train_batches=2)
    trainer.fit(TinyModule(C4Classifier(), name="c4tiny"), datamodule=tiny_data())

    for tag in ("epoch000", "epoch001", "fit_end"):
        out = tmp_path / "equivariance" / tag
        for name in (
            "equivariance.csv",
            "equivariance.json",
            "equivariance_summary.csv",
            "equivariance.png",
        ):
            assert (out / name).stat().st_size > 0, (tag, name)
    out = tmp_path / "equivariance" / "fit_end"
    records = json.loads((out / "equivariance.json").read_text())
    assert {r["model"] for r in records} == {"c4tiny"}
    assert {r["layer"] for r in records} == {"block", "group_pool", "pool", "output"}
    summary = pd.read_csv(out / "equivariance_summary.csv")
    assert list(summary["layer"]) == ["block", "group_pool", "pool", "output"]

    scalars = {k: v for m in logger.history for k, v in m.items() if k.startswith("equivariance/")}
    assert all(isinstance(v, float) for v in scalars.values())
    # the trained net stays exactly equivariant: known action ≈ 0, invariant output unchanged
    assert scalars["equivariance/block/equivariance"] <= 1e-5
    assert scalars["equivariance/group_pool/spatial"] <= 1e-5
    assert scalars["equivariance/output/invariance"] <= 1e-5
    assert scalars["equivariance/output/consistency"] == 1.0
    # …while its regular fields do move under rotation (a channel permutation)
    assert scalars["equivariance/block/spatial"] > 0.1
    assert scalars["equivariance/block/best_fit"] <= 1e-3
    # 3 runs (2 epochs + fit end), each logging every (layer, measure) scalar
    assert sum(1 for m in logger.history if "equivariance/block/spatial" in m) == 3

    columns, rows = logger.tables["equivariance/table"]
    assert columns[:4] == ["model", "depth", "layer", "module"] and len(rows) == 4
    images, caption = logger.images["equivariance/plot"]
    assert images[0].endswith("equivariance.png") and caption == ["c4tiny fit_end"]


def test_callback_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="unknown group"):
        EquivarianceCallback(output_dir=tmp_path, group="hexagon")
    with pytest.raises(ValueError, match=r"unknown equivariance measure\(s\) \['curl'\]"):
        EquivarianceCallback(output_dir=tmp_path, measures=["curl"])
    with pytest.raises(ValueError, match="exact must be one of"):
        EquivarianceCallback(output_dir=tmp_path, exact="sometimes")


def test_config_instantiates_the_callback(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(
        Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "equivariance.yaml"
    )
    node = cfg.equivariance
    node.output_dir = str(tmp_path)
    cb = instantiate(node)
    assert (
        isinstance(cb, EquivarianceCallback)
        and cb.group.name == "C4"
        and cb.every_n_epochs == 1
        and cb.at_fit_end
    )
