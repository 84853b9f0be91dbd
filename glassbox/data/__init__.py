"""Datasets and the LightningDataModule (embedded digits, generated shapes, torchvision sets)."""

from glassbox.data.datamodule import GlassBoxDataModule, ImageTensorDataset
from glassbox.data.transforms import rotate_images

__all__ = ["GlassBoxDataModule", "ImageTensorDataset", "rotate_images"]
