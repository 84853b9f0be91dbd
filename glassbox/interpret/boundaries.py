"""Exact linear decision boundaries (LDBs) of a piecewise-linear head, for a whole batch.

Inside one activation pattern G(α) = W_α α + b_α exactly, so the boundary between classes
p and q at α is the hyperplane {z : wᵀz + b = 0} with

    w = ∂(G_p − G_q)/∂α = W_αᵀ (e_p − e_q),      b = (G_p(α) − G_q(α)) − wᵀα.

``W_αᵀ (e_p − e_q)`` is the masked product of the head's weights, W₁ᵀ D₁ W₂ᵀ D₂ ⋯ (e_p − e_q),
with the ReLU / max-pool selections D fixed by α. Only this ONE vector per point is needed,
so it is evaluated right to left for the whole batch at once, without autograd:

- one recorded forward pass (no graph) gives the logits, the class pairs and each layer's
  pattern (ReLU outputs, max-pool argmax indices);
- the reverse pass starts from W_last[p] − W_last[q] (B × D, a gather, no GEMM), applies each
  ReLU mask, multiplies by each Linear weight as one GEMM per layer (B×out @ out×in), routes
  through max-pools by scattering to the recorded argmax, through average pools as their
  fixed linear adjoint, and through eval-mode BatchNorm as a per-channel scale;
- b then follows from the forward values.

Layers without a fast rule (convolutions, PReLU, Hardtanh, 1-D/3-D and adaptive max pools,
registered custom modules) fall back to autograd on that layer alone, still for the whole
batch: the head treats samples independently in eval mode, so the batched vector-Jacobian
product of the layer is exactly the per-point one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError
from glassbox.interpret.split import _has_inplace, _head_leaves, assert_piecewise_linear, run_head
from glassbox.runtime.devices import full_precision

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
        raise AnalysisInputError(
            f"the head must map features to (N, num_classes >= 2) logits, got shape {tuple(logits.shape)}"
        )
    top = logits.topk(2, dim=1).indices
    return logits, top[:, 0], top[:, 1]


# An adjoint maps the gradient at a layer's output to the gradient at its input (g ↦ Jᵀg,
# with J the layer's Jacobian at the recorded point); None is the identity.
_Adjoint = Callable[[Tensor], Tensor] | None


# Leaves with J x = y at every point (so ⟨Jᵀg, x⟩ = ⟨g, y⟩); see `_boundaries_of_batch`.
_HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)


def _record(module: nn.Module, x: Tensor) -> tuple[Tensor, _Adjoint, Tensor | None]:
    """Run one leaf on the batch ``x`` without a graph and return (output, adjoint, weight).

    ``weight`` is set for an ``nn.Linear`` (its adjoint is g ↦ g W, and the reverse pass can
    start from two of its rows). Layers without a fast rule use autograd on that layer alone.
    Never modifies ``x`` (which may be the caller's tensor).
    """
    if isinstance(module, nn.Linear):
        weight = module.weight
        return F.linear(x, weight, module.bias), lambda g: g.matmul(weight), weight
    if isinstance(module, nn.ReLU):
        y = torch.relu(x)  # out of place even for ReLU(inplace=True): x may be the caller's
        return y, lambda g: torch.ops.aten.threshold_backward(g, y, 0), None
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        y = F.leaky_relu(x, slope)
        return y, lambda g: torch.ops.aten.leaky_relu_backward(g, x, slope, False), None
    if isinstance(module, nn.Identity) or (
        isinstance(module, nn.modules.dropout._DropoutNd) and not module.training
    ):
        return x, None, None
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        shape = x.shape
        return module(x), lambda g: g.reshape(shape), None
    if (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not module.training
        and module.running_var is not None
        and x.dim() >= 2
    ):
        scale = (module.running_var + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        scale = scale.reshape(-1, *([1] * (x.dim() - 2)))
        return module(x), lambda g: g * scale, None
    if isinstance(module, nn.MaxPool2d) and not module.return_indices and x.dim() == 4:
        return _max_pool2d(module, x)
    if isinstance(module, nn.AdaptiveAvgPool2d) and x.dim() == 4:
        size = module.output_size
        size = (size, size) if isinstance(size, int) else size
        size = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(size))
        if size == tuple(x.shape[2:]):  # one element per window: exactly the identity
            return x, None, None
        y = module(x)
        return y, lambda g: torch.ops.aten._adaptive_avg_pool2d_backward(g.contiguous(), x), None
    return _fallback(module, x)


def _max_pool2d(module: nn.MaxPool2d, x: Tensor) -> tuple[Tensor, _Adjoint, None]:
    """Max-pool recording the argmax of every window; the adjoint scatters g back to it.

    The pooling runs in channels-last layout: on CPU that kernel is ~10× faster than the
    NCHW one for small maps, with the same values and (first-maximum) indices.
    """
    b, c, h, w = x.shape
    y, idx = F.max_pool2d(
        x.contiguous(memory_format=torch.channels_last),
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        ceil_mode=module.ceil_mode,
        return_indices=True,
    )
    y = y.contiguous()  # idx stays channels-last: (B, C, Ho·Wo) is still a view of it

    def adjoint(g: Tensor) -> Tensor:
        out = g.new_zeros(b, c, h * w)  # windows may overlap: accumulate like autograd
        out.scatter_add_(2, idx.reshape(b, c, -1), g.reshape(b, c, -1))
        return out.reshape(b, c, h, w)

    return y, adjoint, None


def _fallback(module: nn.Module, x: Tensor) -> tuple[Tensor, _Adjoint, None]:
    """Any other piecewise-linear leaf: its batched vector-Jacobian product by autograd."""
    xi = x.detach().requires_grad_(True)
    with torch.enable_grad():
        # An in-place leaf must not overwrite x (maybe the caller's tensor) nor the graph leaf.
        y = module(xi.clone() if _has_inplace(module) else xi)

    def adjoint(g: Tensor) -> Tensor:
        if not y.requires_grad:  # output independent of the input
            return torch.zeros_like(xi)
        (gi,) = torch.autograd.grad(y, xi, g, allow_unused=True)
        return torch.zeros_like(xi) if gi is None else gi

    return y.detach(), adjoint, None


@torch.no_grad()
def _boundaries_of_batch(
    leaves: list[nn.Module], a: Tensor, p: Tensor | None, q: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    tape: list[tuple[_Adjoint, Tensor | None]] = []
    # wᵀα is taken at the input of the first leaf that is not positively homogeneous at its
    # pattern (J x = y: ReLU/LeakyReLU, max-pool selections, reshapes, identities): there
    # ⟨g, x⟩ = ⟨w, α⟩ exactly, on fewer entries (e.g. after a max-pool).
    dot_at, dot_x = None, a
    x = a
    for i, module in enumerate(leaves):
        if dot_at is None and not isinstance(module, _HOMOGENEOUS):
            dot_at, dot_x = i, x
        x, adjoint, weight = _record(module, x)
        tape.append((adjoint, weight))
    logits = x
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise AnalysisInputError(
            f"the head must map features to (N, num_classes >= 2) logits, got shape {tuple(logits.shape)}"
        )
    if p is None:
        top = logits.topk(2, dim=1).indices
        p, q = top[:, 0], top[:, 1]
    else:
        p, q = p.to(logits.device), q.to(logits.device)
    diff = logits.gather(1, p[:, None])[:, 0] - logits.gather(1, q[:, None])[:, 0]
    # Reverse pass of the single vector e_p − e_q per point. Until the first layer that needs
    # it as a tensor, it stays implicit; a Linear then turns it into W[p] − W[q] (no GEMM).
    g: Tensor | None = None
    wa: Tensor | None = None
    for i in range(len(tape) - 1, -1, -1):
        adjoint, weight = tape[i]
        if g is None and adjoint is not None and weight is not None:
            g = weight.index_select(0, p) - weight.index_select(0, q)
        elif g is None and adjoint is not None:
            g = torch.zeros_like(logits)
            g.scatter_(1, p[:, None], 1.0)
            g.scatter_add_(1, q[:, None], torch.full_like(diff[:, None], -1.0))
            g = adjoint(g)
        elif adjoint is not None:
            g = adjoint(g)
        if i == dot_at and g is not None:
            wa = torch.linalg.vecdot(g.reshape(len(g), -1), dot_x.reshape(len(g), -1))
    if g is None:  # the head is the identity on (N, classes) features
        g = torch.zeros_like(logits)
        g.scatter_(1, p[:, None], 1.0)
        g.scatter_add_(1, q[:, None], torch.full_like(diff[:, None], -1.0))
    w = g.reshape(a.shape[0], -1)
    if w.data_ptr() == a.data_ptr():  # never hand out a view of the caller's tensor
        w = w.clone()
    if wa is None:
        wa = torch.linalg.vecdot(w, a.reshape(a.shape[0], -1))
    b = diff - wa
    return w, b, p, q


@full_precision()  # exact arithmetic even inside a 16-mixed autocast region
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
        batch_size: points per forward/reverse pass (bounds memory, not a per-point loop).
        check: verify that the head is piecewise linear and in eval mode first.

    Returns:
        :class:`LinearBoundaries` with w = ∂(G_pos − G_neg)/∂α and b = (G_pos − G_neg)(α) − wᵀα.
    """
    if check:
        assert_piecewise_linear(head, require_eval=True)
    if alpha.dim() < 2:
        raise AnalysisInputError(
            f"alpha must be a batch (N, *feature_shape), got shape {tuple(alpha.shape)}"
        )
    if (pos_class is None) != (neg_class is None):
        raise AnalysisInputError(
            "give both pos_class and neg_class, or neither (top-1 / top-2 then)"
        )
    leaves = [m for _, m in _head_leaves(head, None)]
    alpha = alpha.detach()
    n = alpha.shape[0]
    parts = []
    for start in range(0, n, batch_size):
        stop = start + batch_size
        p = None if pos_class is None else pos_class[start:stop]
        q = None if neg_class is None else neg_class[start:stop]
        parts.append(_boundaries_of_batch(leaves, alpha[start:stop], p, q))
    if len(parts) == 1:
        w, b, p, q = parts[0]
    else:
        w, b, p, q = (torch.cat(t) for t in zip(*parts))
    return LinearBoundaries(w, b, p, q, tuple(alpha.shape[1:]))
