"""Compatibility of e2cnn 0.2.3 with numpy 2, patched once at import.

numpy 2 removed ``ndarray.tostring`` (used by the flip-basis hashes), refuses
``np.array(x, copy=False)`` when a copy is needed (used to sample the flip bases), and
removed ``np.float`` (used by O(2)-induced representations). e2cnn's modules get a numpy
proxy with the numpy-1 meanings; nothing else changes.
"""

from __future__ import annotations

import types

import numpy as np
from e2cnn.group.groups import o2group
from e2cnn.kernels import irreps_basis
from e2cnn.kernels import utils as kernel_utils


class _Numpy1(types.ModuleType):
    """numpy, with the numpy-1 behaviour e2cnn relies on."""

    float = float

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def array(obj, *args, copy=True, **kwargs):
        if copy is False:  # numpy 1: "copy only if needed"
            return np.asarray(obj, *args, **kwargs)
        return np.array(obj, *args, copy=copy, **kwargs)


def _as_bytes(value):
    return value.tobytes() if isinstance(value, np.ndarray) else value


def _hash(self) -> int:
    return (
        hash(self.in_irrep)
        + hash(self.out_irrep)
        + hash(_as_bytes(self.mu))
        + hash(_as_bytes(self.gamma))
    )


if int(np.__version__.split(".")[0]) >= 2:
    _np1 = _Numpy1("numpy")
    kernel_utils.np = _np1
    o2group.np = _np1
    for _cls in (
        irreps_basis.R2FlipsSolution,
        irreps_basis.R2ContinuousRotationsSolution,
        irreps_basis.R2FlipsDiscreteRotationsSolution,
        irreps_basis.R2FlipsContinuousRotationsSolution,
    ):
        _cls.__hash__ = _hash
