"""PCA for the dimension-reduction layer: explained variance, choosing the dimension by a
variance threshold, and the variance a given linear map actually keeps.

The glass-box model reduces its invariant representation with PCA (Manaswini & Bhatt,
"Towards glass-box CNNs", arXiv 2101.10443). These
functions are pure torch so the model can call them (:func:`choose_dim` to pick
``reduced_dim`` from a threshold) and the report can check the fitted map
(:func:`variance_kept`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from glassbox.errors import AnalysisInputError, AnalysisTypeError

# Above this many entries the centred data are multiplied in float32 (the eigenproblem stays
# float64): a 1000 × 65536 conv layer would otherwise need half a gigabyte and twice the time
# in float64, for principal axes that a linear probe does not need to more digits.
_FLOAT64_MAX_ENTRIES = 2**22
_TOL = 1e-6  # float32 ratios sum to 1 only up to ~1e-7


def _as_2d(features: Tensor, what: str = "features") -> Tensor:
    if not isinstance(features, Tensor):
        raise AnalysisTypeError(f"{what} must be a tensor (N, ...), got {type(features).__name__}")
    if features.ndim < 2:
        raise AnalysisInputError(
            f"{what} must be (N, ...) so that they flatten to 2-D (N, D); got shape {tuple(features.shape)}"
        )
    x = features.reshape(features.shape[0], -1)
    if x.shape[0] < 2:
        raise AnalysisInputError(f"PCA needs at least two samples, got {x.shape[0]}")
    return x


def _centred(features: Tensor) -> tuple[Tensor, Tensor]:
    x = _as_2d(features)
    dtype = torch.float64 if x.numel() <= _FLOAT64_MAX_ENTRIES else torch.float32
    x = x.to(dtype)
    mean = x.mean(0)
    return x - mean, mean


def _spectrum(xc: Tensor, need_vectors: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """Non-zero eigenvalues of XᵀX (descending), optionally its eigenvectors (D, r), and ‖X‖²_F.

    Uses the D×D covariance when N ≥ D and the N×N Gram matrix otherwise (cheaper for wide
    layers); both give the same non-zero spectrum. Eigenvectors of the Gram path are mapped
    back lazily (see :func:`_axes`), so only the axes asked for cost a product with X.
    """
    n, d = xc.shape
    total = xc.double().pow(2).sum()
    gram = (xc @ xc.T if n < d else xc.T @ xc).double()
    if need_vectors:
        vals, vecs = torch.linalg.eigh(gram)
        vals, vecs = vals.flip(0), vecs.flip(1)
    else:
        vals, vecs = torch.linalg.eigvalsh(gram).flip(0), None
    # numerically zero axes (centring removes one; rank-deficient data more) carry no variance;
    # "zero" is relative to the round-off of the precision the product was formed in
    rel = 1e-12 if xc.dtype == torch.float64 else 1e-5
    keep = vals > vals[0] * rel if vals[0] > 0 else torch.zeros_like(vals, dtype=torch.bool)
    vals = vals[keep]
    return vals, (vecs[:, keep] if vecs is not None else None), total


def _axes(xc: Tensor, vals: Tensor, vecs: Tensor, k: int) -> Tensor:
    """The first k principal axes as columns (D, k) from :func:`_spectrum`'s eigenvectors."""
    if vecs.shape[0] == xc.shape[1]:  # covariance path: already the axes
        return vecs[:, :k]
    # Gram path: right singular vectors from the left ones, v = Xᵀu / σ
    return (xc.T @ vecs[:, :k].to(xc.dtype)).double() / vals[:k].sqrt()


def explained_variance_ratio(features: Tensor) -> Tensor:
    """Fraction of the total variance along each principal axis, descending (float64).

    ``features`` (N, ...) are flattened to (N, D); the result has one entry per non-zero
    principal axis (at most min(N - 1, D)) and sums to 1 (zero-variance axes are left out).
    """
    xc, _ = _centred(features)
    vals, _, total = _spectrum(xc, need_vectors=False)
    if total <= 0:
        raise AnalysisInputError(
            "the features do not vary (total variance 0): there is nothing for PCA to explain"
        )
    return vals / total


def choose_dim(explained_variance_ratio: Tensor | list[float], threshold: float) -> int:
    """The smallest d whose top-d principal components keep at least ``threshold`` of the variance.

    Args:
        explained_variance_ratio: per-component fractions of the variance (any order; sorted
            here), e.g. ``Reduction.explained_variance_ratio`` or sklearn's attribute.
        threshold: fraction in (0, 1], e.g. 0.95.

    Raises:
        ValueError: threshold outside (0, 1]; ratios empty, negative, non-finite, all zero, or
            covering less than ``threshold`` of the variance in total (a truncated spectrum).
    """
    r = torch.as_tensor(explained_variance_ratio, dtype=torch.float64).flatten()
    given = threshold
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 < threshold <= 1.0:
        raise AnalysisInputError(
            f"variance threshold must be a fraction in (0, 1], e.g. 0.95; got {given!r}"
        )
    if r.numel() == 0:
        raise AnalysisInputError("explained_variance_ratio is empty")
    if not torch.isfinite(r).all() or (r < -_TOL).any():
        raise AnalysisInputError(
            "explained_variance_ratio must be finite and non-negative (fractions of the variance)"
        )
    if r.sum() <= 0:
        raise AnalysisInputError(
            "explained_variance_ratio is all zero: the PCA was not fitted (or the data do not vary)"
        )
    if r.sum() > 1.0 + 1e-6:
        raise AnalysisInputError(
            f"explained_variance_ratio sums to {float(r.sum()):.6f} > 1: pass ratios, not variances "
            "(divide by the total variance)"
        )
    cum = r.sort(descending=True).values.clamp_min(0).cumsum(0)
    if cum[-1] < threshold - _TOL:
        raise AnalysisInputError(
            f"the given components keep only {float(cum[-1]):.4f} of the variance < threshold {threshold}: "
            "pass the full spectrum (every component) or lower the threshold"
        )
    return (
        int(torch.searchsorted(cum, torch.tensor([threshold - _TOL], dtype=torch.float64))[0]) + 1
    )


