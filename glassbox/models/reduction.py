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
            model is not re-fitted. ``refit_epoch`` (a buffer, -1 until then) records the training
            epoch at whose start the map was refitted on the trained representation (see
            ``ClassificationModule``'s ``pca_refit_fraction``).

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
        self.register_buffer("refit_epoch", torch.tensor(-1))
        self._register_load_state_dict_pre_hook(_default_refit_epoch)
        if mode == "pca" and not trainable:
            self.linear.requires_grad_(False)

    @property
    def needs_fit(self) -> bool:
        return self.mode == "pca" and not bool(self.fitted)

    @property
    def refitted(self) -> bool:
        return int(self.refit_epoch) >= 0

    @torch.no_grad()
    def fit(self, features: torch.Tensor, carry: nn.Linear | None = None) -> torch.Tensor:
        """Set the map to PCA of ``features`` (N, in_dim); return the explained-variance ratios.

        ``carry``: the layer that reads this one's output (the classifier's first ``nn.Linear``)
        is re-expressed in the new basis, so that the composition changes as little as
        possible: the old reduced features are, up to the variance the new components drop,
        an affine function of the new ones (``x ≈ mean + Vᵀ y_new``, so ``y_old ≈ W_old Vᵀ
        y_new + W_old mean + b_old``, which is also their least-squares regression on
        ``y_new``), and ``carry`` absorbs that map.

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
        if carry is not None and carry.in_features != self.linear.out_features:
            raise ConfigError(
                f"the layer after the reduction takes {carry.in_features} inputs, not the "
                f"reduction's {self.linear.out_features}: pass the classifier's first nn.Linear"
            )
        with full_precision():
            x = features.to(dtype)
            old = None
            if carry is not None:  # the current map, before the fit overwrites it
                old = (
                    self.linear.weight.to(dtype, copy=True),
                    self.linear.bias.to(dtype, copy=True),
                    self._out_mask().to(dtype, copy=True),
                )
            ratios, components, mean = self._fit(x)
            if old is not None:
                self._carry(carry, components, mean, *old)
            return ratios

    def _out_mask(self) -> torch.Tensor:
        return self.mask if self.variance_threshold is not None else torch.ones_like(self.mask)

    def _carry(
        self,
        nxt: nn.Linear,
        v: torch.Tensor,
        mean: torch.Tensor,
        w_old: torch.Tensor,
        b_old: torch.Tensor,
        m_old: torch.Tensor,
    ) -> None:
        # v (k, in): the new components, orthonormal rows (zero rows past the rank); mean (in,)
        dtype = v.dtype
        m_new = self._out_mask().to(dtype)
        change = m_old[:, None] * (w_old @ v.T) * m_new[None, :]  # y_old ≈ change @ y_new + shift
        shift = m_old * (w_old @ mean + b_old)
        a = nxt.weight.to(dtype, copy=True)
        nxt.weight.copy_((a @ change).to(nxt.weight))
        if nxt.bias is not None:
            nxt.bias.copy_((nxt.bias.to(dtype) + a @ shift).to(nxt.bias))

    def _fit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        return ratios, components, mean

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


def _default_refit_epoch(state_dict, prefix, *args, **kwargs) -> None:
    # checkpoints written before the refit schedule existed: never refitted
    state_dict.setdefault(prefix + "refit_epoch", torch.tensor(-1))


def refit_epoch_for(fraction: float, max_epochs: int) -> int:
    """The epoch at whose start ``pca_refit_fraction`` refits the PCA: ``round(fraction ·
    max_epochs)``, clamped to ``1 .. max_epochs - 1`` so that both stages get at least one epoch
    (needs ``max_epochs >= 2``)."""
    if max_epochs < 2:
        raise ConfigError(f"a PCA refit needs trainer.max_epochs >= 2, got {max_epochs}")
    return min(max(round(fraction * max_epochs), 1), max_epochs - 1)
