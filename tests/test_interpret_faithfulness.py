"""The faithfulness suite and the two comparison protocols against hand-computed oracles:
a model whose class evidence sits in one known quadrant, heat maps from a ψ smaller than
the image, and the reuse protocol's channel weights against the grad-cam package."""

import math

import pytest
import torch
from torch import nn

from glassbox.interpret import RepresentativeInterpreter, interpretation_heatmaps
from glassbox.interpret.boundaries import LinearBoundaries
from glassbox.interpret.consistency import rotation_consistency
from glassbox.interpret.evaluation import cam_saliency, keep_most_important
from glassbox.interpret.faithfulness import (
    centre_prior_saliency,
    deletion_insertion_auc,
    drop_increase,
    faithfulness_suite,
    keep_mask,
    paired_wilcoxon,
    positive_fraction,
    road_scores,
)
from glassbox.interpret.protocols import (
    cam_channel_weights,
    per_image_protocol,
    reuse_protocol,
    weighted_maps,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)

S = 0.1  # evidence scale: logit_0 = S · (sum of the top-left quadrant), logit_1 = 0


class QuadrantModel(nn.Module):
    """Class-0 evidence only in the top-left 4×4 quadrant of an 8×8 image."""

    def forward(self, x):
        z = S * x[:, 0, :4, :4].sum(dim=(1, 2))
        return torch.stack([z, torch.zeros_like(z)], 1)


def quadrant_map(n=3):
    m = torch.zeros(n, 8, 8)
    m[:, :4, :4] = 1.0
    return m


def test_ad_of_a_perfect_and_an_inverted_map_by_hand():
    x = torch.ones(3, 1, 8, 8)
    cls = torch.zeros(3, dtype=torch.long)
    model = QuadrantModel()
    y = 1 / (1 + math.exp(-S * 16))  # sigmoid(1.6): the full quadrant
    res = drop_increase(model, x, quadrant_map(), cls, keeps=[0.25])
    drop, inc = res[0.25]
    assert torch.allclose(drop, torch.zeros(3)) and inc.sum() == 0  # keeps exactly the quadrant
    drop, inc = drop_increase(model, x, 1 - quadrant_map(), cls, keeps=[0.25])[0.25]
    # the inverted map keeps 16 pixels outside the quadrant: Y′ = sigmoid(0) = 1/2
    assert torch.allclose(drop, torch.full((3,), (y - 0.5) / y), atol=1e-6)
    table = faithfulness_suite(
        model,
        {"perfect": (x, quadrant_map(), cls), "inverted": (x, 1 - quadrant_map(), cls)},
        keep=0.25, keeps=[0.25], road_percentiles=None, reference="perfect",
    )  # fmt: skip
    assert table["perfect"]["AD"] == pytest.approx(0.0, abs=1e-5)
    assert table["inverted"]["AD"] == pytest.approx(100 * (y - 0.5) / y, abs=1e-4)
    assert table["perfect"]["positive_fraction"] == pytest.approx(25.0)
    assert table["inverted"]["positive_fraction"] == pytest.approx(75.0)
    # 3 identical pairs, all differences equal: the signed-rank test's smallest p-value
    assert table["inverted"]["wilcoxon_p_AD"] == pytest.approx(0.25)


def test_deletion_and_insertion_auc_by_hand():
    x = torch.ones(2, 1, 8, 8)
    cls = torch.zeros(2, dtype=torch.long)
    y = 1 / (1 + math.exp(-S * 16))
    dele, ins = deletion_insertion_auc(QuadrantModel(), x, quadrant_map(2), cls, steps=4)
    # steps of 16 pixels: the first step removes (inserts) exactly the quadrant
    assert torch.allclose(dele, torch.full((2,), 0.25 * (y + 0.5) / 2 + 0.75 * 0.5), atol=1e-6)
    assert torch.allclose(ins, torch.full((2,), 0.25 * (0.5 + y) / 2 + 0.75 * y), atol=1e-6)


def test_ties_are_broken_by_a_seeded_random_order_not_memory_order():
    flat = torch.zeros(4, 8, 8)
    flat[:, 7, 7] = 1.0  # one positive pixel, fewer than the keep fraction
    m0 = keep_mask(flat, 0.25, seed=0)
    assert (m0.reshape(4, -1).sum(1) == 16).all() and m0[:, 7, 7].all()  # positives first
    assert torch.equal(m0, keep_mask(flat, 0.25, seed=0))  # seeded
    assert not torch.equal(m0, keep_mask(flat, 0.25, seed=1))
    first = torch.zeros(64, dtype=torch.bool)
    first[:15] = True
    assert not (m0.reshape(4, -1)[:, :15] == first[:15]).all(1).any()  # not the first pixels
    assert not torch.equal(m0[0], m0[1])  # an independent order per image
    kept = keep_most_important(torch.ones(4, 1, 8, 8), flat, keep=0.25, seed=0)
    assert torch.equal(kept[:, 0] != 0, m0)
    assert torch.allclose(positive_fraction(flat), torch.full((4,), 1 / 64))


