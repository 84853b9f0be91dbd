"""Exact linear decision boundaries (LDBs) of a piecewise-linear head, for a whole batch.

Inside one activation pattern G(α) = W_α α + b_α exactly, so the boundary between classes
p and q at α is the hyperplane {z : wᵀz + b = 0} with

    w = ∂(G_p − G_q)/∂α = W_αᵀ (e_p − e_q),      b = (G_p(α) − G_q(α)) − wᵀα.

``W_αᵀ (e_p − e_q)`` is the masked product of the head's weights (W₁ᵀ D₁ W₂ᵀ D₂ ⋯ with the
ReLU/max-pool masks D fixed by α). It is evaluated for all points at once by ONE reverse
pass of Σ_i (G_p(α_i) − G_q(α_i)): in eval mode the head treats samples independently, so
the gradient of the sum with respect to α_i is exactly w_i. That is one forward and one
backward for the batch, instead of one backward per image and logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassbox.interpret.split import assert_piecewise_linear, run_head

__all__ = ["LinearBoundaries", "decision_boundaries", "logits_and_pairs"]


@dataclass
class LinearBoundaries:
    """M hyperplanes wᵀψ + b = 0 in the (flattened) feature space of ψ.

    Attributes:
        weight: (M, D) normals, oriented so that wᵀψ + b > 0 on the side of ``pos_class``.
        bias: (M,) offsets.
        pos_class / neg_class: (M,) the two classes the boundary separates (G_pos − G_neg).
        feature_shape: shape of one ψ(x) (e.g. (K, H, W)); D is its product.
    """

    weight: Tensor
    bias: Tensor
    pos_class: Tensor
    neg_class: Tensor
    feature_shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.weight.shape[0]

    def __getitem__(self, idx) -> LinearBoundaries:
        idx = torch.as_tensor(idx, device=self.weight.device)
        if idx.dim() == 0:
            idx = idx[None]
        return LinearBoundaries(
            self.weight[idx],
            self.bias[idx],
            self.pos_class[idx],
            self.neg_class[idx],
            self.feature_shape,
        )

    def to(self, device) -> LinearBoundaries:
        return LinearBoundaries(
            self.weight.to(device),
            self.bias.to(device),
            self.pos_class.to(device),
            self.neg_class.to(device),
            self.feature_shape,
        )

    def project(self, features: Tensor) -> Tensor:
        """⟨w_h, ψ⟩ for every row of ``features`` (N, D or N, *feature_shape) → (N, M)."""
        return features.reshape(features.shape[0], -1).to(self.weight.dtype) @ self.weight.T

    def decision_values(self, features: Tensor) -> Tensor:
        """wᵀψ + b → (N, M); its sign says on which side of each boundary an image lies."""
        return self.project(features) + self.bias

    @staticmethod
    def cat(parts: list[LinearBoundaries]) -> LinearBoundaries:
        return LinearBoundaries(
            torch.cat([p.weight for p in parts]),
            torch.cat([p.bias for p in parts]),
            torch.cat([p.pos_class for p in parts]),
            torch.cat([p.neg_class for p in parts]),
            parts[0].feature_shape,
        )


@torch.no_grad()
def logits_and_pairs(head: nn.Module, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """G(α) and its top-1 / top-2 classes."""
    logits = run_head(head, alpha)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"the head must map features to (N, num_classes >= 2) logits, got shape {tuple(logits.shape)}"
        )
    top = logits.topk(2, dim=1).indices
    return logits, top[:, 0], top[:, 1]


def decision_boundaries(
    head: nn.Module,
    alpha: Tensor,
    pos_class: Tensor | None = None,
    neg_class: Tensor | None = None,
    batch_size: int = 1024,
    check: bool = True,
) -> LinearBoundaries:
    """Exact LDBs of the piecewise-linear ``head`` at the points ``alpha`` (N, *feature_shape).

    Args:
        head: G, piecewise linear and in eval mode.
        alpha: feature points ψ(x).
        pos_class / neg_class: (N,) class pair per point; default the point's top-1 / top-2.
        batch_size: points per forward/backward pass (bounds memory, not a per-point loop).
        check: verify that the head is piecewise linear and in eval mode first.

    Returns:
        :class:`LinearBoundaries` with w = ∂(G_pos − G_neg)/∂α and b = (G_pos − G_neg)(α) − wᵀα.
    """
    if check:
        assert_piecewise_linear(head, require_eval=True)
    if alpha.dim() < 2:
        raise ValueError(
            f"alpha must be a batch (N, *feature_shape), got shape {tuple(alpha.shape)}"
        )
    if (pos_class is None) != (neg_class is None):
        raise ValueError("give both pos_class and neg_class, or neither (top-1 / top-2 then)")
    n = alpha.shape[0]
    ws, bs, ps, qs = [], [], [], []
    for start in range(0, n, batch_size):
        a = alpha[start : start + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = run_head(head, a)
            if pos_class is None:
                top = logits.detach().topk(2, dim=1).indices
                p, q = top[:, 0], top[:, 1]
            else:
                p = pos_class[start : start + batch_size].to(logits.device)
                q = neg_class[start : start + batch_size].to(logits.device)
            diff = logits.gather(1, p[:, None])[:, 0] - logits.gather(1, q[:, None])[:, 0]
            (w,) = torch.autograd.grad(diff.sum(), a)
        w = w.reshape(a.shape[0], -1)
        b = diff.detach() - (w * a.detach().reshape(a.shape[0], -1)).sum(1)
        ws.append(w)
        bs.append(b)
        ps.append(p)
        qs.append(q)
    return LinearBoundaries(
        torch.cat(ws), torch.cat(bs), torch.cat(ps), torch.cat(qs), tuple(alpha.shape[1:])
    )
