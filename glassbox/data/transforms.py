"""Tensor-level image preparation shared by every dataset: resize, pad, channels, rotation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from glassbox.errors import ConfigError

RESIZE_MODES = ("bilinear", "bicubic", "nearest", "area")


def fit_images(
    images: torch.Tensor, image_size: int, padding: int, mode: str = "bilinear"
) -> torch.Tensor:
    """Resize (B, C, h, w) float images in [0, 1] to ``image_size - 2 * padding`` with the
    interpolation ``mode`` (one of :data:`RESIZE_MODES`) and zero-pad.

    Padding keeps the content inside the disc the image's rotations preserve, so rotated
    copies lose no ink at the corners.
    """
    inner = image_size - 2 * padding
    if inner < 4:
        raise ConfigError(
            f"image_size={image_size} with padding={padding} leaves {inner} pixels for the image; "
            "increase data.image_size or decrease data.padding"
        )
    if images.shape[-2:] != (inner, inner):
        smooth = mode in ("bilinear", "bicubic")
        images = F.interpolate(
            images,
            size=(inner, inner),
            mode=mode,
            **({"align_corners": False, "antialias": True} if smooth else {}),
        )
        images = images.clamp_(0.0, 1.0)
    if padding:
        images = F.pad(images, (padding,) * 4)
    return images


def match_channels(images: torch.Tensor, channels: int, dataset: str) -> torch.Tensor:
    """Convert grey ↔ RGB when the config asks for another channel count than the data has."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    raise ConfigError(
        f"dataset {dataset!r} has {have} channel(s) and cannot be converted to data.channels={channels}; "
        f"use data.channels={have} (or 1/3)"
    )


def rotate_images(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image of (B, C, H, W) counter-clockwise by its angle (degrees), zero fill.

    Multiples of 90° use exact pixel permutations (``rot90``); other angles use bilinear
    interpolation about the image centre.
    """
    angles_deg = torch.as_tensor(angles_deg, dtype=torch.float32).flatten()
    if angles_deg.numel() == 1:
        angles_deg = angles_deg.expand(images.shape[0])
    out = images.clone()
    quarter = torch.remainder(angles_deg, 360.0) / 90.0
    exact = (quarter - quarter.round()).abs() < 1e-6
    for k in range(4):  # at most four rot90 calls, each on a whole sub-batch
        idx = torch.nonzero(exact & (quarter.round().long() % 4 == k)).flatten()
        if k and idx.numel():
            out[idx] = torch.rot90(images[idx], k, dims=(-2, -1))
    idx = torch.nonzero(~exact).flatten()
    if idx.numel():
        theta = torch.deg2rad(angles_deg[idx])
        cos, sin = torch.cos(theta), torch.sin(theta)
        # affine_grid maps output coords to input coords: the inverse rotation. With y pointing
        # down in image coordinates, this matrix rotates the picture counter-clockwise like rot90.
        mat = torch.stack(
            [
                torch.stack([cos, -sin, torch.zeros_like(cos)], -1),
                torch.stack([sin, cos, torch.zeros_like(cos)], -1),
            ],
            1,
        )
        sub = images[idx]
        grid = F.affine_grid(mat.to(sub.dtype), list(sub.shape), align_corners=False)
        out[idx] = F.grid_sample(
            sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return out


def rotation_angles(n: int, mode: str, angle: float, seed: int) -> torch.Tensor:
    """Per-image angles: ``fixed`` → all ``angle``; ``random`` → uniform in [0, 360) from ``seed``."""
    if mode == "fixed":
        return torch.full((n,), float(angle))
    if mode == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(n, generator=gen) * 360.0
    raise ConfigError(f"data.rotation.mode must be 'fixed' or 'random', got {mode!r}")


def normalise(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = images.new_tensor(mean).view(1, -1, 1, 1)
    s = images.new_tensor(std).view(1, -1, 1, 1)
    if m.shape[1] != images.shape[1] or s.shape[1] != images.shape[1]:
        raise ConfigError(
            f"data.mean/data.std have {m.shape[1]}/{s.shape[1]} entries for {images.shape[1]}-channel images; "
            "give one value per channel"
        )
    return (images - m) / s


def is_exact_angle(angle: float) -> bool:
    return math.isclose(angle % 90.0, 0.0, abs_tol=1e-9) or math.isclose(
        angle % 90.0, 90.0, abs_tol=1e-9
    )


def mean_over_turn(values: dict[float, float]) -> float:
    """Mean of per-angle values over one full turn: angles equal modulo 360° count once (0° and
    360° are the same test set), so a sweep 0, 15, ..., 360 averages 24 distinct angles."""
    distinct: dict[float, float] = {}
    for angle, value in values.items():
        distinct.setdefault(round(float(angle) % 360.0, 9), float(value))
    if not distinct:
        raise ValueError("mean_over_turn needs at least one angle")
    return sum(distinct.values()) / len(distinct)