def test_centre_prior_peaks_in_the_centre():
    c = centre_prior_saliency(1, 8, 8)[0]
    assert c[3, 3] == c[4, 4] == c.max() and c[0, 0] == c[7, 7] == 0.0


def test_wilcoxon_matches_scipy_and_equal_samples_give_one():
    from scipy.stats import wilcoxon

    a, b = torch.rand(30, generator=torch.Generator().manual_seed(0)), torch.rand(30)
    assert paired_wilcoxon(a, b) == pytest.approx(wilcoxon(a.numpy(), b.numpy()).pvalue)
    assert paired_wilcoxon(a, a) == 1.0


def test_road_comes_from_the_grad_cam_package():
    x = quadrant_map(2)[:, None] * 4.0  # bright quadrant on a black image
    cls = torch.zeros(2, dtype=torch.long)
    y = 1 / (1 + math.exp(-S * 64))
    morf_good, lerf_good = road_scores(QuadrantModel(), x, quadrant_map(2), cls, [75])
    morf_bad, _ = road_scores(QuadrantModel(), x, 1 - quadrant_map(2), cls, [75])
    # imputing the quadrant from its black neighbours removes most of the evidence
    assert (morf_good < -0.5 * (y - 0.5)).all()
    # imputing another quarter, or the least relevant pixels, keeps most of it
    assert (morf_bad.abs() < 0.1 * (y - 0.5)).all() and (lerf_good > morf_good).all()


def test_heatmap_upsamples_a_psi_smaller_than_the_image():
    """ψ is 2×2 on an 8×8 image: bilinear upsampling (align_corners=False) of [[1,0],[0,0]]
    weighs the top-left cell by 1, 1, .875, .625, .375, .125, 0, 0 along each axis."""
    b = LinearBoundaries(
        torch.ones(1, 4), torch.zeros(1), torch.zeros(1).long(), torch.ones(1).long(), (1, 2, 2)
    )
    feats = torch.zeros(1, 1, 2, 2)
    feats[0, 0, 0, 0] = 1.0
    m = interpretation_heatmaps(b, feats, (8, 8))[0]
    w = torch.tensor([1, 1, 0.875, 0.625, 0.375, 0.125, 0, 0])
    torch.testing.assert_close(m, w[:, None] * w[None], rtol=0, atol=1e-6)
    assert torch.equal(keep_mask(m[None], 0.25)[0], quadrant_map(1)[0].bool())
    # the upsampled map on the quadrant model: AD 0, the inverted one: the hand value
    x, cls = torch.ones(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)
    y = 1 / (1 + math.exp(-S * 16))
    t = faithfulness_suite(
        QuadrantModel(), {"RI": (x, m[None], cls), "inv": (x, 1 - m[None], cls)},
        keep=0.25, keeps=[0.25], road_percentiles=None,
    )  # fmt: skip
    assert t["RI"]["AD"] == pytest.approx(0.0, abs=1e-5)
    assert t["inv"]["AD"] == pytest.approx(100 * (y - 0.5) / y, abs=1e-4)


def conv_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),  # ψ: (6, 4, 4), smaller than the 8×8 image
        nn.Flatten(),
        nn.Linear(96, 3),
    ).eval()
    with torch.no_grad():
        logits = model(torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(5)))
        model[-1].bias -= logits.mean(0)
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_reused_weights_on_the_image_itself_reproduce_the_package_cam(method):
    """α(x) from the package's get_cam_weights applied to x's own ψ is the package's CAM."""
    model = conv_model()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    cls = model(x).argmax(1)
    alpha = cam_channel_weights(model, model[3], x, cls, method)
    assert alpha.shape == (5, 6)
    assert all(p.grad is None for p in model.parameters())  # the optimiser's state untouched
    if method == "gradcam":  # the package's Grad-CAM weights: mean gradient over positions
        xg = x.clone()
        acts = model[:4](xg).detach().requires_grad_(True)
        model[4:](acts).gather(1, cls[:, None]).sum().backward()
        torch.testing.assert_close(alpha, acts.grad.mean(dim=(2, 3)))
    with torch.no_grad():
        feats = model[:4](x)
    mine = weighted_maps(alpha, feats, (8, 8))
    ref = cam_saliency(model, model[3], x, cls, method=method)
    # same weights, same activations; the package resizes with OpenCV's bilinear (the same
    # half-pixel convention) and normalises by max + 1e-7
    torch.testing.assert_close(mine, ref, atol=2e-3, rtol=0)


@pytest.fixture(scope="module")
def interpreted():
    model = conv_model()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(260, 1, 8, 8, generator=g)
    interp = RepresentativeInterpreter(model, images[:200], layer="3", num_candidates=20)
    its = [it for v in interp.cover_all(k=1).values() for it in v]
    return model, images, interp, its


