"""The analysis callbacks on someone else's Lightning project: a CNN LightningModule and a plain
LightningDataModule written here, with no glassbox class in them (acceptance test of the
portable callbacks), and the run going on when an analysis cannot run."""

from __future__ import annotations

import json
import logging

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset

from glassbox.callbacks import (
    EquivarianceCallback,
    RepresentativeInterpretationCallback,
    SeparabilityCallback,
)
from glassbox.errors import GlassboxError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, A, SIGMA = 8, 1.0, 0.5  # 8×8 grey images; class means ∓A·1, pixel noise σ


class Rot90Symmetric(nn.Module):
    """Weight parametrization: the mean of the filter's four 90° rotations, so the convolution
    commutes exactly with rot90 of its input ('same' padding, odd kernel, square maps)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sum(torch.rot90(w, k, (2, 3)) for k in range(4)) / 4


def symmetric_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 2×2 pooling of an even map commutes with rot90
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),  # spatial mean: invariant
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    for i in (0, 3):
        parametrize.register_parametrization(net[i], "weight", Rot90Symmetric())
    return net


class BlobCNN(pl.LightningModule):
    """A user's module: the network lives in ``self.cnn`` (not ``net``), batches are dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = symmetric_cnn()

    def forward(self, x):
        return self.cnn(x)

    def _loss_acc(self, batch):
        logits = self(batch["pixels"])
        y = batch["target"]
        return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    def training_step(self, batch, _):
        return self._loss_acc(batch)[0]

    def validation_step(self, batch, _):
        self.log("val_acc", self._loss_acc(batch)[1])

    def test_step(self, batch, _):
        self.log("test_acc", self._loss_acc(batch)[1])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class DictDataset(Dataset):
    def __init__(self, x, y, image_key="pixels", label_key="target") -> None:
        self.x, self.y, self.keys = x, y, (image_key, label_key)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {self.keys[0]: self.x[i], self.keys[1]: self.y[i], "index": i}


