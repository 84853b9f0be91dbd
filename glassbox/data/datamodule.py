"""One LightningDataModule for every image source, held in memory as tensors."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from glassbox.data import sources
from glassbox.data.transforms import (
    RESIZE_MODES,
    fit_images,
    match_channels,
    normalise,
    rotate_images,
    rotation_angles,
)
from glassbox.errors import ConfigError

ROTATION_SPLITS = ("none", "train", "test", "both")


class ImageTensorDataset(Dataset):
    """Normalised images and labels; optionally rotates each item by a fresh random angle.

    ``raw`` holds images in [0, 1] so that rotation fills with true background before
    normalisation.
    """

    def __init__(
        self, raw: torch.Tensor, labels: torch.Tensor, mean, std, random_rotation: bool = False
    ):
        self.raw, self.labels = raw, labels
        self.mean, self.std = mean, std
        self.random_rotation = random_rotation
        self.images = None if random_rotation else normalise(raw, mean, std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.random_rotation:
            angle = torch.rand(1) * 360.0  # seeded by seed_everything(workers=True)
            img = normalise(rotate_images(self.raw[i : i + 1], angle), self.mean, self.std)[0]
            return img, int(self.labels[i])
        return self.images[i], int(self.labels[i])


class GlassBoxDataModule(pl.LightningDataModule):
    """Images from ``sources`` → resized, padded, channel-matched, split, optionally rotated.

    Args:
        name: ``digits`` (default, embedded), ``shapes`` (generated), ``mnist``, ``fashion_mnist``,
            ``cifar10`` (torchvision; need files under ``root`` or ``download=True``).
        image_size, padding: images are resized to ``image_size - 2*padding`` and zero-padded.
        resize: the resizing interpolation: ``bilinear``, ``bicubic`` (both anti-aliased when
            shrinking), ``nearest`` or ``area``.
        channels: channel count the model sees (grey ↔ RGB conversion if it differs).
        classes: optional subset of original labels (e.g. ``[3, 8]`` for a binary prototype);
            they are relabelled 0..k-1 in the given order.
        rotation: ``{split: none|train|test|both, mode: random|fixed, angle: degrees}`` —
            "trained upright, tested rotated" is ``split=test, mode=random``.
        num_classes: the class count the config promises the model (checked after loading).
        total_classes: classes of the source before ``classes`` selects some (``shapes`` generates
            that many shape kinds).
        num_samples: how many images ``shapes`` generates.
        val_fraction, test_fraction: fractions for the seeded split (test only where the
            source has no official test split).
    """

    def __init__(
        self,
        name: str = "digits",
        root: str = "data",
        download: bool = False,
        image_size: int = 32,
        padding: int = 4,
        resize: str = "bilinear",
        channels: int = 1,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        classes: Sequence[int] | None = None,
        num_classes: int | None = None,
        total_classes: int | None = None,
        rotation: dict | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_samples: int = 2000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        **_: object,
    ) -> None:
        super().__init__()
        if name not in sources.SOURCES:
            raise ConfigError(
                f"unknown dataset {name!r}; choose one of {', '.join(sources.SOURCES)}"
            )
        rotation = dict(rotation or {})
        split = rotation.get("split", "none")
        if split not in ROTATION_SPLITS:
            raise ConfigError(
                f"data.rotation.split must be one of {ROTATION_SPLITS}, got {split!r}"
            )
        if not (
            0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ConfigError(
                "data.val_fraction and data.test_fraction must be in (0, 1) and sum to < 1"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"data.batch_size={batch_size!r} is not a positive integer; set e.g. data.batch_size=64"
            )
        self.name, self.root, self.download = name, root, download
        if resize not in RESIZE_MODES:
            raise ConfigError(
                f"data.resize={resize!r} is not an interpolation; use one of {', '.join(RESIZE_MODES)}"
            )
        self.image_size, self.padding, self.channels = image_size, padding, channels
        self.resize = resize
        self.mean, self.std = list(mean), list(std)
        self.classes = list(classes) if classes is not None else None
        self.declared_num_classes = num_classes
        self.total_classes = total_classes
        self.rotation = {
            "split": split,
            "mode": rotation.get("mode", "random"),
            "angle": rotation.get("angle", 0.0),
        }
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.num_samples = num_samples
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.class_names: list[str] = []
        self.train_dataset = self.val_dataset = self.test_dataset = None

    # ----------------------------------------------------------------- loading
    def _load(self) -> sources.Source:
        if self.name == "digits":
            return sources.load_digits()
        if self.name == "shapes":
            k = self.total_classes or 4
            return sources.make_shapes(
                self.num_samples, self.image_size - 2 * self.padding, k, self.seed
            )
        return sources.load_torchvision(self.name, self.root, self.download)

    def _select_classes(self, images, labels, class_names):
        if self.classes is None:
            return images, labels, class_names
        if len(self.classes) < 2:
            raise ConfigError(
                f"data.classes={self.classes} selects fewer than two classes; give at least two labels"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"data.classes={self.classes} repeats a label; list each class once")
        bad = [c for c in self.classes if not 0 <= c < len(class_names)]
        if bad:
            raise ConfigError(
                f"data.classes has labels {bad} that {self.name!r} does not have; valid labels are "
                f"0..{len(class_names) - 1} ({', '.join(class_names)})"
            )
        lut = torch.full((len(class_names),), -1, dtype=torch.long)
        lut[torch.tensor(self.classes)] = torch.arange(len(self.classes))
        keep = lut[labels] >= 0
        return images[keep], lut[labels[keep]], [class_names[c] for c in self.classes]

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return match_channels(
            fit_images(images, self.image_size, self.padding, self.resize), self.channels, self.name
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        src = self._load()
        images, labels, names = self._select_classes(src.images, src.labels, src.class_names)
        self.class_names = names
        if self.declared_num_classes is not None and self.declared_num_classes != len(names):
            raise ConfigError(
                f"data.num_classes={self.declared_num_classes} but {self.name!r} with classes={self.classes} has "
                f"{len(names)} classes; leave data.num_classes to its default interpolation"
            )
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(labels), generator=gen)
        n_val = max(1, round(self.val_fraction * len(labels)))
        if src.test_images is None:
            n_test = max(1, round(self.test_fraction * len(labels)))
            test_idx, val_idx, train_idx = (
                perm[:n_test],
                perm[n_test : n_test + n_val],
                perm[n_test + n_val :],
            )
            test_x, test_y = images[test_idx], labels[test_idx]
        else:
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            test_x, test_y, _ = self._select_classes(
                src.test_images, src.test_labels, src.class_names
            )
        train_x, val_x = self._prepare(images[train_idx]), self._prepare(images[val_idx])
        test_x = self._prepare(test_x)
        rot = self.rotation
        rot_train = rot["split"] in ("train", "both")
        rot_test = rot["split"] in ("test", "both")
        if rot_train and rot["mode"] == "fixed":
            train_x = rotate_images(
                train_x, rotation_angles(len(train_x), "fixed", rot["angle"], self.seed)
            )
        if rot_test:  # fixed per-image angles so every evaluation sees the same rotated set
            val_x = rotate_images(
                val_x, rotation_angles(len(val_x), rot["mode"], rot["angle"], self.seed + 1)
            )
            test_x = rotate_images(
                test_x, rotation_angles(len(test_x), rot["mode"], rot["angle"], self.seed + 2)
            )
        random_train = rot_train and rot["mode"] == "random"
        self.train_dataset = ImageTensorDataset(
            train_x, labels[train_idx], self.mean, self.std, random_train
        )
        self.val_dataset = ImageTensorDataset(val_x, labels[val_idx], self.mean, self.std)
        self.test_dataset = ImageTensorDataset(test_x, test_y, self.mean, self.std)

    # ----------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        if self.declared_num_classes is not None:
            return self.declared_num_classes
        self.setup()
        return len(self.class_names)

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)

    def split(self, split: str) -> ImageTensorDataset:
        self.setup()
        datasets = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}
        if split not in datasets:
            raise ConfigError(f"unknown split {split!r}; use train, val or test")
        return datasets[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """All normalised images and labels of a split (upright or as configured; no augmentation)."""
        ds = self.split(split)
        images = ds.images if ds.images is not None else normalise(ds.raw, ds.mean, ds.std)
        return images, ds.labels

    def analysis_batch(
        self, split: str = "val", n: int = 64, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, deterministic batch of ``n`` normalised images (fewer if the split is smaller)."""
        images, labels = self.tensors(split)
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
        return images[idx], labels[idx]
