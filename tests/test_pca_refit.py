"""The PCA reduction describes the trained representation: refit at ``pca_refit_fraction`` of
the epochs, representation frozen afterwards, classifier re-expressed and fine-tuned."""

from __future__ import annotations

import functools
import logging

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from glassbox.errors import ConfigError
from glassbox.models.glassbox_net import GlassBoxNet
from glassbox.models.module import ClassificationModule
from glassbox.models.reduction import Reduction, refit_epoch_for
from helpers import RecordingLogger, TensorDataModule

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    image_size=16,
    num_classes=3,
    group_order=4,
    widths=(3, 4, 6),
    kernel_sizes=(3, 3, 3),
    reduced_dim=3,
    classifier_hidden=(8,),
)


def _data(seed: int = 0) -> TensorDataModule:
    """Three classes of 16×16 images: a bright blob in one of three places, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % 3
        x = 0.3 * torch.randn(n, 1, 16, 16, generator=g)
        for c, (r, col) in enumerate([(3, 3), (8, 11), (12, 5)]):
            x[y == c, :, r - 2 : r + 2, col - 2 : col + 2] += 1.5
        return x, y

    return TensorDataModule({"train": split(96), "val": split(48)}, num_classes=3, batch_size=16)


def _module(fraction=0.5, trainable=False, reduction="pca", epochs=4, seed=0):
    torch.manual_seed(seed)
    net = GlassBoxNet(reduction=reduction, reduction_trainable=trainable, **TINY)
    return ClassificationModule(
        net,
        # a large weight decay: frozen parameters would visibly move if the optimizer touched them
        functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1),
        functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
        num_classes=3,
        pca_refit_fraction=fraction,
    )


def _trainer(epochs=4, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=kwargs.pop("logger", RecordingLogger()),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        num_sanity_val_steps=0,
        **kwargs,
    )


def _representation_state(module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics) of everything before the reduction."""
    return {
        k: v.detach().clone()
        for k, v in module.net.state_dict().items()
        if not k.startswith(("reduction.", "classifier."))
    }


class SnapshotAtEpoch(Callback):
    """The representation's state at the first batch of ``epoch`` (after the module's
    ``on_train_epoch_start``, i.e. just after a refit at that epoch)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.state, self.classifier, self.fit_start_ratios = epoch, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.fit_start_ratios is None:
            self.fit_start_ratios = pl_module.net.reduction.explained_variance_ratio.clone()
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            self.state = _representation_state(pl_module)
            self.classifier = pl_module.net.classifier[0].weight.detach().clone()


def _pca_from_scratch(module, dm) -> torch.Tensor:
    """Explained-variance ratios of the final model's invariant representation of the training
    images, by an eigen-decomposition of the float64 covariance (independent of Reduction)."""
    net = module.net.eval()
    with torch.no_grad():
        feats = net.layers(dm.tensors("train")[0]).invariant.double()
    eig = torch.linalg.eigvalsh(torch.cov(feats.T)).flip(0).clamp_min(0)
    return eig / eig.sum()


@pytest.mark.parametrize("trainable", [False, True])
def test_logged_variance_is_that_of_the_final_representation(trainable):
    dm, module = _data(), _module(trainable=trainable)
    snap = SnapshotAtEpoch(2)
    trainer = _trainer(callbacks=[snap])
    trainer.fit(module, datamodule=dm)
    red = module.net.reduction
    history = trainer.logger.history
    logged = [h["pca/variance_kept"] for h in history if "pca/variance_kept" in h]
    assert len(logged) == 2  # at fit start (untrained representation) and at the refit
    assert [h["pca/refit_epoch"] for h in history if "pca/refit_epoch" in h] == [2.0]
    assert int(red.refit_epoch) == 2 == refit_epoch_for(0.5, 4)

    ratios = _pca_from_scratch(module, dm)
    k = red.linear.out_features
    assert logged[-1] == pytest.approx(float(ratios[:k].sum()), abs=1e-6)
    assert red.variance_kept == pytest.approx(float(ratios[:k].sum()), abs=1e-6)
    n = ratios.numel()
    assert torch.allclose(red.explained_variance_ratio[:n].double(), ratios, atol=1e-6, rtol=0)
    # the fit-start PCA described another (the untrained) representation
    assert (snap.fit_start_ratios - red.explained_variance_ratio).abs().max() > 1e-2
    assert logged[0] != logged[-1]

    # frozen from the refit on: parameters and BatchNorm statistics bit for bit, despite AdamW's
    # weight decay; the classifier (and a trainable reduction) kept learning
    final = _representation_state(module)
    assert snap.state.keys() == final.keys() and any("running_mean" in k for k in final)
    for name, value in snap.state.items():
        assert torch.equal(final[name], value), name
    assert not torch.equal(module.net.classifier[0].weight, snap.classifier)
    if not trainable:  # the frozen PCA map is exactly the fit on the final representation
        assert not red.linear.weight.requires_grad
    assert all(not p.requires_grad for p in module.net.representation.parameters())


def test_refit_keeps_the_composed_map_when_the_new_components_span_the_features():
    """``carry``: where the features lie in a ``k``-dim affine subspace, re-expressing the
    classifier's first layer in the new basis leaves reduction → classifier unchanged."""
    torch.manual_seed(5)
    basis = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0][:, :3]
    x_old = torch.randn(300, 6, dtype=torch.float64) * torch.tensor([4.0, 3, 2, 1, 0.5, 0.2])
    x_new = (torch.randn(300, 3, dtype=torch.float64) * torch.tensor([3.0, 2, 1])) @ basis.T + 1.5
    for threshold in (None, 0.9):
        red = Reduction(6, 3, "pca", variance_threshold=threshold).double()
        clf = nn.Linear(3, 4).double()
        red.fit(x_old)
        with torch.no_grad():
            before = clf(red(x_new))
        red.fit(x_new, carry=clf)
        with torch.no_grad():
            after = clf(red(x_new))
        if threshold is None:
            assert torch.allclose(after, before, atol=1e-9), (after - before).abs().max()
        else:  # the dropped components' share of the variance is all that may change
            assert red.kept_dim == 2
            rel = (after - before).norm() / (before - before.mean(0)).norm()
            assert 0 < float(rel) < 0.5
    with pytest.raises(ConfigError, match="takes 5 inputs"):
        Reduction(6, 3, "pca").fit(x_new.float(), carry=nn.Linear(5, 2))


