"""AlexNet baseline: torchvision's topology (5 conv + 3 FC) with a stem for small images."""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
import torchvision
from torch import nn

from glassbox.errors import ConfigError

log = logging.getLogger(__name__)

STEMS = ("small", "imagenet")


class AlexNet(torchvision.models.AlexNet):
    """torchvision's AlexNet with a configurable stem, channel count and widths.

    Args:
        stem: ``imagenet`` keeps the 11×11/4 first conv and 3×3/2 pools (for ≥ 63 px images);
            ``small`` uses a 3×3/1 first conv and 2×2/2 pools, so 32×32 images keep 4×4 maps.
        width_mult: scales the conv widths (64, 192, 384, 256, 256).
        hidden: width of the two hidden FC layers (4096 in the original).
        pool_size: output size of the adaptive average pool before the classifier.
        pretrained: load torchvision's ImageNet weights into every layer whose shape matches
            (needs network or a filled torch hub cache).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        stem: str = "small",
        width_mult: float = 1.0,
        hidden: int = 4096,
        pool_size: int = 4,
        dropout: float = 0.5,
        pretrained: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, dropout=dropout)
        if stem not in STEMS:
            raise ConfigError(f"unknown AlexNet stem {stem!r}; use one of {', '.join(STEMS)}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        c1, c2, c3, c4, c5 = (max(1, round(c * width_mult)) for c in (64, 192, 384, 256, 256))
        if stem == "imagenet":
            conv1, pool = nn.Conv2d(in_channels, c1, 11, stride=4, padding=2), (3, 2)
        else:
            conv1, pool = nn.Conv2d(in_channels, c1, 3, stride=1, padding=1), (2, 2)
        self.features = nn.Sequential(
            conv1,
            nn.ReLU(inplace=True),
            nn.MaxPool2d(*pool),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(*pool),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(*pool),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self._check_size()
        if pretrained:
            self.load_imagenet_weights()

    def _check_size(self) -> None:
        with torch.no_grad():
            try:
                out = self.features(
                    torch.zeros(1, self.in_channels, self.image_size, self.image_size)
                )
            except RuntimeError as err:
                raise ConfigError(
                    f"AlexNet cannot take {self.image_size}×{self.image_size} images ({err}); use "
                    "model.net.stem=small for images under 63 px, or a larger data.image_size"
                ) from None
        if out.shape[-1] < 1:
            raise ConfigError(
                f"image_size={self.image_size} is too small for AlexNet's {len(self.features)} layers"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"AlexNet expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}: make data.channels and "
                "model.net.in_channels agree"
            )
        return super().forward(x)

    def sequential(self) -> nn.Sequential:
        """An ``nn.Sequential`` sharing this net's modules whose forward equals :meth:`forward`."""
        return nn.Sequential(
            OrderedDict(
                features=self.features,
                avgpool=self.avgpool,
                flatten=nn.Flatten(),
                classifier=self.classifier,
            )
        )

    def load_imagenet_weights(self) -> list[str]:
        """Copy torchvision's ImageNet weights into every parameter whose shape matches."""
        weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as err:  # URLError, HTTPError, socket errors: all mean "cannot fetch"
            raise ConfigError(
                f"could not fetch AlexNet's ImageNet weights ({type(err).__name__}: {err}); this needs network "
                "access (or the file in the torch hub cache, $TORCH_HOME). Set model.net.pretrained=false to "
                "train from scratch."
            ) from None
        own = self.state_dict()
        loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
        self.load_state_dict({k: state[k] for k in loaded}, strict=False)
        log.info(
            "AlexNet: loaded %d/%d ImageNet tensors (%s)", len(loaded), len(own), ", ".join(loaded)
        )
        return loaded

    def parameter_counts(self) -> dict[str, int]:
        parts = {"features": self.features, "classifier": self.classifier}
        return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
