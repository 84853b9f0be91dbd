"""Datasets and the datamodule: splits, rotation, class subsets, channel matching, offline errors."""

from __future__ import annotations

import pytest
import torch

from glassbox.data import GlassBoxDataModule, rotate_images
from glassbox.errors import ConfigError, DatasetUnavailableError


def test_digits_split_is_deterministic_and_complete():
    a, b = GlassBoxDataModule(seed=3), GlassBoxDataModule(seed=3)
    a.setup(), b.setup()
    sizes = (len(a.train_dataset), len(a.val_dataset), len(a.test_dataset))
    assert sum(sizes) == 1797 and sizes == (1258, 180, 359)
    assert torch.equal(a.test_dataset.images, b.test_dataset.images)
    assert a.train_dataset.images.shape[1:] == (1, 32, 32)
    # padding: the 4-pixel border is background (normalised zero)
    border = a.train_dataset.raw[..., :4, :]
    assert border.abs().max() == 0
    c = GlassBoxDataModule(seed=4)
    c.setup()
    assert not torch.equal(a.test_dataset.labels, c.test_dataset.labels)


def test_shapes_generated_seeded_and_sized():
    dm = GlassBoxDataModule(
        name="shapes", image_size=24, padding=2, total_classes=5, num_samples=200, seed=1
    )
    dm.setup()
    assert dm.num_classes == 5 and dm.class_names[:2] == ["disk", "square"]
    x, y = dm.tensors("train")
    assert x.shape[1:] == (1, 24, 24)
    assert set(y.tolist()) == set(range(5))
    dm2 = GlassBoxDataModule(
        name="shapes", image_size=24, padding=2, total_classes=5, num_samples=200, seed=1
    )
    dm2.setup()
    assert torch.equal(dm.tensors("train")[0], dm2.tensors("train")[0])


def test_rotate_images_exact_for_quarter_turns_and_consistent_otherwise():
    x = torch.rand(4, 2, 10, 10)
    for k in range(4):
        assert torch.equal(rotate_images(x, 90.0 * k), torch.rot90(x, k, dims=(-2, -1)))
    # the interpolated path agrees with rot90 at (almost) 90° and is counter-clockwise like it
    near = rotate_images(x, torch.full((4,), 90.0001))
    assert (near - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 1e-3


def test_rotation_protocol_rotates_only_the_test_split():
    up = GlassBoxDataModule(seed=0)
    rot = GlassBoxDataModule(seed=0, rotation={"split": "test", "mode": "fixed", "angle": 90})
    up.setup(), rot.setup()
    assert torch.equal(up.train_dataset.images, rot.train_dataset.images)
    assert torch.equal(
        torch.rot90(up.test_dataset.images, 1, dims=(-2, -1)), rot.test_dataset.images
    )
    rnd = GlassBoxDataModule(seed=0, rotation={"split": "both", "mode": "random"})
    rnd.setup()
    assert rnd.train_dataset.random_rotation
    img1, _ = rnd.train_dataset[0]
    img2, _ = rnd.train_dataset[0]
    assert not torch.equal(img1, img2)  # fresh augmentation angle per access


def test_binary_class_subset_relabels():
    dm = GlassBoxDataModule(classes=[3, 8])
    dm.setup()
    assert dm.num_classes == 2 and dm.class_names == ["3", "8"]
    assert set(dm.tensors("test")[1].tolist()) == {0, 1}
    assert len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset) == 183 + 174


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([3], "fewer than two"),
        ([3, 12], r"labels \[12\].*valid labels are 0\.\.9"),
        ([1, 1], "repeats"),
    ],
)
def test_bad_class_lists(classes, match):
    with pytest.raises(ConfigError, match=match):
        GlassBoxDataModule(classes=classes).setup()


def test_channel_matching_and_mismatch():
    dm = GlassBoxDataModule(channels=3, mean=[0.17] * 3, std=[0.29] * 3)
    dm.setup()
    x = dm.tensors("val")[0]
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 1])
    with pytest.raises(ConfigError, match="cannot be converted"):
        GlassBoxDataModule(channels=2, mean=[0.1] * 2, std=[0.3] * 2).setup()
    with pytest.raises(ConfigError, match="one value per channel"):
        GlassBoxDataModule(channels=3).setup()


def test_bad_sizes_and_names():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        GlassBoxDataModule(name="imagenet")
    with pytest.raises(ConfigError, match="leaves 0 pixels"):
        GlassBoxDataModule(image_size=8, padding=4).setup()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_dataset_missing_offline_gives_clear_error(tmp_path, name):
    dm = GlassBoxDataModule(name=name, root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DatasetUnavailableError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "data.download=true" in msg


def test_analysis_batch_is_fixed():
    dm = GlassBoxDataModule()
    x1, y1 = dm.analysis_batch("val", n=16, seed=5)
    x2, y2 = dm.analysis_batch("val", n=16, seed=5)
    assert x1.shape == (16, 1, 32, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)