def test_reuse_protocol_reuses_the_seed_weights_on_nearest_neighbours(interpreted):
    model, images, interp, its = interpreted
    unseen = images[200:]
    sets, idx = reuse_protocol(interp, its, images[:200], unseen, k=4, methods=["gradcam"])
    assert set(sets) == {"RI", "gradcam", "random", "centre"}
    n = 4 * len(its)
    for imgs, maps, cls in sets.values():
        assert imgs.shape == (n, 1, 8, 8) and maps.shape == (n, 8, 8) and cls.shape == (n,)
    # baselines: x's nearest unseen images in ψ-space, maps from α(x) (not α(x_new))
    it = its[0]
    d = (interp.features_of(unseen).flatten(1) - interp.features[it.seed_index].flatten()).norm(
        dim=1
    )
    assert set(idx["nn_index"][0].tolist()) == set(d.argsort()[:4].tolist())
    seed_img = images[it.seed_index : it.seed_index + 1]
    alpha = cam_channel_weights(model, model[3], seed_img, torch.tensor([it.cls]), "gradcam")
    expect = weighted_maps(
        alpha.expand(4, -1), interp.features_of(unseen[idx["nn_index"][0]]), (8, 8)
    )
    torch.testing.assert_close(sets["gradcam"][1][:4], expect)
    assert (sets["gradcam"][2][:4] == it.cls).all()  # AD/AI for the seed's class
    # RI: the unseen images ranked first under P(x), their RI heat maps
    ranked, _ = interp.rank(it, unseen)
    assert torch.equal(idx["ri_index"][0], ranked[:4])
    torch.testing.assert_close(sets["RI"][1][:4], interp.heatmaps(it, unseen[ranked[:4]]))
    table = faithfulness_suite(model, sets, road_percentiles=None)
    assert 0.0 <= table["gradcam"]["wilcoxon_p_AD"] <= 1.0


def test_per_image_protocol_scores_the_same_images(interpreted):
    model, images, interp, its = interpreted
    sets, info = per_image_protocol(interp, its, images[200:230], methods=["gradcam"])
    assert torch.equal(sets["RI"][0], sets["gradcam"][0])
    torch.testing.assert_close(
        sets["gradcam"][1], cam_saliency(model, model[3], images[200:230], sets["RI"][2])
    )
    assert info["covered"].shape == (30,)


def test_rotation_consistency_of_an_invariant_model_is_exact():
    """ψ equivariant (a conv with a C4-symmetric kernel), head invariant (global pooling)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():  # C4-symmetric kernels
        k = conv.weight
        conv.weight.copy_((k + k.rot90(1, (2, 3)) + k.rot90(2, (2, 3)) + k.rot90(3, (2, 3))) / 4)
    model = nn.Sequential(
        conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)
    ).eval()
    images = torch.randn(160, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model[-1].bias -= model(images).mean(0)
    interp = RepresentativeInterpreter(model, images[:120], layer="1", num_candidates=10)
    its = [it for v in interp.cover_all(k=1).values() for it in v]
    r = rotation_consistency(interp, its, images[120:])
    assert r["rotation_consistency"] == 1.0 and r["heatmap_equivariance"] <= 1e-5
    # a model without the symmetry (a random kernel) is not consistent
    with torch.no_grad():
        model[0].weight[:, :, 0] += 0.5
        model[-1].bias -= model(images).mean(0)
    interp = RepresentativeInterpreter(model, images[:120], layer="1", num_candidates=10)
    its = [it for v in interp.cover_all(k=1).values() for it in v]
    r = rotation_consistency(interp, its, images[120:])
    assert r["heatmap_equivariance"] > 1e-2


def test_report_tabulates_the_paper_shaped_table():
    import pandas as pd

    from glassbox.report import interpretation_tables

    summary = pd.DataFrame(
        {
            "group": ["alexnet", "glassbox"],
            "n": [3, 3],
            "interpretation/reuse/RI/AD/mean": [20.0, 10.0],
            "interpretation/reuse/RI/AD/std": [1.0, 0.5],
            "interpretation/reuse/gradcam/AD/mean": [30.0, 12.0],
            "interpretation/reuse/gradcam/AD/std": [2.0, 0.25],
            "interpretation/per_image/RI/AI/mean": [5.0, 6.0],
            "interpretation/per_image/RI/AI/std": [0.0, 1.0],
            "interpretation/reuse/RI/deletion_auc/mean": [0.1, 0.2],
            "interpretation/reuse/RI/deletion_auc/std": [0.0, 0.0],
        }
    )
    tables = interpretation_tables(summary)
    assert set(tables) == {"reuse", "per_image"}
    reuse = tables["reuse"].set_index("method")
    assert reuse.loc["RI", "alexnet AD"] == "20.00 ± 1.00"
    assert reuse.loc["gradcam", "glassbox AD"] == "12.00 ± 0.25"
    assert "alexnet deletion_auc" not in reuse.columns  # the paper's measures only
    assert tables["per_image"].set_index("method").loc["RI", "glassbox AI"] == "6.00 ± 1.00"
