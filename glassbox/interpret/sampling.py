"""Candidate boundaries Q: where the top-1 class changes on segments ψ(x) → ψ(x⁻).

For a seed x of predicted class c and reference images x⁻ predicted as other classes, each
segment α(t) = (1 − t) ψ(x) + t ψ(x⁻) starts in class c and ends elsewhere; bisection on t
(all segments at once, one head forward per step) finds a point where the top-1 class
leaves c, and the exact LDB of the linear region on the seed's side there is a candidate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError
from glassbox.interpret.boundaries import LinearBoundaries, decision_boundaries
from glassbox.interpret.split import assert_piecewise_linear, run_head

__all__ = ["bisect_class_change", "sample_candidates"]


@torch.no_grad()
def bisect_class_change(
    head: nn.Module,
    start: Tensor,
    end: Tensor,
    start_class: Tensor,
    tol: float = 1e-8,
    max_steps: int = 60,
) -> tuple[Tensor, Tensor, Tensor]:
    """Bisect every segment start_i → end_i for a change of the top-1 class away from
    ``start_class[i]``.

    Returns ``(inside, other_class, gap2)``: a point of each segment still of class
    ``start_class`` next to the change, the top-1 class just across it, and the squared
    logit gap (G_top1 − G_top2)² at ``inside`` (tiny once converged). Stops when every gap²
    is below ``tol`` (relative to the squared logit scale) or after ``max_steps`` halvings.
    """
    if start.shape != end.shape:
        raise AnalysisInputError(
            f"segment starts {tuple(start.shape)} and ends {tuple(end.shape)} differ in shape"
        )
    s = start.shape[0]
    start_class = start_class.to(start.device).expand(s)
    shape = (s,) + (1,) * (start.dim() - 1)
    lo = torch.zeros(s, device=start.device, dtype=start.dtype)
    hi = torch.ones_like(lo)
    delta = end - start

    def at(t: Tensor) -> Tensor:
        return start + t.reshape(shape) * delta

    end_logits = run_head(head, end)
    if (end_logits.argmax(1) == start_class).any():
        raise AnalysisInputError("every segment must end in another top-1 class than it starts in")
    scale2 = end_logits.abs().amax(1).clamp_min(1.0) ** 2
    lo_logits = run_head(head, start)
    hi_class = end_logits.argmax(1)
    for _ in range(max_steps):
        top2 = lo_logits.topk(2, dim=1).values
        gap2 = (top2[:, 0] - top2[:, 1]) ** 2
        if bool((gap2 <= tol * scale2).all()):
            break
        mid = 0.5 * (lo + hi)
        mid_logits = run_head(head, at(mid))
        mid_class = mid_logits.argmax(1)
        same = mid_class == start_class
        lo = torch.where(same, mid, lo)
        hi = torch.where(same, hi, mid)
        lo_logits = torch.where(same[:, None], mid_logits, lo_logits)
        hi_class = torch.where(same, hi_class, mid_class)
    top2 = lo_logits.topk(2, dim=1).values
    gap2 = (top2[:, 0] - top2[:, 1]) ** 2
    inside, other = at(lo), hi_class
    return inside, other, gap2


def sample_candidates(
    head: nn.Module,
    seed_feature: Tensor,
    seed_class: int | Tensor,
    other_features: Tensor,
    tol: float = 1e-8,
    max_steps: int = 60,
) -> LinearBoundaries:
    """Candidate LDBs for one seed: one per row of ``other_features`` (ψ of reference images
    predicted as another class), oriented so the seed's class is ``pos_class``.

    Args:
        head: G (piecewise linear, eval mode).
        seed_feature: ψ(x) of the seed, shape ``feature_shape``.
        seed_class: the seed's predicted class.
        other_features: (Q, *feature_shape) ψ(x⁻) of other-class images.
    """
    assert_piecewise_linear(head, require_eval=True)
    if other_features.shape[1:] != seed_feature.shape:
        raise AnalysisInputError(
            f"seed features {tuple(seed_feature.shape)} and candidate features "
            f"{tuple(other_features.shape[1:])} differ in shape"
        )
    q = other_features.shape[0]
    start = seed_feature.unsqueeze(0).expand(q, *seed_feature.shape)
    cls = torch.as_tensor(seed_class, device=start.device).reshape(1).expand(q)
    inside, other, _ = bisect_class_change(
        head, start, other_features, cls, tol=tol, max_steps=max_steps
    )
    return decision_boundaries(head, inside, pos_class=cls.clone(), neg_class=other, check=False)
