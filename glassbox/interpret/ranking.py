"""Similarity ranking of images against a representative interpretation.

Dist(x, x′) = Σ_{h∈P} |⟨w_h, ψ(x)⟩ − ⟨w_h, ψ(x′)⟩|: how differently the interpretation's
boundaries see two images. Covered images come first, each group by increasing Dist.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassbox.errors import AnalysisInputError
from glassbox.interpret.boundaries import LinearBoundaries

__all__ = ["interpretation_distance", "rank_by_interpretation"]


@torch.no_grad()
def interpretation_distance(
    boundaries: LinearBoundaries, seed_feature: Tensor, features: Tensor
) -> Tensor:
    """Dist(seed, x′) for every row of ``features`` → (N,)."""
    proj = boundaries.project(features)  # (N, |P|)
    seed_proj = boundaries.project(seed_feature.reshape(1, -1))
    return (proj - seed_proj).abs().sum(1)


@torch.no_grad()
def rank_by_interpretation(
    boundaries: LinearBoundaries, seed_feature: Tensor, features: Tensor, covered: Tensor
) -> tuple[Tensor, Tensor]:
    """Order of ``features`` rows: covered first, then by increasing Dist to the seed.

    Returns ``(order, distance)`` with ``distance`` in the original row order.
    """
    dist = interpretation_distance(boundaries, seed_feature, features)
    covered = torch.as_tensor(covered, device=dist.device, dtype=torch.bool)
    if covered.shape != dist.shape:
        raise AnalysisInputError(
            f"covered must have shape {tuple(dist.shape)}, got {tuple(covered.shape)}"
        )
    by_dist = torch.argsort(dist, stable=True)
    order = by_dist[torch.argsort((~covered[by_dist]).to(torch.int8), stable=True)]
    return order, dist
