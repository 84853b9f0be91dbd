"""Group actions on images and the known action on e2cnn fields (validated against e2cnn)."""

import math
import warnings

import numpy as np
import pytest
import torch
from e2cnn import gspaces
from e2cnn import nn as enn

from glassbox.equivariance import (
    GroupElement,
    GroupRepresentabilityError,
    dihedral,
    e2cnn_element,
    get_group,
    known_action,
    pixel_permutation,
    rotate_interpolated,
    rotation_generator,
    transform_images,
)


def test_group_specs():
    assert [e.name for e in get_group("C4").elements] == ["rot90", "rot180", "rot270"]
    d4 = get_group("D4")
    assert d4.order == 8 and len(d4.elements) == 7
    assert {e.name for e in d4.elements if e.flip} == {
        "flip",
        "flip_rot90",
        "flip_rot180",
        "flip_rot270",
    }
    assert [e.name for e in get_group("flip").elements] == ["flip"]
    so2 = get_group("SO2")
    assert so2.continuous and so2.elements == () and so2.order is None
    assert [e.angle for e in get_group("C8").elements][:2] == [45.0, 90.0]
    with pytest.raises(ValueError, match="unknown group 'Z3'.*'C<n>'"):
        get_group("Z3")


def test_exact_elements_are_pixel_permutations():
    x = torch.randn(2, 3, 7, 7)
    r90 = GroupElement(90)
    assert torch.equal(transform_images(x, r90), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(transform_images(x, GroupElement(0, flip=True)), x.flip(-1))
    # flip then rotate, and 4 quarter turns are the identity
    assert torch.equal(
        transform_images(x, GroupElement(90, flip=True)), torch.rot90(x.flip(-1), 1, dims=(-2, -1))
    )
    y = x
    for _ in range(4):
        y = transform_images(y, r90)
    assert torch.equal(y, x)
    # 180° and mirrors are exact on non-square grids too
    z = torch.randn(1, 1, 5, 8)
    assert torch.equal(transform_images(z, GroupElement(180)), z.flip(-1).flip(-2))
    for el in dihedral(4).elements:
        perm = pixel_permutation(6, 6, el)
        f = torch.randn(3, 2, 6, 6)
        assert torch.equal(transform_images(f, el).flatten(-2), f.flatten(-2)[..., perm])


def test_interpolated_rotation_matches_rot90_and_has_the_same_direction():
    for size in (6, 7):
        x = torch.randn(2, 2, size, size)
        err = (rotate_interpolated(x, math.pi / 2) - torch.rot90(x, 1, dims=(-2, -1))).abs().max()
        assert err < 1e-5


def test_grid_that_cannot_represent_the_element_errors_or_warns():
    x = torch.randn(2, 1, 12, 16)
    with pytest.raises(
        GroupRepresentabilityError, match=r"rot90 .* 12×16 grid.*square grid.*exact='interpolate'"
    ):
        transform_images(x, GroupElement(90))
    with pytest.warns(UserWarning, match="interpolation"):
        y = transform_images(x, GroupElement(90), exact="warn")
    assert y.shape == x.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform_images(torch.randn(1, 1, 8, 8), GroupElement(45), exact="interpolate")
    with pytest.raises(GroupRepresentabilityError, match="rot45"):
        transform_images(torch.randn(1, 1, 8, 8), GroupElement(45))
    with pytest.raises(ValueError, match="exact must be one of"):
        transform_images(x, GroupElement(90), exact="maybe")


def test_rotation_generator_is_the_derivative_of_the_interpolated_rotation():
    h, w = 15, 12
    v = torch.arange(h, dtype=torch.float64)[:, None] - 7
    u = torch.arange(w, dtype=torch.float64) - 5
    blob = torch.exp(-((u - 1.5) ** 2 / 6 + (v + 2) ** 2 / 3))[None, None]
    eps = 1e-4
    fd = (rotate_interpolated(blob, eps) - rotate_interpolated(blob, -eps)) / (2 * eps)
    gen = rotation_generator(blob)
    assert (fd - gen).abs().max() < 1e-3 * gen.abs().max()
    assert gen.abs().max() > 0.1  # not trivially zero


# (gspace, how many non-identity elements of D4 — the exact ones — lie in its group)
GSPACES = [
    (gspaces.Rot2dOnR2(4), 3),
    (gspaces.Rot2dOnR2(8), 3),
    (gspaces.FlipRot2dOnR2(4), 7),
    (gspaces.FlipRot2dOnR2(4, axis=0.0), 7),
    (gspaces.FlipRot2dOnR2(8, axis=math.pi / 4), 7),
    (gspaces.Flip2dOnR2(), 1),
]


@pytest.mark.parametrize(("gspace", "expected"), GSPACES, ids=lambda g: getattr(g, "name", str(g)))
def test_known_action_matches_e2cnn_transform(gspace, expected):
    """The torch action (gather / matrix, batched) equals e2cnn's numpy ``transform``."""
    group = gspace.fibergroup
    irreps = list(group.irreps.values()) if isinstance(group.irreps, dict) else list(group.irreps)
    field_type = enn.FieldType(
        gspace, [gspace.regular_repr, gspace.trivial_repr, *irreps, gspace.regular_repr]
    )
    torch.manual_seed(0)
    x = enn.GeometricTensor(torch.randn(3, field_type.size, 6, 6), field_type)
    checked = 0
    for el in dihedral(4).elements:
        g = e2cnn_element(gspace, el)
        if g is None:
            with pytest.raises(ValueError, match="not an element of the symmetry group"):
                known_action(x, el)
            continue
        ours = known_action(x, el)
        oracle = x.transform(g).tensor
        np.testing.assert_allclose(ours.numpy(), oracle.numpy(), atol=1e-6)
        checked += 1
    assert checked == expected


def test_plain_tensor_action_is_spatial_only():
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(known_action(x, GroupElement(90)), torch.rot90(x, 1, dims=(-2, -1)))
    v = torch.randn(4, 10)
    assert torch.equal(known_action(v, GroupElement(90)), v)
