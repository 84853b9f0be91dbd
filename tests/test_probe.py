"""The probe: one naming scheme, one capture, one eval-mode switch for every analysis."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glassbox.analysis import collect_features
from glassbox.equivariance import measure_layerwise
from glassbox.interpret import split_model
from glassbox.probe import (
    OUTPUT,
    LayerCapture,
    LayerOutputError,
    LayerSelectionError,
    as_tensor,
    eval_mode,
    get_layer,
    layer_names,
    resolve_layer_names,
)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(3 * 8 * 8, 4),
    )


def test_names_are_named_modules_plus_output_and_unknown_ones_list_them():
    model = net()
    assert layer_names(model) == ["0", "1", "2", "3", "4", OUTPUT]
    assert resolve_layer_names(model, ["2", "0", "2", OUTPUT]) == ["2", "0", OUTPUT]
    assert get_layer(model, "4") is model[4]
    with pytest.raises(
        LayerSelectionError, match=r"unknown layer name\(s\) \['9'\].*0, 1, 2, 3, 4, output"
    ):
        resolve_layer_names(model, ["9"])
    with pytest.raises(LayerSelectionError, match="valid names are: 0, 1, 2, 3, 4$"):
        get_layer(model, OUTPUT)


def test_every_analysis_reads_the_same_layer_by_the_same_name():
    model, x = net().eval(), torch.randn(4, 1, 8, 8)
    feats = collect_features(model, x, ["0"], include_input=False)["0"]
    records = measure_layerwise(model, x, "C4", layers=["0"], measures=["invariance"])
    assert {r.layer for r in records} == {"0"} and records[0].shape == tuple(feats.shape[1:])
    assert split_model(model, "2").psi_module is get_layer(model, "2")
    with torch.no_grad():
        assert torch.equal(feats, model[0](x))


class CountsTrain(nn.Module):
    """Records every train(mode) call (as e2cnn's R2Conv, which rebuilds caches there)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)


def test_eval_mode_restores_each_modules_own_flag_through_train():
    model = nn.Sequential(CountsTrain(), nn.Dropout()).train()
    model[1].eval()  # a caller froze one sub-module
    model[0].calls.clear()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training
    assert model[0].calls == [False, True]  # switched and restored by train(), not a flag write
    with eval_mode(model, enabled=False):
        assert model.training


def test_capture_stores_clones_and_rejects_ambiguous_layers():
    model, x = net().eval(), torch.randn(2, 1, 8, 8)
    with LayerCapture(model, ["0", "2"], clone=True) as cap, torch.no_grad():
        model(x)
        assert cap.ordered() == ["0", "2"]
        # the clone of conv "0" keeps its negative values although ReLU(inplace) follows
        assert cap.outputs["0"].min() < 0 <= cap.outputs["2"].min()
    assert not model[0]._forward_hooks  # removed on exit
    shared = nn.Sequential(nn.ReLU(), nn.Identity())
    shared.add_module("again", shared[0])  # the same module twice in one forward
    with LayerCapture(shared, ["0"]), pytest.raises(LayerSelectionError, match="more than once"):
        shared(x)

    class Pair(nn.Module):
        def forward(self, t):
            return t, t

    pair = nn.Sequential(Pair())
    with LayerCapture(pair, ["0"]), pytest.raises(LayerOutputError, match="returns tuple"):
        pair(x)
    assert torch.equal(as_tensor((x, x)), x)
    with pytest.raises(LayerOutputError, match="not a tensor"):
        as_tensor({"x": x})
