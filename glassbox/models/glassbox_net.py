"""The three-layer glass-box model (Manaswini & Bhatt, "Towards glass-box CNNs",
arXiv 2101.10443): equivariant representation → reduction → classifier."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from e2cnn import nn as enn
from torch import nn

from glassbox.errors import ConfigError
from glassbox.models.equivariant import (
    POOLINGS,
    conv_block,
    install_mode_independent_state,
    make_gspace,
    plain_blur,
)
from glassbox.models.reduction import Reduction


@dataclass
class GlassBoxOutput:
    """Outputs of the three layers (see :meth:`GlassBoxNet.layers`)."""

    representation: enn.GeometricTensor  # final regular fields (B, C·|G|, H, W)
    invariant_map: torch.Tensor  # group-pooled maps (B, C, H, W)
    invariant: torch.Tensor  # invariant part: spatially pooled (B, C)
    equivariant: torch.Tensor  # equivariant part: (B, C, |G|), the group axis last
    reduced: torch.Tensor  # reduced features (B, d)
    logits: torch.Tensor  # (B, num_classes)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear, or a ReLU MLP: piecewise linear, so its decision boundaries are exact."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Features(nn.Module):
    """Plain-tensor adapter: image → invariant maps, for :meth:`GlassBoxNet.sequential`."""

    def __init__(self, net: GlassBoxNet) -> None:
        super().__init__()
        self._net = [net]  # a list, so the net is not registered twice as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net[0].features(x)


class GlassBoxNet(nn.Module):
    """Glass-box CNN: e2cnn representation layer, dimension reduction, classifier.

    The representation is a stack of ``R2Conv → InnerBatchNorm → ReLU (→ 2×2 pool)`` blocks on
    regular fields of ``gspace`` (``rot``: C_N, ``fliprot``: D_N). Its output has an invariant
    part (``GroupPooling`` + spatial average) and an equivariant part (the regular fields
    spatially averaged: rotating the input by 2πk/N cyclically shifts the group axis by k).
    In eval mode the invariant part and the logits are invariant to 90° rotations up to float
    round-off (for N a multiple of 4): stride-1 'same' convolutions and 2×2 pooling on even
    sizes map the pixel grid onto itself under rot90. The pooling is anti-aliased by default
    (``pooling="max_antialiased"``): it keeps that exactness and loses less accuracy at the
    angles in between, which the pixel grid only interpolates.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        num_classes: int = 10,
        gspace: str = "rot",
        group_order: int = 8,
        widths: Sequence[int] = (8, 16, 32),
        kernel_sizes: Sequence[int] = (5, 5, 5),
        pool_after: Sequence[bool] = (True, True, False),
        pooling: str = "max_antialiased",
        frequencies_cutoff: float | None = None,
        maximum_offset: int | None = None,
        reduction: str = "pca",
        reduced_dim: int = 16,
        reduction_trainable: bool = False,
        variance_threshold: float | None = None,
        classifier_hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__()
        widths, kernel_sizes, pool_after = list(widths), list(kernel_sizes), list(pool_after)
        if not (len(widths) == len(kernel_sizes) == len(pool_after)) or not widths:
            raise ConfigError(
                f"widths ({len(widths)}), kernel_sizes ({len(kernel_sizes)}) and pool_after ({len(pool_after)}) "
                "must be non-empty lists of the same length: one entry per representation block"
            )
        n_pools = sum(bool(p) for p in pool_after)
        if image_size % (2 ** max(n_pools, 1)) != 0:
            raise ConfigError(
                f"image_size={image_size} cannot be taken by {n_pools} 2×2 pooling step(s) exactly: it must be "
                f"divisible by {2 ** max(n_pools, 1)} so that 90° rotations map the pixel grid onto itself; "
                "change data.image_size (and data.padding) or model.net.pool_after"
            )
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        if frequencies_cutoff is not None and not frequencies_cutoff > 0:
            raise ConfigError(
                f"frequencies_cutoff={frequencies_cutoff} must be positive (highest frequency = cutoff × "
                "radius), or null for e2cnn's default policy"
            )
        if maximum_offset is not None and maximum_offset < 0:
            raise ConfigError(f"maximum_offset={maximum_offset} must be >= 0, or null (no limit)")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.gspace = make_gspace(gspace, group_order)
        self.group_size = self.gspace.fibergroup.order()
        self.in_type = enn.FieldType(self.gspace, in_channels * [self.gspace.trivial_repr])
        blocks, ftype = OrderedDict(), self.in_type
        for i, (w, k, p) in enumerate(zip(widths, kernel_sizes, pool_after), start=1):
            out = enn.FieldType(self.gspace, w * [self.gspace.regular_repr])
            blocks[f"block{i}"] = conv_block(
                ftype, out, k, bool(p), pooling, frequencies_cutoff, maximum_offset
            )
            ftype = out
        self.representation = enn.SequentialModule(blocks)
        self.group_pool = enn.GroupPooling(ftype)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.reduction = Reduction(
            widths[-1], reduced_dim, reduction, reduction_trainable, variance_threshold
        )
        self.classifier = mlp(reduced_dim, classifier_hidden, num_classes)
        install_mode_independent_state(self)
        self.train()  # drop the zero 'filter' buffers e2cnn registers at construction

    # ----------------------------------------------------------------- forward paths
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"GlassBoxNet expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}: the model was "
                f"built with in_channels={self.in_channels}; make data.channels and model.net.in_channels agree"
            )

    def representation_fields(self, x: torch.Tensor) -> enn.GeometricTensor:
        self._check_input(x)
        return self.representation(enn.GeometricTensor(x, self.in_type))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Invariant spatial maps before pooling, (B, C, H, W)."""
        return self.group_pool(self.representation_fields(x)).tensor

    def head(self, invariant_map: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reduction(self.flatten(self.pool(invariant_map))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def layers(self, x: torch.Tensor) -> GlassBoxOutput:
        """Outputs of all three layers: representation (invariant and equivariant parts),
        reduced features and logits."""
        fields = self.representation_fields(x)
        inv_map = self.group_pool(fields).tensor
        invariant = self.flatten(self.pool(inv_map))
        b, _, h, w = fields.tensor.shape
        equivariant = fields.tensor.view(b, -1, self.group_size, h, w).mean((-2, -1))
        reduced = self.reduction(invariant)
        return GlassBoxOutput(
            fields, inv_map, invariant, equivariant, reduced, self.classifier(reduced)
        )

    def sequential(self) -> nn.Sequential:
        """An ``nn.Sequential`` sharing this net's modules whose forward equals :meth:`forward`.

        Its first leaf runs the representation and the group pooling, so it is named
        ``group_pool`` after the last module it runs (the layer names are this net's
        ``named_modules()`` names)."""
        return nn.Sequential(
            OrderedDict(
                group_pool=_Features(self),
                pool=self.pool,
                flatten=self.flatten,
                reduction=self.reduction,
                classifier=self.classifier,
            )
        )

    @torch.no_grad()
    def export(self) -> nn.Sequential:
        """Plain torch modules (Conv2d, BatchNorm2d, ReLU, MaxPool2d/AvgPool2d, a depthwise blur
        Conv2d for anti-aliased pooling, channel max-pool) with the same outputs, for fast inference. Exports from an eval-mode copy; this net is unchanged."""
        import copy

        # e2cnn's eval-mode filter buffers are non-leaf tensors that deepcopy refuses: copy in train mode.
        was_training = self.training
        self.train()
        net = copy.deepcopy(self).eval()
        self.train(was_training)
        return nn.Sequential(
            OrderedDict(
                representation=plain_blur(net.representation.export()),
                group_pool=net.group_pool.export(),
                pool=net.pool,
                flatten=net.flatten,
                reduction=net.reduction.linear,
                classifier=net.classifier,
            )
        ).eval()

    def parameter_counts(self) -> dict[str, int]:
        parts = {
            "representation": self.representation,
            "reduction": self.reduction,
            "classifier": self.classifier,
        }
        return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
