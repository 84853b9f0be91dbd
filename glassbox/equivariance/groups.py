"""Symmetry groups of the image plane and their action on batches of images.

A :class:`GroupElement` is "mirror left-right (optional), then rotate counter-clockwise by
``angle`` degrees", the orientation convention of ``torch.rot90(x, k, dims=(-2, -1))`` and of
e2cnn's ``FlipRot2dOnR2`` with its default flip axis. Elements whose action is a
permutation of the pixel grid (multiples of 90° on square grids, 180° and mirrors on any
grid) are applied exactly; every other element needs interpolation, governed by the
``exact`` policy (``"error"``, ``"warn"`` or ``"interpolate"``).
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glassbox.errors import AnalysisInputError, AnalysisTypeError

EXACT_POLICIES = ("error", "warn", "interpolate")


class GroupRepresentabilityError(AnalysisInputError):
    """A group element cannot be applied exactly on the given pixel grid."""


@dataclass(frozen=True)
class GroupElement:
    """Mirror the last axis if ``flip``, then rotate counter-clockwise by ``angle`` degrees."""

    angle: float = 0.0
    flip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "angle", float(self.angle) % 360.0)
        object.__setattr__(self, "flip", bool(self.flip))

    @property
    def radians(self) -> float:
        return math.radians(self.angle)

    @property
    def quarter_turns(self) -> int | None:
        """``k`` when the rotation is ``k`` quarter turns, else ``None``."""
        k = self.angle / 90.0
        return int(round(k)) % 4 if abs(k - round(k)) < 1e-9 else None

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.quarter_turns == 0

    @property
    def name(self) -> str:
        angle = f"{self.angle:g}"
        if self.flip:
            return "flip" if self.quarter_turns == 0 else f"flip_rot{angle}"
        return f"rot{angle}"

    def is_exact_on(self, height: int, width: int) -> bool:
        """Whether this element permutes the pixels of a ``height × width`` grid."""
        k = self.quarter_turns
        return k is not None and (k % 2 == 0 or height == width)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Group:
    """A named set of group elements to measure, plus whether to take the Lie derivative.

    ``elements`` never contains the identity: the measures are trivially 0 there.
    ``continuous`` marks the rotation group SO(2), whose equivariance is measured by the
    Lie derivative at the identity.
    """

    name: str
    elements: tuple[GroupElement, ...]
    continuous: bool = False

    @property
    def order(self) -> int | None:
        """|G| for a finite group (identity included), ``None`` for SO(2)."""
        return None if self.continuous else len(self.elements) + 1


def cyclic(n: int) -> Group:
    """C_n: rotations by multiples of 360°/n (only the multiples of 90° are exact on the grid)."""
    if n < 2:
        raise AnalysisInputError(f"cyclic group order must be >= 2, got {n}")
    return Group(f"C{n}", tuple(GroupElement(360.0 * k / n) for k in range(1, n)))


def dihedral(n: int) -> Group:
    """D_n: the n rotations of C_n and their compositions with the left-right mirror."""
    if n < 1:
        raise AnalysisInputError(f"dihedral group order must be >= 1, got {n}")
    rotations = [GroupElement(360.0 * k / n) for k in range(1, n)]
    flips = [GroupElement(360.0 * k / n, flip=True) for k in range(n)]
    return Group(f"D{n}", tuple(rotations + flips))


def reflection() -> Group:
    """The two-element group {identity, left-right mirror}."""
    return Group("flip", (GroupElement(0.0, flip=True),))


def rotations(angles: Sequence[float]) -> Group:
    """Arbitrary rotation angles in degrees (interpolated unless multiples of 90°)."""
    elements = tuple(e for e in (GroupElement(a) for a in angles) if not e.is_identity)
    if not elements:
        raise AnalysisInputError(
            f"rotations() needs at least one non-zero angle, got {list(angles)}"
        )
    return Group("rot[" + ",".join(f"{e.angle:g}" for e in elements) + "]", elements)


def continuous_rotation(angles: Sequence[float] = ()) -> Group:
    """SO(2): the Lie derivative at the identity, plus optional sampled (interpolated) angles."""
    elements = tuple(e for e in (GroupElement(a) for a in angles) if not e.is_identity)
    return Group("SO2", elements, continuous=True)


_SPEC = re.compile(r"^(?P<kind>[CD])(?P<n>\d+)$")


def get_group(spec: str | Group) -> Group:
    """Parse ``"C4"``, ``"D4"``, ``"flip"``, ``"SO2"`` (or pass a :class:`Group` through)."""
    if isinstance(spec, Group):
        return spec
    if not isinstance(spec, str):
        raise AnalysisTypeError(
            f"group must be a Group or a string like 'C4', got {type(spec).__name__}"
        )
    key = spec.strip()
    if key.lower() in ("flip", "reflection", "mirror"):
        return reflection()
    if key.upper() in ("SO2", "SO(2)", "ROTATION"):
        return continuous_rotation()
    match = _SPEC.match(key.upper())
    if match is None:
        raise AnalysisInputError(
            f"unknown group {spec!r}: use 'C<n>' (rotations), 'D<n>' (rotations and mirrors), 'flip' or 'SO2'"
        )
    n = int(match["n"])
    return cyclic(n) if match["kind"] == "C" else dihedral(n)


# --------------------------------------------------------------------------- actions


def check_exact_policy(exact: str) -> None:
    if exact not in EXACT_POLICIES:
        raise AnalysisInputError(f"exact must be one of {EXACT_POLICIES}, got {exact!r}")


def transform_grid(
    x: torch.Tensor, element: GroupElement, exact: str = "error", what: str = "images"
) -> torch.Tensor:
    """Apply ``element`` to the last two (spatial) axes of ``x`` (any leading shape).

    Exact elements permute pixels (``flip``/``rot90``). Others are rotated with bilinear
    interpolation and zero padding, after ``exact="error"`` refused or ``"warn"`` warned.
    """
    check_exact_policy(exact)
    h, w = x.shape[-2], x.shape[-1]
    if element.is_exact_on(h, w):
        out = x.flip(-1) if element.flip else x
        k = element.quarter_turns
        return torch.rot90(out, k, dims=(-2, -1)) if k else out
    why = f"{element.name} maps the {h}×{w} grid of the {what} to itself only by interpolation" + (
        " (90° rotations need a square grid)" if element.quarter_turns is not None else ""
    )
    if exact == "error":
        raise GroupRepresentabilityError(
            f"{why}. Use elements that are exact on the grid (multiples of 90° on square maps, "
            "mirrors), or pass exact='warn' / exact='interpolate' to accept interpolation error."
        )
    if exact == "warn":
        warnings.warn(
            f"{why}; using bilinear interpolation (errors include interpolation error)",
            stacklevel=2,
        )
    out = x.flip(-1) if element.flip else x
    return rotate_interpolated(out, element.radians)


def transform_images(
    images: torch.Tensor, element: GroupElement, exact: str = "error"
) -> torch.Tensor:
    """Apply ``element`` to a (B, C, H, W) batch."""
    return transform_grid(images, element, exact=exact, what="images")


def pixel_permutation(height: int, width: int, element: GroupElement, device=None) -> torch.Tensor:
    """Flat indices ``p`` with ``transform_grid(x, element).flatten(-2) == x.flatten(-2)[..., p]``.

    Only for elements exact on the grid; lets channels-last features be transformed with
    one gather instead of a flip, a transpose and a copy.
    """
    if not element.is_exact_on(height, width):
        raise GroupRepresentabilityError(
            f"{element.name} does not permute the pixels of a {height}×{width} grid"
        )
    return _pixel_permutation(height, width, element, str(torch.device(device or "cpu")))


@functools.lru_cache(maxsize=256)
def _pixel_permutation(height: int, width: int, element: GroupElement, device: str) -> torch.Tensor:
    index = torch.arange(height * width, device=device).view(height, width)
    return transform_grid(index, element).reshape(-1).contiguous()


def rotate_interpolated(x: torch.Tensor, radians: float | torch.Tensor) -> torch.Tensor:
    """Rotate the last two axes counter-clockwise (the ``rot90`` direction) about the centre.

    Bilinear, border padding (samples outside the grid take the nearest border value, so a
    uniform background stays the background whatever its normalised value), output on the
    same grid; isotropic in pixel units on
    non-square grids. ``radians`` may be a 0-d tensor (differentiable).
    """
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, 1, h, w) if x.dim() != 4 else x
    t = torch.as_tensor(radians, dtype=x.dtype, device=x.device)
    c, s = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s * h / w, zero]), torch.stack([s * w / h, c, zero])])
    theta = theta.unsqueeze(0).expand(flat.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(*lead, h, w)


def rotation_generator(x: torch.Tensor) -> torch.Tensor:
    """d/dt of ``rotate_interpolated(x, t)`` at t=0 on the last two axes (central differences).

    Rotating by t samples the input at positions moving with velocity (−v, u) (u to the
    right, v down, about the centre), so the derivative is −v ∂x/∂u + u ∂x/∂v. Central
    differences with border (replicate) padding, like :func:`rotate_interpolated`'s border
    padding, equal the symmetric finite difference of the bilinear rotation: outside the grid
    the image continues with its border value, so a uniform background adds no derivative
    whatever its normalised value (zero padding would put a spurious edge at the border of
    every normalised image).
    """
    h, w = x.shape[-2], x.shape[-1]
    padded = F.pad(x.reshape(-1, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(
        *x.shape[:-2], h + 2, w + 2
    )
    d_u = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    d_v = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    u = torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2
    v = (torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2).unsqueeze(-1)
    return -v * d_u + u * d_v
