"""Bad input to the portable callbacks and to evaluate.py's data= → one clear line, no
traceback, and before any training step."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from conftest import FAST, compose, run_script
from glassbox import pipeline
from glassbox.callbacks import (
    EquivarianceCallback,
    RepresentativeInterpretationCallback,
    SeparabilityCallback,
)
from glassbox.errors import ConfigError, GlassboxError
from glassbox.interpret.split import NotPiecewiseLinearError, UnknownLayerError

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(pl.LightningModule):
    """A user's module: the network in ``body``; counts training steps."""

    def __init__(self, head: nn.Module | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), head or nn.Linear(2 * 36, 2)
        )
        self.steps = 0

    def training_step(self, batch, _):
        self.steps += 1
        return nn.functional.cross_entropy(self.body(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Records(Dataset):
    """Items without images: a dict of ids and text (as a tabular or text pipeline has)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"id": i, "caption": f"image {i}", "label": i % 2}


class Data(pl.LightningDataModule):
    def __init__(self, val=None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.xy = (torch.randn(8, 1, 6, 6, generator=g), torch.arange(8) % 2)
        self.val = val

    def train_dataloader(self):
        return DataLoader(list(zip(*self.xy)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(self.val or list(zip(*self.xy)), batch_size=4)


def fit(tmp_path, callback, module=None, data=None):
    module = module or Net()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[callback], default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(GlassboxError) as err:
        trainer.fit(module, datamodule=data or Data())
    assert module.steps == 0, "the error must come before the first training step"
    assert "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize(
    "cls", [EquivarianceCallback, SeparabilityCallback, RepresentativeInterpretationCallback]
)
def test_unknown_model_attr_lists_the_submodules(tmp_path, cls):
    err = fit(tmp_path, cls(output_dir=tmp_path, model_attr="backbone"))
    assert isinstance(err, ConfigError)
    assert str(err) == (
        "model_attr='backbone': Net has no attribute 'backbone'; its submodules are: body "
        "(null analyses the module itself)"
    )


def test_model_attr_that_is_not_a_module(tmp_path):
    err = fit(tmp_path, EquivarianceCallback(output_dir=tmp_path, model_attr="steps"))
    assert "model_attr='steps' is a int, not an nn.Module" in str(err)


def test_a_dataloader_batch_without_images(tmp_path):
    err = fit(tmp_path, EquivarianceCallback(output_dir=tmp_path), data=Data(val=Records()))
    assert str(err) == (
        "the val dataloader's batch holds no float images (B, C, H, W): got a dict with keys "
        "['id', 'caption', 'label']; set the callback's image_key to the dict key that holds them"
    )
    err = fit(
        tmp_path, EquivarianceCallback(output_dir=tmp_path, image_key="pixels"), data=Data(val=Records())
    )  # fmt: skip
    assert "no image_key 'pixels': set image_key to the key that holds the images" in str(err)


def test_unknown_layer_names_the_valid_named_modules(tmp_path):
    err = fit(
        tmp_path, EquivarianceCallback(output_dir=tmp_path, model_attr="body", layers=["conv9"])
    )
    assert (
        "unknown layer name(s) ['conv9'] for Sequential; valid names are: 0, 1, 2, 3, output"
        in str(err)
    )
    err = fit(
        tmp_path, SeparabilityCallback(output_dir=tmp_path, model_attr="body", layers=["conv9"])
    )
    assert "unknown layer 'conv9' of Sequential; valid names (named_modules()): 0, 1, 2, 3" in str(
        err
    )
    err = fit(
        tmp_path, RepresentativeInterpretationCallback(output_dir=tmp_path, model_attr="body", layer="conv9")
    )  # fmt: skip
    assert isinstance(err, UnknownLayerError)
    assert "unknown layer 'conv9' to split Sequential at; valid layer names: 0, 1, 2, 3" in str(err)


def test_a_head_that_is_not_piecewise_linear_names_the_module(tmp_path):
    head = nn.Sequential(nn.Linear(2 * 36, 4), nn.Tanh(), nn.Linear(4, 2))
    cb = RepresentativeInterpretationCallback(output_dir=tmp_path, model_attr="body", layer="1")
    err = fit(tmp_path, cb, module=Net(head=head))
    assert isinstance(err, NotPiecewiseLinearError) and isinstance(err, TypeError)
    assert str(err).startswith(
        "module '3.1' (Tanh) after the split layer is not piecewise linear, so its decision "
        "boundaries would not be exact; split at a later layer"
    )


def test_a_model_that_cannot_be_split(tmp_path):
    cb = RepresentativeInterpretationCallback(
        output_dir=tmp_path
    )  # the module itself: no sequential()
    err = fit(tmp_path, cb)
    assert str(err).startswith(
        "cannot split a Net: pass an nn.Sequential or a model with a sequential()"
    )


def test_bad_options_fail_at_instantiation():
    with pytest.raises(ConfigError, match="on_error must be one of skip, raise, got 'ignore'"):
        EquivarianceCallback(on_error="ignore")
    with pytest.raises(ConfigError, match="split must be one of train/val/test"):
        SeparabilityCallback(split="holdout")


# ------------------------------------------------------------------------------ command line
def test_cli_unknown_model_attr_is_one_line(tmp_path):
    proc = run_script(
        "train.py", *FAST, "debug=fast_dev_run", "data.num_samples=64", "model=alexnet",
        "model.net.width_mult=0.125", "model.net.hidden=16",
        "callbacks.equivariance.model_attr=backbone", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert (
        "error: callbacks.equivariance: model_attr='backbone': ClassificationModule has no attribute 'backbone'; its "
        "submodules are: net, criterion, train_metrics, val_metrics, test_metrics, test_confmat"
    ) in out


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    cfg = compose(
        "train",
        [*FAST, "model=alexnet", "model.net.width_mult=0.125", "model.net.hidden=16",
         "callbacks.equivariance=null"],
        out,
    )  # fmt: skip
    pipeline.train(cfg)
    return json.loads((out / "metrics.json").read_text())["best_ckpt"]


def test_cli_evaluate_on_incompatible_data_is_one_line(digits_ckpt, tmp_path):
    proc = run_script(
        "evaluate.py", f"ckpt_path={digits_ckpt}", "data=shapes", "logger=csv",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "Could not override" not in out
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert lines == [
        f"error: data=shapes does not fit checkpoint {digits_ckpt}, which was trained on digits: "
        "shapes has 4 classes instead of 10; evaluate on data with 1 channel(s), 32 pixels per "
        "side, 10 classes, or pick data.classes to match its 10 classes"
    ]
