"""Raw image sources: each returns float images in [0, 1] (N, C, h, w), int labels and class names.

``digits`` ships inside scikit-learn (no download); ``shapes`` is generated; ``mnist``,
``fashion_mnist`` and ``cifar10`` come from torchvision and need their files on disk or a
network connection with ``download=true``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glassbox.errors import ConfigError, DatasetUnavailableError


@dataclass
class Source:
    images: torch.Tensor  # (N, C, h, w) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]
    # Official train/test split where the dataset has one (torchvision); None → split by seed.
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def load_digits() -> Source:
    """scikit-learn's 1,797 real 8×8 handwritten digits (values 0..16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return Source(images, labels, [str(i) for i in range(10)])


SHAPE_NAMES = ("disk", "square", "triangle", "cross", "bar", "ring")


def make_shapes(num_samples: int, size: int, num_classes: int, seed: int) -> Source:
    """Procedural shapes at random positions, scales and orientations (seeded).

    Rasterised with 4× supersampling into anti-aliased greyscale images of ``size``².
    """
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ConfigError(
            f"shapes supports 2..{len(SHAPE_NAMES)} classes, got num_classes={num_classes}"
        )
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=gen)]
    ss = 4 * size
    coords = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss * 2 - 1  # [-1, 1]
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    radius = 0.35 + 0.2 * torch.rand(num_samples, generator=gen)
    centre = (
        (torch.rand(num_samples, 2, generator=gen) - 0.5) * 2 * (0.9 - radius).unsqueeze(1) * 0.5
    )
    theta = torch.rand(num_samples, generator=gen) * 2 * math.pi
    # Coordinates in each shape's own frame: (N, ss, ss).
    dx = xx - centre[:, 0, None, None]
    dy = yy - centre[:, 1, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = (c * dx + s * dy) / radius[:, None, None]
    v = (-s * dx + c * dy) / radius[:, None, None]
    r = torch.sqrt(u**2 + v**2)
    masks = {
        "disk": r <= 1.0,
        "square": (u.abs() <= 0.8) & (v.abs() <= 0.8),
        "triangle": (v >= -0.5) & (v <= 1.0 - 1.5 * u.abs() * 1.1547),
        "cross": ((u.abs() <= 0.25) & (v.abs() <= 1.0)) | ((v.abs() <= 0.25) & (u.abs() <= 1.0)),
        "bar": (u.abs() <= 1.0) & (v.abs() <= 0.3),
        "ring": (r <= 1.0) & (r >= 0.6),
    }
    fine = torch.zeros(num_samples, ss, ss)
    for k, name in enumerate(SHAPE_NAMES[:num_classes]):
        sel = labels == k
        fine[sel] = masks[name][sel].float()
    images = torch.nn.functional.avg_pool2d(fine.unsqueeze(1), 4)
    return Source(images, labels.long(), list(SHAPE_NAMES[:num_classes]))


_TORCHVISION = {
    "mnist": ("MNIST", ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
    "fashion_mnist": (
        "FashionMNIST",
        [
            "t-shirt",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "boot",
        ],
    ),
    "cifar10": (
        "CIFAR10",
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    ),
}


def load_torchvision(name: str, root: str | Path, download: bool) -> Source:
    """MNIST / FashionMNIST / CIFAR10 via torchvision, fully loaded into memory."""
    import torchvision

    cls_name, class_names = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(root).expanduser()
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except (
            RuntimeError
        ) as err:  # torchvision: "Dataset not found. You can use download=True ..."
            raise DatasetUnavailableError(
                f"{name} is not under {root} ({err}). Set data.download=true to fetch it (needs network), "
                f"or point data.root at a directory that holds the {cls_name} files."
            ) from None
        except OSError as err:  # URLError and friends: offline while downloading
            raise DatasetUnavailableError(
                f"{name} could not be downloaded to {root}: {err}. This machine seems offline: copy the "
                f"{cls_name} files into data.root={root} (then data.download=false), or use the embedded "
                "dataset data=digits or the generated data=shapes."
            ) from None
        data = ds.data
        data = torch.as_tensor(np.asarray(data))
        # MNIST-like (N, H, W) or CIFAR (N, H, W, C) uint8 → (N, C, H, W)
        data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        splits.append(
            (data.float().div_(255.0), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long))
        )
    (x, y), (xt, yt) = splits
    return Source(x, y, class_names, xt, yt)


SOURCES = ("digits", "shapes", *_TORCHVISION)