@dataclass
class PCAFit:
    """A fitted PCA: ``reduced = (x - mean) @ components.T``."""

    mean: Tensor  # (D,) float64
    components: Tensor  # (dim, D) float64, orthonormal rows, sign-fixed
    explained_variance_ratio: Tensor  # (r,) every non-zero axis, descending
    dim: int
    variance_kept: float  # Σ of the first ``dim`` ratios

    def transform(self, features: Tensor) -> Tensor:
        x = features.reshape(features.shape[0], -1)
        return ((x.to(self.components.dtype) - self.mean) @ self.components.T).to(features.dtype)


def fit_pca(features: Tensor, dim: int | None = None, threshold: float | None = None) -> PCAFit:
    """Fit PCA on ``features`` (N, ...) with ``dim`` components, or as many as ``threshold`` needs.

    Exactly one of ``dim`` / ``threshold`` must be given. ``dim`` larger than the number of
    non-zero axes (at most N - 1) is cut to that number. Each axis is sign-fixed (largest
    |loading| positive) so that fits are deterministic.
    """
    if (dim is None) == (threshold is None):
        raise AnalysisInputError(
            "give exactly one of dim (number of components) or threshold (variance fraction)"
        )
    xc, mean = _centred(features)
    vals, vecs, total = _spectrum(xc, need_vectors=True)
    if total <= 0:
        raise AnalysisInputError(
            "the features do not vary (total variance 0): there is nothing for PCA to fit"
        )
    ratio = vals / total
    if threshold is not None:
        dim = choose_dim(ratio, threshold)
    elif not isinstance(dim, int) or dim < 1:
        raise AnalysisInputError(f"dim must be a positive int, got {dim!r}")
    dim = min(dim, int(vals.numel()))
    comps = _axes(xc, vals, vecs, dim).T.contiguous()
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
    return PCAFit(mean.double(), comps, ratio, dim, float(ratio[:dim].sum()))


def variance_kept(features: Tensor, weight: Tensor) -> float:
    """Fraction of the variance of ``features`` (N, D) that a linear map ``weight`` (d, D) keeps.

    This is the variance of the orthogonal projection onto the row space of ``weight`` — what
    survives the map up to an invertible change of coordinates — so it is the same number for
    a fitted PCA map, a fine-tuned one or any learned ``nn.Linear``. For the top-d PCA axes of
    the same data it equals the sum of the first d explained-variance ratios.
    """
    xc, _ = _centred(features)
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != xc.shape[1]:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise AnalysisInputError(
            f"weight must be (d, {xc.shape[1]}) to act on these features, got {shape}"
        )
    _, s, vh = torch.linalg.svd(weight.detach().double().cpu(), full_matrices=False)
    basis = vh[s > s.max() * 1e-10] if s.numel() and s.max() > 0 else vh[:0]
    total = xc.double().pow(2).sum()
    if total <= 0:
        raise AnalysisInputError("the features do not vary (total variance 0): no variance to keep")
    kept = (xc.cpu() @ basis.T.to(xc.dtype)).double().pow(2).sum()
    return float(kept / total)


@dataclass
class PCAReport:
    """Explained-variance curve, the dimension a threshold picks, and the variance kept."""

    explained_variance_ratio: list[float]
    threshold: float | None = None
    threshold_dim: int | None = None
    reduced_dim: int | None = None  # rank of the model's map, when one is given
    variance_kept: float | None = None  # by the model's map, on these features
    variance_kept_optimal: float | None = None  # by the top reduced_dim PCA axes of these features
    extra: dict = field(default_factory=dict)

    @property
    def cumulative(self) -> list[float]:
        return torch.tensor(self.explained_variance_ratio, dtype=torch.float64).cumsum(0).tolist()

    def to_dict(self) -> dict:
        return {
            "explained_variance_ratio": self.explained_variance_ratio,
            "cumulative": self.cumulative,
            "threshold": self.threshold,
            "threshold_dim": self.threshold_dim,
            "reduced_dim": self.reduced_dim,
            "variance_kept": self.variance_kept,
            "variance_kept_optimal": self.variance_kept_optimal,
            **self.extra,
        }


def pca_report(
    features: Tensor, threshold: float | None = 0.95, weight: Tensor | None = None
) -> PCAReport:
    """PCA report of ``features`` (N, D): the curve, ``choose_dim`` at ``threshold``, and — if a
    reduction map ``weight`` (d, D) is given — the variance it keeps next to the best possible
    with as many dimensions."""
    ratio = explained_variance_ratio(features)
    report = PCAReport(ratio.tolist(), threshold=threshold)
    if threshold is not None:
        report.threshold_dim = choose_dim(ratio, threshold)
    if weight is not None:
        report.variance_kept = variance_kept(features, weight)
        rank = int(torch.linalg.matrix_rank(weight.detach().double().cpu()))
        report.reduced_dim = rank
        report.variance_kept_optimal = float(ratio[:rank].sum())
    return report
