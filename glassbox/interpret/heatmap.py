"""Heat maps of images under a representative interpretation (Lam et al., "Finding
representative interpretations on convolutional neural networks", ICCV 2021).

For each boundary h ∈ P, α_k = mean over spatial positions of w_h reshaped to the feature
map's (K, H, W); the map is ReLU(Σ_k α_k ψ_k(x′)), upsampled to the image and min-max
normalised; the heat map averages these over h ∈ P. Boundaries are oriented so that
w_h points towards the seed's class, so the map shows evidence *for* that class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glassbox.errors import AnalysisInputError
from glassbox.interpret.boundaries import LinearBoundaries

__all__ = ["channel_weights", "interpretation_heatmaps"]


def channel_weights(boundaries: LinearBoundaries) -> Tensor:
    """α (|P|, K): each boundary's normal averaged over the spatial positions."""
    shape = boundaries.feature_shape
    if len(shape) != 3:
        raise AnalysisInputError(
            f"heat maps need a spatial feature map ψ of shape (K, H, W), got feature shape {shape}; "
            "split the model at a convolutional layer"
        )
    return boundaries.weight.reshape(len(boundaries), *shape).mean(dim=(2, 3))


@torch.no_grad()
def interpretation_heatmaps(
    boundaries: LinearBoundaries,
    features: Tensor,
    image_size: tuple[int, int],
    batch_size: int = 256,
) -> Tensor:
    """Heat maps (N, H_img, W_img) in [0, 1] of images with features ψ (N, K, H, W)."""
    alpha = channel_weights(boundaries).to(features.dtype)
    if features.dim() != 4 or tuple(features.shape[1:]) != tuple(boundaries.feature_shape):
        raise AnalysisInputError(
            f"features must be (N, {', '.join(map(str, boundaries.feature_shape))}), got {tuple(features.shape)}"
        )
    out = []
    for start in range(0, features.shape[0], batch_size):
        f = features[start : start + batch_size]
        maps = torch.relu(torch.einsum("pk,nkhw->nphw", alpha.to(f.device), f))
        maps = F.interpolate(maps, size=tuple(image_size), mode="bilinear", align_corners=False)
        lo = maps.amin(dim=(2, 3), keepdim=True)
        hi = maps.amax(dim=(2, 3), keepdim=True)
        maps = (maps - lo) / (hi - lo).clamp_min(1e-12)
        out.append(maps.mean(1))
    return torch.cat(out)
