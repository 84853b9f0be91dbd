"""SeparabilityCallback in tiny Lightning runs: files written, numbers logged and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from glassbox.analysis.layers import collect_dataset_features
from glassbox.analysis.separability import class_separability
from glassbox.callbacks.separability import SeparabilityCallback
from helpers import RecordingLogger, TensorDataModule, TinyGlassBox, TinyModule, tiny_trainer


def plain_cnn(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes),
    )  # fmt: skip


def tiny_data() -> TensorDataModule:
    """Three rotation-invariant classes on 12×12 images: a bright centre, a bright ring, nothing."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = 0.3 * torch.randn(120, 1, 12, 12, generator=g)
    x[y == 0, :, 4:8, 4:8] += 2.0
    ring = torch.zeros(12, 12)
    ring[2:10, 2:10] = 1.5
    ring[4:8, 4:8] = 0.0
    x[y == 1, 0] += ring
    splits = {"train": (x[:72], y[:72]), "val": (x[72:90], y[72:90]), "test": (x[90:], y[90:])}
    return TensorDataModule(splits, num_classes=3, batch_size=24)


def run(module: TinyModule, callback: SeparabilityCallback, fit_epochs: int = 0) -> RecordingLogger:
    logger = RecordingLogger()
    trainer = tiny_trainer(logger, [callback], max_epochs=max(fit_epochs, 1))
    dm = tiny_data()
    if fit_epochs:
        trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return logger


