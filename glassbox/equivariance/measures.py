"""Equivariance measures of one layer's features (Lenc & Vedaldi, "Understanding image
representations by measuring their equivariance and equivalence", CVPR 2015; Gruver et al.,
"The Lie derivative for measuring learned equivariance", ICLR 2023).

Every error is relative over the whole batch, ‖·‖ / ‖φ(x)‖, not an average of per-image
ratios (tiny norms would dominate). Functions return 0-d tensors so a caller can compute
many of them and synchronise with the device once.

- invariance   ‖φ(g·x) − φ(x)‖
- equivariance ‖φ(g·x) − ρ(g)φ(x)‖, ρ = the known action (spatial and fibre, e2cnn)
- spatial      ‖φ(g·x) − S_g φ(x)‖, S_g = the spatial transform, channels untouched
- best_fit     ‖φ(g·x) − (M_g S_g φ(x) + b_g)‖ on held-out images, M_g and b_g the least-squares
               affine channel map (a 1×1 convolution with bias) fitted on the other images
               (Lenc & Vedaldi)
- lie_derivative ‖d/dt ρ(g_−t) φ(g_t·x)‖ at t = 0 for continuous rotation (Gruver et al.)
- consistency  fraction of images whose predicted class is unchanged (a score, not an error)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from glassbox.equivariance.actions import known_action, spatial_action
from glassbox.equivariance.groups import GroupElement, rotation_generator
from glassbox.errors import AnalysisInputError


def relative_error(
    estimate: torch.Tensor, target: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """‖estimate − target‖ / ‖reference‖ as a 0-d tensor (0 when the difference is 0)."""
    num = torch.linalg.vector_norm(estimate - target)
    return _ratio(num, torch.linalg.vector_norm(reference))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # 0/0 is a perfect match (e.g. a dead layer); x/0 is an unbounded error
    return torch.where(num == 0, torch.zeros_like(num), num / den)


def invariance_error(f_x: torch.Tensor, f_gx: torch.Tensor) -> torch.Tensor:
    """‖φ(g·x) − φ(x)‖ / ‖φ(x)‖."""
    return relative_error(f_gx, f_x, f_x)


def equivariance_error(f_x, f_gx, element: GroupElement, exact: str = "error") -> torch.Tensor:
    """‖φ(g·x) − ρ(g)φ(x)‖ / ‖φ(x)‖ with the known action (GeometricTensor or plain tensor)."""
    ref = f_x.tensor if hasattr(f_x, "tensor") else f_x
    target = f_gx.tensor if hasattr(f_gx, "tensor") else f_gx
    return relative_error(target, known_action(f_x, element, exact), ref)


def spatial_error(
    f_x: torch.Tensor, f_gx: torch.Tensor, element: GroupElement, exact: str = "error"
) -> torch.Tensor:
    """‖φ(g·x) − S_g φ(x)‖ / ‖φ(x)‖ for (B, C, H, W) maps (channels untouched)."""
    return relative_error(f_gx, spatial_action(f_x, element, exact), f_x)


def split_sizes(batch: int, fit_fraction: float) -> tuple[int, int]:
    """(fit, held-out) image counts; both must be positive."""
    if not 0.0 < fit_fraction < 1.0:
        raise AnalysisInputError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    if batch < 2:
        raise AnalysisInputError(
            f"the best-fit measure needs >= 2 images (a fit and a held-out split), got {batch}"
        )
    n_fit = min(max(1, round(batch * fit_fraction)), batch - 1)
    return n_fit, batch - n_fit


def channel_gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ over images and positions of a[:, i] b[:, j] for (N, C, H, W) maps → (C_a, C_b)."""
    a2 = a.reshape(a.shape[0], a.shape[1], -1)
    b2 = b.reshape(b.shape[0], b.shape[1], -1)
    return torch.einsum("nip,njp->ij", a2, b2)