def blobs(n_per_class: int, seed: int):
    """Two Gaussian blobs in pixel space: class c is (2c − 1)·A·1 + σ·N(0, I), 1×8×8."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n_per_class)
    x = (2 * y - 1).float().reshape(-1, 1, 1, 1) * A + SIGMA * torch.randn(
        len(y), 1, SIZE, SIZE, generator=g
    )
    return x, y


class BlobData(pl.LightningDataModule):
    """A plain datamodule: no analysis_batch, no tensors(); dict batches."""

    def __init__(self, n_per_class: int = 50, **keys) -> None:
        super().__init__()
        self.n, self.keys = n_per_class, keys

    def setup(self, stage=None):
        self.sets = {
            split: DictDataset(*blobs(self.n, seed), **self.keys)
            for seed, split in enumerate(("train", "val", "test"))
        }

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=20, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=20)

    def test_dataloader(self):
        return DataLoader(self.sets["test"], batch_size=20)


def trainer(tmp_path, callbacks, epochs: int = 4) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_all_three_callbacks_on_a_foreign_module_and_datamodule(tmp_path):
    common = {"output_dir": tmp_path, "model_attr": "cnn", "image_key": "pixels"}
    eq = EquivarianceCallback(
        **common, num_images=32, measures=["invariance", "spatial", "consistency"]
    )
    sep = SeparabilityCallback(**common, classifiers=["logreg"], max_train_samples=None)
    ri = RepresentativeInterpretationCallback(
        **common, num_reference=80, num_images=32, interpretations_per_class=1, num_candidates=10,
        baselines=["gradcam"], max_galleries=1, gallery_size=3,
    )  # fmt: skip
    module, dm = BlobCNN(), BlobData()
    t = trainer(tmp_path, [eq, sep, ri])
    t.fit(module, datamodule=dm)
    (tested,) = t.test(module, datamodule=dm, verbose=False)
    assert tested["test_acc"] == 1.0

    # equivariance: the rot90-symmetrised convs and the pools commute with C4 to round-off,
    # the pooled features and the logits are invariant, every prediction survives a turn
    for tag in ("fit_end", "test"):
        m = eq.results[tag]
        spatial = {k: v for k, v in m.items() if k.endswith("/spatial")}
        assert set(spatial) >= {f"equivariance/{n}/spatial" for n in ("0", "2", "3", "5")}
        assert max(spatial.values()) <= 1e-5, spatial
        assert m["equivariance/output/invariance"] <= 1e-5
        assert m["equivariance/5/invariance"] <= 1e-5  # AdaptiveAvgPool2d output (B, 8, 1, 1)
        assert m["equivariance/output/consistency"] == 1.0
        status = json.loads((tmp_path / "equivariance" / tag / "status.json").read_text())
        assert status["status"] == "ran" and status["scalars"] == len(m)
    assert (tmp_path / "equivariance" / "test" / "equivariance.csv").is_file()

    # separability of the raw pixels (100 test images, D = 64). Class means ∓A·1 are
    # ‖μ₀ − μ₁‖ = 2A√D apart; each image is σ√D·(1 ± ~0.02) from its class mean (χ² with
    # n·D = 3,200 degrees of freedom per class), each estimated mean σ√(D/n)·(1 ± 0.15) off.
    # So intra ≤ 1.1 σ√D and inter ≥ 2A√D − 2·1.15·σ√(D/n), and
    #   ratio = inter / intra ≥ (2A/σ − 2.3/√n) / 1.1 = (4 − 0.33) / 1.1 ≈ 3.3  (n = 50),
    # and Fisher's trace ratio ≈ N·A²·D / (N·σ²·D) = A²/σ² = 4 up to the same factors (> 3).
    # Along μ₁ − μ₀ the classes are 2A√D/σ = 32 noise standard deviations apart: logistic
    # regression on the pixels must classify every test image.
    m = sep.results["test"]
    assert m["separability/pixels/ratio"] > 3.0, m["separability/pixels/ratio"]
    assert m["separability/pixels/fisher"] > 3.0, m["separability/pixels/fisher"]
    assert m["separability/pixels/logreg_acc"] == 1.0
    # the network's rows come from named layers of the user's net (conv1/conv2 read after
    # their ReLU, the last linear as logits), with finite numbers
    assert {
        "separability/conv1/ratio",
        "separability/conv2/ratio",
        "separability/logits/ratio",
    } <= set(m)
    assert all(v == v for v in m.values())  # no NaN
    assert (tmp_path / "separability" / "test" / "separability.csv").is_file()

    # interpretations (at the end of fit): one per predicted class, exact boundaries of the
    # piecewise-linear head after the ReLU of the last conv ("4")
    m = ri.results["fit_end"]
    assert m["interpretation/num_interpretations"] == 2.0
    assert 0.5 <= m["interpretation/coverage"] <= 1.0 and m["interpretation/precision"] == 1.0
    assert m["interpretation/gradcam/AD"] >= 0.0 and 0.0 <= m["interpretation/RI/AI"] <= 100.0
    meta = json.loads(
        (tmp_path / "interpretation" / "fit_end" / "interpretations.json").read_text()
    )
    assert meta["layer"] == "4" and meta["num_reference"] == 80
    assert json.loads((tmp_path / "interpretation" / "fit_end" / "status.json").read_text()) == {
        "analysis": "interpretation",
        "tag": "fit_end",
        "status": "ran",
        "scalars": len(m),
        "seconds": ri.status["fit_end"]["seconds"],
    }


def test_an_analysis_that_cannot_run_is_skipped_and_training_goes_on(tmp_path, caplog):
    """An untrained net whose head is zero predicts one class: no boundary to sample. The run
    finishes, with one warning and status.json saying why."""
    module, dm = BlobCNN(), BlobData(n_per_class=10)
    with torch.no_grad():
        module.cnn[7].weight.zero_()
        module.cnn[7].bias.copy_(torch.tensor([1.0, 0.0]))
    module.configure_optimizers = lambda: torch.optim.SGD(module.parameters(), lr=0.0)
    ri = RepresentativeInterpretationCallback(
        output_dir=tmp_path, model_attr="cnn", image_key="pixels", num_reference=20,
        num_images=8, reuse_k=4, baselines=[], every_n_epochs=1, at_fit_end=True, at_test_end=True,
    )  # fmt: skip
    t = trainer(tmp_path, [ri], epochs=2)
    with caplog.at_level(logging.WARNING, logger="glassbox.callbacks.base"):
        t.fit(module, datamodule=dm)
        t.test(module, datamodule=dm, verbose=False)
    assert t.current_epoch == 2 and t.state.finished
    tags = {"epoch000", "epoch001", "fit_end", "test"}
    assert set(ri.status) == tags
    for tag in tags:
        record = json.loads((tmp_path / "interpretation" / tag / "status.json").read_text())
        assert record == ri.status[tag] and record["tag"] == tag
        assert record["status"] == "skipped"
        assert record["reason"].startswith(
            "EmptyClassError: all reference images are predicted as class 0"
        )
    warnings = [r for r in caplog.records if "skipped, training goes on" in r.getMessage()]
    assert len(warnings) == 4 and not any(r.exc_info for r in warnings)  # one line each
    assert ri.final_results() == {}


def test_on_error_raise_reraises(tmp_path):
    from glassbox.errors import ConfigError
    from glassbox.interpret.representative import EmptyClassError

    module, dm = BlobCNN(), BlobData(n_per_class=10)
    with torch.no_grad():  # one predicted class: nothing to interpret
        module.cnn[7].weight.zero_()
        module.cnn[7].bias.copy_(torch.tensor([1.0, 0.0]))
    ri = RepresentativeInterpretationCallback(
        output_dir=tmp_path, model_attr="cnn", image_key="pixels", num_reference=20,
        num_images=8, reuse_k=4, baselines=[], on_error="raise",
    )  # fmt: skip
    module.configure_optimizers = lambda: torch.optim.SGD(module.parameters(), lr=0.0)
    with pytest.raises(EmptyClassError, match="all reference images are predicted as class 0"):
        trainer(tmp_path, [ri], epochs=1).fit(module, datamodule=dm)
    # a group the grid cannot represent with exact=error is a misconfiguration: fails at once
    with pytest.raises(ConfigError, match=r"group C8 has elements .*exact=error refuses them"):
        EquivarianceCallback(group="C8")


class TupleBlobCNN(BlobCNN):
    """The same network, trained on (images, labels) tuple batches."""

    def _loss_acc(self, batch):
        return super()._loss_acc({"pixels": batch[0], "target": batch[1]})


def test_dataloaders_passed_to_fit_and_given_data(tmp_path):
    """No datamodule at all: the images come from the val dataloader given to fit (tuple
    batches), or from data= given to the callback."""
    x, y = blobs(10, seed=3)
    loader = DataLoader(list(zip(x, y)), batch_size=5)
    module = TupleBlobCNN()
    from_loader = EquivarianceCallback(
        output_dir=tmp_path / "a", model_attr="cnn", num_images=6, measures=["spatial"]
    )
    given = EquivarianceCallback(
        output_dir=tmp_path / "b", model_attr="cnn", num_images=6, measures=["spatial"],
        data=x[:4], at_test_end=False,
    )  # fmt: skip
    t = trainer(tmp_path, [from_loader, given], epochs=1)
    t.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    for cb in (from_loader, given):
        assert cb.status["fit_end"]["status"] == "ran"
        assert max(cb.results["fit_end"].values()) <= 1e-5
    # the same seeded choice of 6 of the 20 validation images as the callback's own batch
    images, labels = from_loader.images(t, module, "val", 6)
    idx = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:6].sort().values
    assert torch.equal(images, x[idx]) and torch.equal(labels, y[idx])
    assert torch.equal(given.images(t, module, "val", 6)[0], x[:4])  # fewer than asked: all
    # a {split: dict batch} is accepted too, and a split missing from it falls back to the loaders
    per_split = EquivarianceCallback(data={"test": {"image": x[:5], "label": y[:5]}})
    images, labels = per_split.images(t, module, "test", 3)
    picked = torch.randperm(5, generator=torch.Generator().manual_seed(0))[:3].sort().values
    assert torch.equal(images, x[picked]) and torch.equal(labels, y[picked])
    assert torch.equal(per_split.images(t, module, "val", 6)[0], x[idx])
    with pytest.raises(
        GlassboxError,
        match=r"separability needs labels but the test batches have none: set label_key",
    ):
        SeparabilityCallback(data={"test": x[:5]}).images(t, module, "test", 3)
