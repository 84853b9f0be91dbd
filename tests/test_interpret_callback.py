"""RepresentativeInterpretationCallback in a tiny Lightning run: files and numbers."""

import json

import pytest
import torch
from torch import nn

from glassbox.callbacks.interpretation import RepresentativeInterpretationCallback
from helpers import RecordingLogger, TensorDataModule, TinyModule, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def make_images(n, generator):
    """Three classes: a bright 3×3 blob top-left, centre or bottom-right of a 12×12 image."""
    y = torch.randint(0, 3, (n,), generator=generator)
    x = 0.3 * torch.randn(n, 1, 12, 12, generator=generator)
    for c, (r, s) in enumerate([(1, 1), (5, 5), (8, 8)]):
        x[y == c, :, r : r + 3, s : s + 3] += 2.0
    return (x - 0.1) / 0.5, y


def tiny_data() -> TensorDataModule:
    g = torch.Generator().manual_seed(0)
    data = {s: make_images(n, g) for s, n in (("train", 240), ("val", 60))}
    dm = TensorDataModule(data, num_classes=3)
    dm.mean, dm.std = [0.1], [0.5]
    return dm


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3),
    )  # fmt: skip


def test_callback_writes_interpretations_and_ad_ai(tmp_path):
    cb = RepresentativeInterpretationCallback(
        output_dir=tmp_path,
        at_fit_end=True,
        at_test_end=False,
        num_images=24,
        reuse_k=3,
        road_percentiles=[50],
        road_images=4,
        num_reference=200,
        interpretations_per_class=2,
        num_candidates=30,
        baselines=["gradcam", "gradcam++", "scorecam"],
        gallery_size=4,
        max_galleries=3,
    )
    logger = RecordingLogger()
    trainer = tiny_trainer(logger, [cb], max_epochs=3, deterministic=True)
    module = TinyModule(tiny_cnn())
    trainer.fit(module, datamodule=tiny_data())
    assert trainer.callback_metrics["val/acc"] > 0.9  # the tiny net learned the task

    out = tmp_path / "interpretation" / "fit_end"
    meta = json.loads((out / "interpretations.json").read_text())
    assert meta["layer"] == "3" and meta["feature_shape"] == [8, 12, 12]
    records = meta["interpretations"]
    assert {r["class"] for r in records} == {0, 1, 2} and len(records) <= 6
    ref_x, _ = tiny_data().analysis_batch("train", 200, 0)
    with torch.no_grad():
        pred = module.net(ref_x).argmax(1)
    for r in records:
        covered = torch.tensor(r["covered"], dtype=torch.long)
        assert int(pred[r["seed_index"]]) == r["class"] and r["seed_index"] in r["covered"]
        assert int((pred[covered] != r["class"]).sum()) == r["covered_other"] <= r["delta"]
        assert r["coverage"] == pytest.approx(r["covered_same"] / r["class_size"])
        assert 0 < r["coverage"] <= 1 and 0 < r["precision"] <= 1
        assert 1 <= r["num_boundaries"] <= 30 and r["heldout"]["images"] == 24

    table = json.loads((out / "evaluation.json").read_text())["methods"]
    methods = ["RI", "gradcam", "gradcam++", "scorecam", "random", "centre"]
    assert list(table) == methods
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["protocol"] == "reuse" and list(evaluation["protocols"]) == [
        "reuse",
        "per_image",
    ]
    reuse = evaluation["protocols"]["reuse"]
    assert all(row["n"] == 3 * len(records) for row in reuse.values())  # k images each
    assert evaluation["protocols"]["per_image"]["RI"]["n"] == 24

    saved = torch.load(out / "boundaries.pt")
    assert len(saved) == len(records) and saved[0]["weight"].shape[1] == 8 * 12 * 12
    galleries = sorted(out.glob("gallery_class*.png"))
    assert len(galleries) == 3 and all(p.stat().st_size > 1000 for p in galleries)

    m = logger.metrics
    assert m["interpretation/num_interpretations"] == len(records)
    assert m["interpretation/coverage"] == pytest.approx(
        sum(r["coverage"] for r in records) / len(records)
    )
    assert 0 < m["interpretation/class_coverage"] <= 1
    assert m["interpretation/RI/AD"] == pytest.approx(table["RI"]["AD"])
    assert m["interpretation/scorecam/AI"] == pytest.approx(table["scorecam"]["AI"])
    assert m["interpretation/reuse/RI/AD"] == pytest.approx(table["RI"]["AD"])
    for protocol in ("reuse", "per_image"):
        row = evaluation["protocols"][protocol]["gradcam"]
        for measure in ("AD@5", "AI@50", "deletion_auc", "road_morf", "wilcoxon_p_AD"):
            assert m[f"interpretation/{protocol}/gradcam/{measure}"] == pytest.approx(row[measure])
    assert 0 <= m["interpretation/rotation_consistency"] <= 1
    assert m["interpretation/heatmap_equivariance"] >= 0
    cols, rows = logger.tables["interpretation/ad_ai"]
    assert cols == ["method", "AD", "AI"] and [r[0] for r in rows] == methods
    cols, rows = logger.tables["interpretation/faithfulness"]
    assert cols[:4] == ["protocol", "method", "AD", "AI"]
    assert [r[:2] for r in rows] == [[p, x] for p in ("reuse", "per_image") for x in methods]
    assert len(logger.images["interpretation/galleries"][0]) == 3
    # the analysis left the module in training mode with no stray gradients
    assert module.training


def test_bad_config_fails_at_construction():
    with pytest.raises(ValueError, match="unknown baselines"):
        RepresentativeInterpretationCallback(baselines=["lime"])
    with pytest.raises(ValueError, match="reference_split"):
        RepresentativeInterpretationCallback(reference_split="holdout")


def test_callback_on_a_glassbox_net_after_test(tmp_path):
    """The glass-box net: ψ = `group_pool` (invariant maps), the PCA/linear reduction accepted
    as affine, and e2cnn's filters cached inside Lightning's inference-mode test loop."""
    from glassbox.models.glassbox_net import GlassBoxNet

    cb = RepresentativeInterpretationCallback(
        output_dir=tmp_path,
        at_fit_end=False,
        at_test_end=True,
        num_images=12,
        reuse_k=4,
        road_images=4,
        num_reference=120,
        interpretations_per_class=1,
        num_candidates=20,
        baselines=["gradcam"],
        max_galleries=1,
    )
    torch.manual_seed(0)
    net = GlassBoxNet(
        in_channels=1,
        image_size=12,
        num_classes=3,
        group_order=4,
        widths=(4, 8),
        kernel_sizes=(3, 3),
        pool_after=(True, False),
        reduced_dim=4,
        classifier_hidden=(8,),
        reduction="linear",
    )
    module, data = TinyModule(net), tiny_data()  # tested on the validation split
    trainer = tiny_trainer(RecordingLogger(), [cb], max_epochs=8)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    out = tmp_path / "interpretation" / "test"
    meta = json.loads((out / "interpretations.json").read_text())
    assert meta["layer"] == "group_pool" and meta["feature_shape"] == [8, 6, 6]
    assert len({r["class"] for r in meta["interpretations"]}) >= 2
    evaluation = json.loads((out / "evaluation.json").read_text())
    table = evaluation["methods"]
    assert set(table) == {"RI", "gradcam", "random", "centre"}
    # the glass-box ψ is C4-equivariant and its head invariant: interpretations rotate exactly
    assert evaluation["rotation_consistency"] == 1.0
    assert evaluation["heatmap_equivariance"] <= 1e-5
    assert len(list(out.glob("gallery_class*.png"))) == 1