def with_ones(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps with a constant-1 channel appended: (N, C + 1, H, W). A linear map of
    these is an affine map of the original channels (its last row is the intercept)."""
    return torch.cat([maps, torch.ones_like(maps[:, :1])], dim=1)


class ChannelMapFit:
    """:func:`fit_channel_map` for one Gram matrix and any number of cross products: the
    float64 system is factored once (one LU per layer serves every group element)."""

    def __init__(self, gram: torch.Tensor, ridge: float = 1e-8) -> None:
        g = gram.double()
        c = g.shape[0] - 1
        self.lam = ridge * torch.clamp(
            torch.diagonal(g)[:c].mean(), min=torch.finfo(torch.float64).tiny
        )
        self.eye = torch.eye(c + 1, c, dtype=g.dtype, device=g.device)  # I on W's rows, 0 on b's
        self.lu = torch.linalg.lu_factor(g + self.lam * torch.diag(self.eye.sum(1)))

    def __call__(self, cross: torch.Tensor) -> torch.Tensor:
        w = torch.linalg.lu_solve(*self.lu, cross.double() + self.lam * self.eye)
        return w.to(cross.dtype)


def fit_channel_map(gram: torch.Tensor, cross: torch.Tensor, ridge: float = 1e-8) -> torch.Tensor:
    """The affine channel map [W; b] minimising ‖Y − X W − 1 bᵀ‖² + λ‖W − I‖², solved in float64.

    ``gram`` and ``cross`` are the products of the features augmented with a constant-1
    channel (:func:`with_ones`): G = [X 1]ᵀ[X 1] ((C+1, C+1)) and K = [X 1]ᵀ Y ((C+1, C)) —
    or a batch (E, C+1, C) of K. Returns (C+1, C) (or (E, C+1, C)): rows 0..C−1 are W, the
    last row the intercept b. The ridge pulls W towards the identity (channels untouched, the
    spatial-only hypothesis) rather than towards 0, so an exactly equivariant layer gets W = I
    and error 0 even when the fit is underdetermined (more channels than fitting samples,
    e.g. after global pooling); the intercept is not regularised (a constant offset, such as a
    conv's bias, costs nothing). λ = ``ridge`` × mean of the channels' diagonal of G. Centre
    X first (subtract its channel means: the same map, with the intercept moved): G is then
    block-diagonal and the solve as well conditioned as a linear fit's.
    """
    return ChannelMapFit(gram, ridge)(cross)


def best_fit_error(
    f_x: torch.Tensor,
    f_gx: torch.Tensor,
    element: GroupElement | None = None,
    *,
    transformed: torch.Tensor | None = None,
    fit_fraction: float = 0.5,
    ridge: float = 1e-8,
    gram: torch.Tensor | None = None,
    exact: str = "error",
) -> torch.Tensor:
    """Held-out error of the best affine channel map after the spatial transform.

    Fits M_g and b_g (:func:`fit_channel_map`) on the first ``fit_fraction`` of the images,
    reports ‖φ(g·x) − (M_g S_g φ(x) + b_g)‖ / ‖φ(x)‖ on the rest. Pass ``transformed`` =
    S_g φ(x) and the fit split's Gram matrix of ``with_ones(transformed − its fit mean)`` to
    reuse them (for
    a pixel permutation the Gram of S_g φ(x) equals that of φ(x), so one Gram serves every
    exact element).
    """
    if f_x.dim() != 4:
        raise AnalysisInputError(
            f"best_fit needs (B, C, H, W) feature maps, got shape {tuple(f_x.shape)}"
        )
    if transformed is None:
        transformed = spatial_action(f_x, element, exact)
    n_fit, _ = split_sizes(f_x.shape[0], fit_fraction)
    # centred by the fit split's channel means: the same affine map, a well-conditioned system
    x = with_ones(transformed - transformed[:n_fit].mean((0, 2, 3), keepdim=True))
    x_fit, x_test = x[:n_fit], x[n_fit:]
    y_fit, y_test = f_gx[:n_fit], f_gx[n_fit:]
    if gram is None:
        gram = channel_gram(x_fit, x_fit)
    w = fit_channel_map(gram, channel_gram(x_fit, y_fit), ridge)
    pred = torch.einsum("nihw,ij->njhw", x_test, w)
    return relative_error(pred, y_test, f_x[n_fit:])


def prediction_consistency(logits_x: torch.Tensor, logits_gx: torch.Tensor) -> torch.Tensor:
    """Fraction of images whose arg-max class is the same for x and g·x."""
    return (logits_x.argmax(-1) == logits_gx.argmax(-1)).float().mean()


def lie_derivative_norms(
    fn: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    images: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Relative Lie derivatives of the outputs of ``fn`` under continuous rotation.

    For each output f = φ(x) returns ‖J_φ(x)[L x] − L f‖ / ‖f‖, where L is
    :func:`~glassbox.equivariance.groups.rotation_generator` on (…, H, W) maps and 0 on
    vectors (a vector's known action is trivial). This is d/dt ρ(g_−t) φ(g_t·x) at t=0,
    computed with one forward-mode pass (``torch.func.jvp``). Units: per radian.
    Returns (values, outputs).
    """
    # forward-mode AD needs autograd on, even when called under no_grad / inference_mode
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone()
        tangent = rotation_generator(x)
        outs, douts = torch.func.jvp(lambda inp: tuple(fn(inp)), (x,), (tangent,))
    values = []
    for f, df in zip(outs, douts):
        lie = df - rotation_generator(f) if f.dim() == 4 else df
        values.append(_ratio(torch.linalg.vector_norm(lie), torch.linalg.vector_norm(f)))
    return values, list(outs)
