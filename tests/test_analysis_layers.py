"""Per-layer feature collection: plain CNNs by hooks, glass-box nets by net.layers(x), any module by path."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from glassbox.analysis.layers import (
    INPUT,
    auto_layers,
    available_layers,
    collect_dataset_features,
    collect_features,
    dataset_inputs,
    default_layers,
    iter_batches,
    layer_dims,
    layer_groups,
)
from helpers import TinyGlassBox


def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
    )
    net.classifier = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6 * 4 * 4, 8),
        nn.ReLU(inplace=True),
        nn.Linear(8, 3),
    )
    net.forward = lambda x: net.classifier(net.features(x))
    return net


# ------------------------------------------------------------------ plain CNNs
def test_auto_layers_read_after_norm_and_activation():
    net = plain_cnn()
    assert auto_layers(net) == {
        "conv1": "features.1",  # ReLU after conv
        "conv2": "features.5",  # conv → BatchNorm → ReLU
        "fc1": "classifier.3",
        "logits": "classifier.4",
    }
    assert default_layers(net) == ["conv1", "conv2", "fc1", "logits"]


def test_collect_features_values_and_eval_mode():
    net = plain_cnn().train()
    x = torch.randn(5, 1, 8, 8)
    feats = collect_features(net, x)
    assert list(feats) == [INPUT, "conv1", "conv2", "fc1", "logits"]
    assert net.training  # restored
    net.eval()
    with torch.no_grad():
        conv1 = torch.relu(net.features[0](x))
        logits = net.forward(x)
    assert torch.equal(feats[INPUT], x)
    assert torch.allclose(feats["conv1"], conv1) and feats["conv1"].shape == (5, 4, 8, 8)
    assert torch.allclose(feats["logits"], logits)
    assert feats["fc1"].min() >= 0  # after its ReLU


def test_hooked_output_is_not_overwritten_by_a_following_inplace_relu():
    net = plain_cnn().eval()
    x = torch.randn(4, 1, 8, 8)
    feats = collect_features(net, x, {"conv1_pre": "features.0"}, include_input=False)
    with torch.no_grad():
        expected = net.features[0](x)
    assert (
        expected < 0
    ).any()  # the pre-activation has negatives that an in-place ReLU would erase
    assert torch.equal(feats["conv1_pre"], expected)


def test_pixels_are_read_before_a_model_modifies_its_input_in_place():
    net = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(16, 2))
    x = torch.randn(3, 1, 4, 4)
    expected = x.clone()
    assert torch.equal(collect_features(net, x)[INPUT], expected)


def test_bad_layer_names():
    net = plain_cnn()
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1, conv2, fc1, logits"):
        collect_features(net, torch.randn(2, 1, 8, 8), ["conv9"])
    with pytest.raises(TypeError, match="list of names"):
        collect_features(net, torch.randn(2, 1, 8, 8), "conv1")
    with pytest.raises(ValueError, match="include_input"):
        collect_features(net, torch.randn(2, 1, 8, 8), ["pixels"])
    with pytest.raises(ValueError, match="no Conv/Linear layers"):
        default_layers(nn.Sequential(nn.ReLU()))


# ------------------------------------------------------------------ glass-box nets
def test_glassbox_layers_from_blocks_and_fields():
    net = TinyGlassBox(pool=False).eval()
    assert default_layers(net) == ["block1", "block2", "invariant", "reduced", "logits"]
    assert "equivariant" in available_layers(net) and "invariant_map" in available_layers(net)
    x = torch.randn(3, 1, 8, 8)
    feats = collect_features(net, x, [*default_layers(net), "equivariant"])
    out = net.layers(x)
    assert feats["block1"].shape == (3, 2 * 4, 8, 8)  # regular fields of the first block
    assert torch.allclose(feats["block2"], out.representation.tensor, atol=1e-6)
    for name in ("invariant", "reduced", "logits", "equivariant"):
        assert torch.allclose(feats[name], getattr(out, name), atol=1e-6)
    assert feats["equivariant"].shape == (3, 3, 4)


def test_lead_models_get_readable_default_layers():
    alexnet = pytest.importorskip("glassbox.models.alexnet")
    gbn = pytest.importorskip("glassbox.models.glassbox_net")
    a = alexnet.AlexNet(in_channels=1, image_size=32, num_classes=4, width_mult=0.125, hidden=16)
    assert default_layers(a) == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
        "fc1",
        "fc2",
        "logits",
    ]
    g = gbn.GlassBoxNet(image_size=16, num_classes=3, group_order=4, widths=(2, 2), kernel_sizes=(3, 3),
                        pool_after=(True, False), reduced_dim=2, classifier_hidden=())  # fmt: skip
    assert default_layers(g) == ["block1", "block2", "invariant", "reduced", "logits"]
    dims = layer_dims(g, torch.randn(2, 1, 16, 16))
    assert dims == {
        INPUT: 256,
        "block1": 2 * 4 * 8 * 8,
        "block2": 2 * 4 * 8 * 8,
        "invariant": 2,
        "reduced": 2,
        "logits": 3,
    }


# ------------------------------------------------------------------ datasets
def test_iter_batches_sources_and_subsets():
    x, y = torch.randn(10, 1, 4, 4), torch.arange(10)
    as_tensors = torch.cat([b for _, b in iter_batches((x, y), batch_size=3)])
    as_dataset = torch.cat([b for _, b in iter_batches(TensorDataset(x, y), batch_size=4)])
    as_loader = torch.cat(
        [b for _, b in iter_batches(DataLoader(TensorDataset(x, y), batch_size=4))]
    )
    assert torch.equal(as_tensors, y) and torch.equal(as_dataset, y) and torch.equal(as_loader, y)
    sub = torch.cat([b for _, b in iter_batches((x, y), max_samples=4, seed=1)])
    again = torch.cat([b for _, b in iter_batches(TensorDataset(x, y), max_samples=4, seed=1)])
    assert sub.numel() == 4 and torch.equal(sub, again)  # same seeded subset either way
    first = torch.cat(
        [b for _, b in iter_batches(DataLoader(TensorDataset(x, y), batch_size=4), max_samples=6)]
    )
    assert torch.equal(first, y[:6])


def test_collect_dataset_features_and_groups():
    net = plain_cnn()
    x, y = torch.randn(9, 1, 8, 8), torch.arange(9) % 3
    feats, labels = collect_dataset_features(net, (x, y), ["conv2", "logits"], batch_size=4)
    assert torch.equal(labels, y)
    assert (
        feats[INPUT].shape == (9, 64)
        and feats["conv2"].shape == (9, 96)
        and feats["logits"].shape == (9, 3)
    )
    pixels, labels2 = dataset_inputs((x, y), batch_size=4)
    assert torch.equal(pixels, feats[INPUT]) and torch.equal(labels2, y)
    with pytest.raises(ValueError, match="no samples"):
        collect_dataset_features(net, [], ["logits"])
    # 1 MiB budget, 1024 samples: 256 floats per sample fill it
    assert layer_groups({"a": 200, "b": 56, "c": 10, "d": 1000, "e": 5}, 1024, budget_mb=1.0) == [
        ["a", "b"],
        ["c"],
        ["d"],
        ["e"],
    ]
