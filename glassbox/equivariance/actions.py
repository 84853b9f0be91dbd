"""The known action of an image-plane group element on feature tensors, in torch.

For an e2cnn ``GeometricTensor`` the action is the spatial transform of the base space
*and* the fibre representation ρ(g) of its field type (a channel permutation for regular
and trivial fields, a general matrix otherwise). It is computed batched on the tensor's
device; e2cnn's own ``GeometricTensor.transform`` (numpy, CPU) serves only as a test oracle.
For plain tensors the action is spatial only: (B, C, H, W) maps are transformed, vectors
are left untouched (the action of a non-spatial layer is assumed trivial).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from glassbox.equivariance.groups import GroupElement, transform_grid
from glassbox.errors import AnalysisInputError, AnalysisTypeError
from glassbox.probe import is_geometric_tensor

_ANGLE_TOL = 1e-6


def _as_multiple(value: float, period: float) -> int | None:
    """``k`` if ``value`` ≡ k·period (mod 2π) for an integer k, else ``None``."""
    k = (value % (2 * math.pi)) / period
    r = round(k)
    return int(r) if abs(k - r) < _ANGLE_TOL * max(1.0, abs(k)) else None


def e2cnn_element(gspace: Any, element: GroupElement) -> Any | None:
    """The element of ``gspace.fibergroup`` acting on the plane like ``element``, or ``None``.

    e2cnn mirrors rows (``x[..., ::-1, :]``) and then rotates by ``2·axis`` for its flip; our
    flip mirrors columns, which is the same for the default axis π/2. Other axes are mapped
    by composing with the matching rotation.
    """
    from e2cnn import gspaces

    theta = element.radians
    if isinstance(gspace, gspaces.TrivialOnR2):
        return gspace.fibergroup.identity if element.is_identity else None
    if isinstance(gspace, gspaces.Rot2dOnR2):
        if element.flip:
            return None
        n = gspace.fibergroup.order()
        if n < 0:  # SO(2): any angle
            return theta % (2 * math.pi)
        k = _as_multiple(theta, 2 * math.pi / n)
        return None if k is None else k % n
    if isinstance(gspace, gspaces.FlipRot2dOnR2):
        n = gspace.fibergroup.rotation_order
        # ours: rot(θ)∘mirror_cols = rot(θ + π)∘mirror_rows; e2cnn's (1, k): rot(2πk/N + 2·axis)∘mirror_rows
        angle = theta + (math.pi - 2 * gspace.axis if element.flip else 0.0)
        if n < 0:  # O(2)
            return (int(element.flip), angle % (2 * math.pi))
        k = _as_multiple(angle, 2 * math.pi / n)
        return None if k is None else (int(element.flip), k % n)
    if isinstance(gspace, gspaces.Flip2dOnR2):
        if not element.flip:
            return 0 if element.is_identity else None
        return (
            1
            if _as_multiple(theta - (2 * gspace.axis - math.pi), 2 * math.pi) is not None
            else None
        )
    return None


class FibreAction:
    """ρ(g) of one field type as a torch op: a channel gather when it is a permutation."""

    def __init__(self, matrix: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        rounded = np.rint(matrix)
        is_perm = (
            np.allclose(matrix, rounded, atol=1e-6)
            and np.all((rounded == 0) | (rounded == 1))
            and np.all(rounded.sum(0) == 1)
            and np.all(rounded.sum(1) == 1)
        )
        # trivial fields (e.g. after GroupPooling): the known action is the spatial one
        self.is_identity = bool(
            is_perm and np.array_equal(rounded.argmax(1), np.arange(len(matrix)))
        )
        if is_perm:
            self.index = torch.as_tensor(rounded.argmax(1), dtype=torch.long, device=device)
            self.matrix = None
        else:
            self.index = None
            self.matrix = torch.as_tensor(matrix, dtype=dtype, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to the channel axis (1) of ``x``: out[:, o] = Σ_i ρ[o, i] x[:, i]."""
        if self.index is not None:
            return x.index_select(1, self.index)
        return torch.einsum("oi,bi...->bo...", self.matrix, x)


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 512


def fibre_action(
    field_type: Any, element: GroupElement, device: torch.device, dtype: torch.dtype
) -> FibreAction | None:
    """The cached :class:`FibreAction` of ``element`` on ``field_type`` (``None`` if g ∉ G)."""
    key = (field_type, element, str(device), dtype)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    g = e2cnn_element(field_type.gspace, element)
    if g is None:
        action = None
    else:
        # block-diagonal over fields, built from the few unique representations
        mats = {}
        blocks = []
        for rep in field_type.representations:
            if rep.name not in mats:
                mats[rep.name] = np.asarray(rep(g), dtype=np.float64)
            blocks.append(mats[rep.name])
        size = sum(b.shape[0] for b in blocks)
        full = np.zeros((size, size))
        start = 0
        for b in blocks:
            full[start : start + b.shape[0], start : start + b.shape[0]] = b
            start += b.shape[0]
        action = FibreAction(full, device, dtype)
    _CACHE[key] = action
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return action


def lie_not_applicable(feature: Any) -> str:
    """Why the SO(2) Lie derivative does not apply to ``feature`` ("" where it does).

    The Lie derivative needs the action of rotations by every small angle t on the fibres. A
    ``GeometricTensor`` whose fields are all trivial (invariant maps, e.g. after group
    pooling), a plain tensor (maps rotate spatially, vectors are invariant) and logits have
    it. Fields of any other representation do not: a discrete group (C_N, D_N) has no rotation
    by t ≠ 2πk/N to act with, and for SO(2)/O(2) fields the fibre generator is not implemented,
    so a spatial-only derivative there would measure something else."""
    if not is_geometric_tensor(feature):
        return ""
    field_type = feature.type
    kinds = sorted({rep.name for rep in field_type.representations if not rep.is_trivial()})
    if not kinds:
        return ""
    group = field_type.gspace.fibergroup
    what = f"{', '.join(kinds)} fields of {group.name}"
    if group.order() > 0:
        return f"{what}: a discrete group has no continuous rotation to act on them"
    return f"{what}: the fibre generator of a continuous rotation is not implemented"


def spatial_action(
    x: torch.Tensor, element: GroupElement, exact: str = "error", what: str = "feature map"
) -> torch.Tensor:
    """Transform the spatial axes of a (B, C, H, W) map; leave other tensors untouched."""
    if x.dim() == 4:
        return transform_grid(x, element, exact=exact, what=what)
    return x


def known_action(feature: Any, element: GroupElement, exact: str = "error") -> torch.Tensor:
    """ρ_ℓ(g)·feature as a plain tensor.

    ``GeometricTensor``: spatial transform and fibre representation; raises ``ValueError``
    if ``element`` is not in its fibre group. Plain tensor: :func:`spatial_action`.
    """
    if is_geometric_tensor(feature):
        tensor = feature.tensor
        action = fibre_action(feature.type, element, tensor.device, tensor.dtype)
        if action is None:
            raise AnalysisInputError(
                f"{element.name} is not an element of the symmetry group {feature.type.gspace.name} of this "
                "GeometricTensor; measure with a subgroup of the model's group (e.g. 'C4' for a C8 model)"
            )
        return action(spatial_action(tensor, element, exact))
    if not torch.is_tensor(feature):
        raise AnalysisTypeError(
            f"expected a tensor or GeometricTensor, got {type(feature).__name__}"
        )
    return spatial_action(feature, element, exact)
