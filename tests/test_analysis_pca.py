"""PCA report: explained variance, choose_dim by threshold, fitted axes, variance kept."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.pca import (
    choose_dim,
    explained_variance_ratio,
    fit_pca,
    pca_report,
    variance_kept,
)


def axis_data(stds=(4.0, 2.0, 1.0), n_per_axis: int = 1) -> torch.Tensor:
    """Points ±s·e_i on each axis i: centred, variance along axis i ∝ s_i², axes = principal axes."""
    d = len(stds)
    rows = []
    for i, s in enumerate(stds):
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = s
        rows += [e, -e] * n_per_axis
    return torch.stack(rows)


def test_explained_variance_closed_form():
    x = axis_data((4.0, 2.0, 1.0))  # variances ∝ 16, 4, 1
    ratio = explained_variance_ratio(x)
    assert torch.allclose(
        ratio, torch.tensor([16.0, 4.0, 1.0], dtype=torch.float64) / 21, atol=1e-12
    )


def test_choose_dim_thresholds():
    r = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert choose_dim(r, 0.5) == 1
    assert choose_dim(r, 0.51) == 2
    assert choose_dim(r, 0.8) == 2  # exactly reached (float round-off tolerated)
    assert choose_dim(r, 0.95) == 3
    assert choose_dim(r, 1.0) == 4
    assert choose_dim([0.05, 0.15, 0.5, 0.3], 0.8) == 2  # any order: sorted first
    # zero-padded ratios (as a Reduction buffer holds them) are fine
    assert choose_dim(torch.tensor([0.9, 0.1, 0.0, 0.0]), 1.0) == 2


@pytest.mark.parametrize(
    ("ratios", "threshold", "match"),
    [
        ([0.5, 0.5], 0.0, r"fraction in \(0, 1\]"),
        ([0.5, 0.5], 1.5, r"fraction in \(0, 1\]"),
        ([0.5, 0.5], "high", r"fraction in \(0, 1\]"),
        ([], 0.9, "empty"),
        ([0.0, 0.0], 0.9, "all zero"),
        ([0.7, -0.1], 0.5, "non-negative"),
        ([3.0, 2.0], 0.5, "pass ratios, not variances"),
        ([0.5, 0.2], 0.9, "keep only 0.7000"),
    ],
)
def test_choose_dim_bad_input(ratios, threshold, match):
    with pytest.raises(ValueError, match=match):
        choose_dim(ratios, threshold)


@pytest.mark.parametrize("n_per_axis", [1, 20])  # N < D (Gram path) and N ≥ D (covariance path)
def test_fit_pca_recovers_axes_and_variance(n_per_axis):
    stds = (5.0, 3.0, 2.0, 1.0, 0.5, 0.25)
    x = axis_data(stds, n_per_axis)[:, [2, 0, 5, 1, 4, 3]] + 7.0  # permuted axes, shifted
    fit = fit_pca(x, dim=2)
    # top axes are e_1 (std 5) and e_3 (std 3) of the permuted coordinates, positive signs
    expected = torch.zeros(2, 6, dtype=torch.float64)
    expected[0, 1] = expected[1, 3] = 1.0
    assert torch.allclose(fit.components, expected, atol=1e-10)
    assert torch.allclose(fit.mean, torch.full((6,), 7.0, dtype=torch.float64), atol=1e-12)
    total = sum(s**2 for s in stds)
    assert fit.variance_kept == pytest.approx((25 + 9) / total, abs=1e-12)
    reduced = fit.transform(x)
    assert reduced.shape == (x.shape[0], 2)
    assert float(reduced.pow(2).sum() / (x - 7).pow(2).sum()) == pytest.approx(
        fit.variance_kept, abs=1e-12
    )


def test_gram_and_covariance_paths_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 40, generator=g, dtype=torch.float64) @ torch.randn(
        40, 40, generator=g, dtype=torch.float64
    )
    wide = explained_variance_ratio(x)  # N < D: Gram matrix
    stacked = torch.cat([x, x])  # same spectrum, N ≥ D: covariance
    tall = explained_variance_ratio(torch.cat([stacked, stacked, stacked, stacked]))
    assert wide.numel() == 11  # centring removes one axis
    assert torch.allclose(wide, tall[:11], atol=1e-10) and float(tall[11:].sum()) < 1e-10
    a, b = fit_pca(x, dim=3), fit_pca(torch.cat([x] * 4), dim=3)
    assert torch.allclose(a.components, b.components, atol=1e-8)


def test_wide_data_take_the_float32_path_with_the_same_answer():
    g = torch.Generator().manual_seed(0)
    # five orthonormal directions in 70 000 dims (disjoint supports): the spectrum and axes of
    # the data are those of the 64 × 5 coefficients
    basis = torch.zeros(5, 70_000, dtype=torch.float64)
    for i in range(5):
        basis[i, i * 14_000 : (i + 1) * 14_000] = torch.randn(
            14_000, generator=g, dtype=torch.float64
        )
    basis /= basis.norm(dim=1, keepdim=True)
    coeffs = torch.randn(64, 5, generator=g, dtype=torch.float64) * torch.tensor(
        [9.0, 5.0, 3.0, 2.0, 1.0]
    )
    x = (coeffs @ basis).float()  # 4.5 M entries: multiplied in float32
    _, sv, vh = torch.linalg.svd(coeffs - coeffs.mean(0), full_matrices=False)
    ratio = explained_variance_ratio(x)
    assert ratio.numel() == 5  # float32 round-off axes are not reported as variance
    assert torch.allclose(ratio, sv.pow(2) / sv.pow(2).sum(), atol=1e-5)
    fit = fit_pca(x, dim=2)
    axes = vh[:2] @ basis  # the true top-2 principal axes
    assert torch.allclose(
        (fit.components @ axes.T).abs(), torch.eye(2, dtype=torch.float64), atol=1e-4
    )


def test_fit_pca_by_threshold_and_dim_cut_to_rank():
    x = axis_data((4.0, 2.0, 1.0))
    fit = fit_pca(x, threshold=0.95)  # 16/21 = 0.76, 20/21 = 0.952
    assert fit.dim == 2 and fit.variance_kept == pytest.approx(20 / 21)
    assert fit_pca(x[:, :2], dim=5).dim == 2  # only two non-zero axes
    with pytest.raises(ValueError, match="exactly one of dim"):
        fit_pca(x, dim=2, threshold=0.9)
    with pytest.raises(ValueError, match="exactly one of dim"):
        fit_pca(x)


def test_variance_kept_by_any_linear_map():
    x = axis_data((4.0, 2.0, 1.0))
    # a map onto span{e1, e3}, non-orthonormal rows: keeps (16 + 1) / 21
    w = torch.tensor([[2.0, 0.0, 1.0], [1.0, 0.0, -1.0]])
    assert variance_kept(x, w) == pytest.approx(17 / 21, abs=1e-12)
    # rank-deficient map (a zero row, as a padded PCA holds): only the non-zero row counts
    w0 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert variance_kept(x, w0) == pytest.approx(4 / 21, abs=1e-12)
    with pytest.raises(ValueError, match=r"weight must be \(d, 3\)"):
        variance_kept(x, torch.ones(2, 4))


def test_pca_report_with_a_model_map():
    x = axis_data((4.0, 2.0, 1.0))
    w = torch.tensor([[0.0, 0.0, 1.0], [0.0, 3.0, 0.0]])  # keeps the 2nd and 3rd axes: 5/21
    rep = pca_report(x, threshold=0.9, weight=w).to_dict()
    assert rep["threshold_dim"] == 2 and rep["reduced_dim"] == 2
    assert rep["variance_kept"] == pytest.approx(5 / 21) and rep[
        "variance_kept_optimal"
    ] == pytest.approx(20 / 21)
    assert rep["cumulative"][-1] == pytest.approx(1.0)


def test_bad_features():
    with pytest.raises(ValueError, match="flatten to 2-D"):
        explained_variance_ratio(torch.randn(5))
    with pytest.raises(ValueError, match="at least two samples"):
        explained_variance_ratio(torch.randn(1, 4))
    with pytest.raises(ValueError, match="do not vary"):
        explained_variance_ratio(torch.ones(6, 3))
