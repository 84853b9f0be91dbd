"""Do interpretations respect the symmetry? (no Lightning)

For every image x and its rotations g·x by 90°, 180°, 270°:

* **rotation consistency**: the fraction of (x, g) for which g·x is assigned the same
  representative interpretation as x (1.0 for a model whose ψ is equivariant and whose head
  is invariant to it, e.g. the glass-box model split at its group-pooled maps);
* **heat-map equivariance**: mean over (x, g) of ‖M(g·x) − g·M(x)‖ / ‖M(x)‖, the relative
  difference between the heat map of the rotated image and the rotated heat map (0 up to
  float round-off for such a model).
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassbox.errors import AnalysisInputError
from glassbox.interpret.evaluation import ri_saliency
from glassbox.interpret.representative import Interpretation, RepresentativeInterpreter

__all__ = ["rotation_consistency"]


@torch.no_grad()
def rotation_consistency(
    interpreter: RepresentativeInterpreter,
    interpretations: list[Interpretation],
    images: Tensor,
    quarter_turns: tuple[int, ...] = (1, 2, 3),
) -> dict[str, float]:
    """``{"rotation_consistency", "heatmap_equivariance"}`` of ``images`` (N, C, H, W)
    under rotations by ``quarter_turns`` × 90° (square images only)."""
    if images.shape[-1] != images.shape[-2]:
        raise AnalysisInputError(
            f"rotation consistency needs square images, got {tuple(images.shape[-2:])}"
        )
    if not interpretations:
        raise AnalysisInputError("rotation consistency needs at least one interpretation")
    images = images.to(interpreter.features.device)
    maps, assigned, _ = ri_saliency(interpreter, interpretations, images)
    same, rel = [], []
    norm = maps.flatten(1).norm(dim=1).clamp_min(1e-12)
    for r in quarter_turns:
        rotated = torch.rot90(images, r, dims=(-2, -1))
        maps_r, assigned_r, _ = ri_saliency(interpreter, interpretations, rotated)
        same.append((assigned_r == assigned).float())
        diff = maps_r - torch.rot90(maps, r, dims=(-2, -1))
        rel.append(diff.flatten(1).norm(dim=1) / norm)
    return {
        "rotation_consistency": float(torch.cat(same).mean()),
        "heatmap_equivariance": float(torch.cat(rel).mean()),
    }