def test_callback_on_a_glassbox_net_writes_and_logs_the_report(tmp_path):
    module = TinyModule(TinyGlassBox(widths=(3, 4)))
    cb = SeparabilityCallback(output_dir=tmp_path, classifiers=["logreg", "lda"], pca_threshold=0.9)
    logger = run(module, cb, fit_epochs=2)
    out = tmp_path / "separability" / "test"
    for name in ("separability.csv", "separability.md", "separability.png", "probes.csv", "probes.png",
                 "pca.json", "pca_explained_variance.png", "pose.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "separability.json").read_text())
    assert [(r["model"], r["layer"], r["samples"]) for r in rows] == [
        ("pixels", "pixels", 30), *[("tiny", layer, 30) for layer in ("block1", "block2", "invariant", "reduced", "logits")]
    ]  # fmt: skip
    m = logger.metrics
    # the logged numbers are the metric's values on the test split's features
    x, y = tiny_data().tensors("test")
    feats, labels = collect_dataset_features(module.net, (x, y), ["invariant"])
    for layer in ("pixels", "invariant"):
        ref = class_separability(feats[layer], labels, num_classes=3)
        for measure in ("intra", "inter", "ratio", "fisher"):
            assert m[f"separability/{layer}/{measure}"] == pytest.approx(ref[measure], rel=1e-6)
    assert (
        0.0 <= m["separability/invariant/logreg_acc"] <= 1.0 and "separability/logits/lda_acc" in m
    )
    # an exactly equivariant net: the pose estimate moves by exactly k quarter turns
    assert m["separability/pose/consistency"] == 1.0
    assert set(json.loads((out / "pose.json").read_text())) >= {
        "accuracy",
        "accuracy_k1",
        "consistency",
    }
    pca = json.loads((out / "pca.json").read_text())
    assert (
        pca["reduced_dim"] == 2
        and 0
        < m["separability/pca/variance_kept"]
        <= m["separability/pca/variance_kept_optimal"] + 1e-9
    )
    assert m["separability/pca/threshold_dim"] == pca["threshold_dim"] >= 1
    columns, data = logger.tables["separability/table"]
    assert columns[:2] == ["model", "layer"] and len(data) == 6
    assert len(logger.tables["separability/probes"][1]) == 6 * 2
    images, captions = logger.images["separability/plots"]
    assert captions == ["separability", "probes", "pca_explained_variance"] and all(
        Path(p).exists() for p in images
    )


def test_streaming_grouped_and_single_pass_agree(tmp_path):
    module = TinyModule(plain_cnn(), name="cnn")
    streamed = run(module, SeparabilityCallback(output_dir=tmp_path / "a", classifiers=[])).metrics
    # a budget so small that every layer is its own group
    grouped = run(
        module,
        SeparabilityCallback(output_dir=tmp_path / "b", classifiers=["lda"], memory_budget_mb=1e-6),
    ).metrics
    keys = [k for k in streamed if k.startswith("separability/")]
    assert {k.split("/")[1] for k in keys} == {"pixels", "conv1", "conv2", "logits"}
    for k in keys:
        assert grouped[k] == pytest.approx(streamed[k], rel=1e-9)
    assert "separability/conv1/lda_acc" in grouped and not any(
        "pose" in k or "pca" in k for k in grouped
    )


def test_extra_rotated_test_passes_are_skipped(tmp_path):
    module = TinyModule(plain_cnn())
    module.test_prefix = "test_rot90"
    callback = SeparabilityCallback(output_dir=tmp_path, classifiers=[])
    logger = run(module, callback)
    assert not any(k.startswith("separability/") for k in logger.metrics)
    assert not (tmp_path / "separability").exists() and callback.final_results() == {}


def test_bad_config(tmp_path):
    with pytest.raises(ValueError, match="unknown classifier 'knn'"):
        SeparabilityCallback(output_dir=tmp_path, classifiers=["knn"])
    with pytest.raises(ValueError, match="pose_class_source"):
        SeparabilityCallback(output_dir=tmp_path, pose_class_source="oracle")
    with pytest.raises(ValueError, match="pca_threshold"):
        SeparabilityCallback(output_dir=tmp_path, pca_threshold=1.5)
    with pytest.raises(ValueError, match="max_eval_samples"):
        SeparabilityCallback(output_dir=tmp_path, max_eval_samples=1)
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        run(TinyModule(plain_cnn()), SeparabilityCallback(output_dir=tmp_path, layers=["conv9"]))


def test_config_instantiates_the_callback(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(
        Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "separability.yaml"
    )
    node = cfg.separability
    node.output_dir = str(tmp_path)
    cb = instantiate(node)
    assert isinstance(cb, SeparabilityCallback) and cb.name == "separability"
    assert cb.classifiers == ["logreg", "svm", "lda"] and cb.split == "test" and cb.at_test_end


TINY_NETS = {
    "glassbox": [
        "model.net.widths=[2,3,4]",
        "model.net.group_order=4",
        "model.net.reduced_dim=3",
        "model.net.classifier_hidden=[8]",
    ],
    "alexnet": ["model.net.width_mult=0.125", "model.net.hidden=32"],
}


@pytest.mark.parametrize("model", ["glassbox", pytest.param("alexnet", marks=pytest.mark.slow)])
def test_train_pipeline_on_digits_writes_the_report(cfg_train, model):
    pipeline = pytest.importorskip("glassbox.pipeline")
    cfg = cfg_train(
        f"model={model}", "callbacks=[default,separability]", "callbacks.separability.max_train_samples=150",
        "callbacks.separability.max_eval_samples=60", "callbacks.separability.classifiers=[lda]", *TINY_NETS[model],
    )  # fmt: skip
    pipeline.train(cfg)
    out = Path(cfg.paths.output_dir) / "separability" / "test"
    rows = json.loads((out / "separability.json").read_text())
    assert rows[0]["layer"] == "pixels" and {r["model"] for r in rows[1:]} == {model}
    assert all(r["samples"] == 60 and r["fisher"] >= 0 for r in rows)
    if model == "glassbox":
        assert [r["layer"] for r in rows[1:]] == [
            "block1",
            "block2",
            "block3",
            "invariant",
            "reduced",
            "logits",
        ]
        assert json.loads((out / "pose.json").read_text())["consistency"] == 1.0
        assert json.loads((out / "pca.json").read_text())["reduced_dim"] == 3
    else:
        assert [r["layer"] for r in rows[1:]] == [
            "conv1",
            "conv2",
            "conv3",
            "conv4",
            "conv5",
            "fc1",
            "fc2",
            "logits",
        ]
        assert not (out / "pose.json").exists()