def test_resume_in_the_second_stage_neither_refits_nor_unfreezes(tmp_path, caplog):
    dm = _data()
    ckpts = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    module = _module()
    _trainer(callbacks=[ckpts], enable_checkpointing=True).fit(module, datamodule=dm)
    want = _representation_state(module)

    # the end-of-epoch-2 checkpoint: refitted at the start of epoch 2, so in the second stage
    resumed = _module(seed=1)  # other initial weights: everything must come from the checkpoint
    logger = RecordingLogger()
    with caplog.at_level(logging.INFO, logger="glassbox.models.module"):
        _trainer(logger=logger).fit(resumed, datamodule=dm, ckpt_path=tmp_path / "epoch=2.ckpt")
    assert "refitted" not in caplog.text and "PCA reduction fitted" not in caplog.text
    assert not any("pca/refit_epoch" in h or "pca/variance_kept" in h for h in logger.history)
    assert int(resumed.net.reduction.refit_epoch) == 2
    got = _representation_state(resumed)
    for name, value in want.items():
        assert torch.equal(got[name], value), name
    assert torch.equal(
        resumed.net.reduction.explained_variance_ratio,
        module.net.reduction.explained_variance_ratio,
    )
    assert not resumed.net.representation.training  # BatchNorm statistics stay frozen


def test_schedule_edges(caplog):
    assert [refit_epoch_for(0.8, e) for e in (2, 3, 10, 100)] == [1, 2, 8, 80]
    assert refit_epoch_for(0.01, 10) == 1 and refit_epoch_for(0.99, 10) == 9
    with pytest.raises(ConfigError, match="max_epochs >= 2"):
        refit_epoch_for(0.5, 1)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=rf"pca_refit_fraction={bad} must be a fraction"):
            _module(fraction=bad)
    dm = _data()
    with pytest.raises(ConfigError, match=r"unbounded \(-1\); set trainer.max_epochs"):
        _trainer(epochs=-1, max_steps=2).fit(_module(), datamodule=dm)

    # fast_dev_run and a linear reduction: no refit, nothing frozen
    with caplog.at_level(logging.INFO, logger="glassbox.models.module"):
        trainer = _trainer(fast_dev_run=True)
        module = _module()
        trainer.fit(module, datamodule=dm)
    assert "PCA refit skipped: trainer.max_epochs=1" in caplog.text
    assert not module.net.reduction.refitted and module.net.representation.training
    linear = _module(reduction="linear", epochs=2)
    trainer = _trainer(epochs=2, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(linear, datamodule=dm)
    assert not any("pca/" in k for h in trainer.logger.history for k in h)
    assert all(p.requires_grad for p in linear.net.parameters())


def test_a_checkpoint_from_before_the_refit_schedule_loads_as_never_refitted():
    net = GlassBoxNet(**TINY)
    old = {k: v for k, v in net.state_dict().items() if k != "reduction.refit_epoch"}
    net.reduction.refit_epoch.fill_(3)
    net.load_state_dict(old, strict=True)
    assert int(net.reduction.refit_epoch) == -1 and not net.reduction.refitted
