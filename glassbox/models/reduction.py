"""The dimension-reduction layer: a linear map, learnable or fitted by PCA."""

from __future__ import annotations

import torch
from torch import nn

from glassbox.errors import ConfigError
from glassbox.runtime.devices import full_precision

REDUCTIONS = ("linear", "pca")


class Reduction(nn.Module):
    """``reduced = linear(features)``.

    Modes:
        ``linear``: an ordinary learnable ``nn.Linear``.
        ``pca``: the map is set by :meth:`fit` to the top principal components of the training
            representations (projection onto them, centred), then frozen (``trainable=False``)
            or fine-tuned (``trainable=True``). ``fitted`` is a buffer, so a resumed or loaded
            model is not re-fitted.

    ``variance_threshold`` (pca only): keep the fewest leading components that explain at least
    this fraction of the variance (at most ``out_dim``); the remaining outputs are masked to zero,
    so the classifier's input size stays ``out_dim``. ``kept_dim`` and ``variance_kept`` record it.
    """

    piecewise_linear = True  # an affine map (times a 0/1 mask): exact for decision boundaries

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        mode: str = "pca",
        trainable: bool = False,
        variance_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in REDUCTIONS:
            raise ConfigError(f"unknown reduction {mode!r}; use one of {', '.join(REDUCTIONS)}")
        if not 1 <= out_dim <= in_dim:
            raise ConfigError(
                f"reduced_dim={out_dim} must be between 1 and the representation size {in_dim}; "
                "lower model.net.reduced_dim or widen the last representation block"
            )
        if variance_threshold is not None and (
            mode != "pca" or not 0.0 < variance_threshold <= 1.0
        ):
            raise ConfigError(
                f"variance_threshold={variance_threshold} needs reduction=pca and a fraction in (0, 1], e.g. 0.95"
            )
        self.mode, self.trainable, self.variance_threshold = mode, trainable, variance_threshold
        self.linear = nn.Linear(in_dim, out_dim)
        self.register_buffer("fitted", torch.tensor(mode != "pca"))
        self.register_buffer("explained_variance_ratio", torch.zeros(in_dim))
        self.register_buffer("mask", torch.ones(out_dim))
        if mode == "pca" and not trainable:
            self.linear.requires_grad_(False)

    @property
    def needs_fit(self) -> bool:
        return self.mode == "pca" and not bool(self.fitted)

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> torch.Tensor:
        """Set the map to PCA of ``features`` (N, in_dim); return the explained-variance ratios.

        The fit runs on ``features``' device, in float64 (or the features' own dtype when it is
        wider), outside autocast, whatever the trainer's precision; the results are then copied
        into the layer's parameters and buffers in their own device and dtype."""
        if features.ndim != 2 or features.shape[1] != self.linear.in_features:
            raise ConfigError(
                f"PCA expects (N, {self.linear.in_features}) features, got {tuple(features.shape)}"
            )
        if features.shape[0] < 2:
            raise ConfigError("PCA needs at least two training samples")
        dtype = torch.promote_types(features.dtype, torch.float64)
        with full_precision():
            return self._fit(features.to(dtype))

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(0)
        # Eigen-decomposition of the covariance: rows of V^T are the principal axes.
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        var = s**2
        ratio = var / var.sum().clamp_min(1e-30)
        k = self.linear.out_features
        components = x.new_zeros(k, x.shape[1])
        components[: min(k, vt.shape[0])] = vt[:k]
        # Fix each axis's sign (largest |loading| positive) so the fit is deterministic.
        sign = (
            torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True))).clamp_min(0)
            * 2
            - 1
        )
        components = components * sign
        self.linear.weight.copy_(components.to(self.linear.weight))
        self.linear.bias.copy_((-components @ mean).to(self.linear.bias))
        ratios = torch.zeros_like(self.explained_variance_ratio)
        ratios[: ratio.numel()] = ratio.to(ratios)
        self.explained_variance_ratio.copy_(ratios)
        if self.variance_threshold is not None:
            from glassbox.analysis.pca import choose_dim

            self.mask.zero_()[: min(k, choose_dim(ratios, self.variance_threshold))] = 1.0
        self.fitted.fill_(True)
        return ratios

    @property
    def kept_dim(self) -> int:
        return int(self.mask.sum())

    @property
    def variance_kept(self) -> float:
        """Fraction of the fitted representations' variance the kept components explain."""
        return float(self.explained_variance_ratio[: self.kept_dim].sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out if self.variance_threshold is None else out * self.mask

    def extra_repr(self) -> str:
        return f"mode={self.mode}, trainable={self.trainable}"
