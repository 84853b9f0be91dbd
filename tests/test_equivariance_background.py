"""Interpolated rotations and the Lie-derivative generator continue an image with its border
value, so a normalised image's uniform background (not 0) adds no spurious edge."""

import math

import pytest
import torch

from glassbox.equivariance.groups import rotate_interpolated, rotation_generator
from glassbox.equivariance.measures import lie_derivative_norms


def blob(background: float) -> torch.Tensor:
    """A smooth centred blob on a uniform background; nothing near the border."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    r2 = (yy - 7.5) ** 2 + (xx - 7.5) ** 2
    return (background + torch.exp(-r2.double() / 6.0))[None, None]


def c4_invariant(x: torch.Tensor) -> list[torch.Tensor]:
    """Exactly C4-invariant (and SO(2)-invariant up to interpolation): the symmetrised sum
    of squares over the image."""
    s = sum(torch.rot90(x, k, dims=(-2, -1)) for k in range(4))
    return [(s**2).sum(dim=(1, 2, 3))[:, None]]


def test_lie_derivative_of_an_invariant_model_is_small_and_ignores_the_background_value():
    black = blob(0.0)
    normalised = blob(-0.6)  # black after normalisation with mean 0.17, std 0.29
    (lie0,), _ = lie_derivative_norms(c4_invariant, black)
    (lie1,), _ = lie_derivative_norms(c4_invariant, normalised)
    assert float(lie0) < 1e-3
    # the generator sees no edge at a uniform border, whatever its value
    torch.testing.assert_close(
        rotation_generator(normalised), rotation_generator(black), atol=1e-6, rtol=0
    )
    f0 = c4_invariant(black)[0]
    f1 = c4_invariant(normalised)[0]
    # the same invariance defect: ‖J L x‖ does not depend on the background value
    assert float(lie1) * float(f1.norm()) == pytest.approx(float(lie0) * float(f0.norm()), rel=1e-3)


def test_interpolated_rotation_keeps_the_background():
    x = blob(-0.6)
    rotated = rotate_interpolated(x, math.pi / 7)
    corners = rotated[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.full_like(corners, -0.6), atol=1e-4, rtol=0)  # not 0
