"""Equivariant readout: exact pose shifts under 90° rotations on exactly equivariant e2cnn nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glassbox.analysis.pose import (
    PoseReadout,
    pose_accuracy,
    roll_rotation_axis,
    rotate90,
    rotation_order_of,
)
from helpers import TinyGlassBox


@pytest.fixture(scope="module")
def nets():
    return {
        "C8": TinyGlassBox(8, reduced_dim=None, num_classes=4, seed=8).eval(),
        "C4": TinyGlassBox(4, reduced_dim=None, num_classes=4, seed=4).eval(),
        "D4": TinyGlassBox(4, flips=True, reduced_dim=None, num_classes=4, seed=5).eval(),
    }


def images(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the action on the features
@pytest.mark.parametrize("name", ["C8", "C4", "D4"])
def test_rot90_rolls_the_rotation_axis(nets, name):
    net = nets[name]
    n = rotation_order_of(net)
    assert n == int(name[1:])
    x = images()
    with torch.no_grad():
        eq = net.layers(x).equivariant
        for k in range(4):
            rotated = net.layers(rotate90(x, k)).equivariant
            assert torch.allclose(rotated, roll_rotation_axis(eq, k * n // 4, n), atol=1e-5)


# ------------------------------------------------------------------ the readout
@pytest.mark.parametrize(("n", "flips"), [(8, 1), (4, 2)])
def test_readout_recovers_exact_rolls_of_a_template(n, flips):
    g = torch.Generator().manual_seed(0)
    template = torch.randn(1, 5, flips * n, generator=g)
    readout = PoseReadout(n).fit(template)
    for s in range(n):
        assert int(readout.predict(roll_rotation_axis(template, s, n))[0]) == s


def test_class_templates_pick_the_right_reference():
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(3, 4, 8, generator=g)
    readout = PoseReadout(8).fit(templates, torch.tensor([0, 1, 2]))
    shifted = torch.stack(
        [roll_rotation_axis(templates[c : c + 1], s, 8)[0] for c, s in [(0, 3), (1, 5), (2, 7)]]
    )
    assert readout.predict(shifted, torch.tensor([0, 1, 2])).tolist() == [3, 5, 7]


@pytest.mark.parametrize("name", ["C8", "C4", "D4"])
@pytest.mark.parametrize("use_classes", [False, True])
def test_rotating_the_input_by_k_quarter_turns_shifts_the_estimate_by_exactly_k(
    nets, name, use_classes
):
    net = nets[name]
    n = rotation_order_of(net)
    x, y = images(8), torch.arange(8) % 3
    with torch.no_grad():
        readout = PoseReadout(n).fit(
            net.layers(images(8, seed=5)).equivariant, y if use_classes else None
        )
        base = readout.predict(net.layers(x).equivariant, y if use_classes else None)
        for k in range(1, 4):
            est = readout.predict(
                net.layers(rotate90(x, k)).equivariant, y if use_classes else None
            )
            assert torch.equal((est - base) % n, torch.full_like(base, k * n // 4))


@pytest.mark.parametrize("name", ["C8", "D4"])
def test_pose_accuracy_on_rotated_test_images(nets, name):
    net = nets[name]
    x, y = images(5, seed=3), torch.arange(5)
    # one image per class and templates from the same images: the upright estimate is 0 by
    # Cauchy-Schwarz, so every rotation is read exactly (the net being exactly equivariant)
    out = pose_accuracy(net, x, y, x, y, class_source="true")
    assert out == {"accuracy_k0": 1.0, "accuracy_k1": 1.0, "accuracy_k2": 1.0, "accuracy_k3": 1.0,
                   "accuracy": 1.0, "consistency": 1.0}  # fmt: skip
    # unrelated templates: accuracy can be anything, consistency stays exact
    other = pose_accuracy(
        net,
        images(6, seed=9),
        torch.arange(6) % 4,
        x,
        quarter_turns=(1, 3),
        class_source="predicted",
    )
    assert other["consistency"] == 1.0 and set(other) == {
        "accuracy_k1",
        "accuracy_k3",
        "accuracy",
        "consistency",
    }


def test_bad_input(nets):
    net = nets["C4"]
    x, y = images(2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="not a multiple of 4"):
        pose_accuracy(net, x, y, x, y, rotation_order=6)
    with pytest.raises(TypeError, match="no layers"):
        pose_accuracy(nn.Linear(2, 2), x, y, x, y)
    with pytest.raises(ValueError, match="class_source"):
        pose_accuracy(net, x, y, x, y, class_source="oracle")
    with pytest.raises(ValueError, match="needs test_labels"):
        pose_accuracy(net, x, y, x, class_source="true")
    with pytest.raises(ValueError, match="no e2cnn gspace"):
        rotation_order_of(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        PoseReadout(4).predict(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, C, \|G\|\)"):
        PoseReadout(4).fit(torch.randn(2, 12))
    with pytest.raises(ValueError, match="not a multiple of the rotation order"):
        PoseReadout(8).fit(torch.randn(2, 3, 12))
