"""Representative interpretations end to end: coverage semantics, δ, held-out, ranking,
heat maps, AD/AI against the grad-cam package, and the errors on bad input."""

import pytest
import torch
from torch import nn

from glassbox.interpret import (
    EmptyClassError,
    InfeasibleDeltaError,
    RepresentativeInterpreter,
    average_drop_increase,
    compare_saliency_methods,
    interpretation_heatmaps,
    keep_most_important,
    rank_by_interpretation,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def make_model(num_classes=4):
    """A random CNN whose last layer is centred so that every class gets predicted."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        ),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 24),
        nn.BatchNorm1d(24),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(24, num_classes),
    ).eval()
    with torch.no_grad():
        logits = model(torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(99)))
        model[-1].bias -= logits.mean(0)
        model[-1].weight /= logits.std(0)[:, None]
        model[-1].bias /= logits.std(0)
    return model


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(360, 1, 8, 8, generator=g)
    labels = torch.randint(0, 4, (360,), generator=g)
    interp = RepresentativeInterpreter(
        model, images[:300], reference_labels=labels[:300], num_candidates=50
    )
    results = interp.cover_all(k=2)
    return model, images, interp, results


def test_default_layer_and_reference_predictions(setup):
    model, images, interp, _ = setup
    assert interp.layer == "0.3" and interp.feature_shape == (8, 8, 8)
    with torch.no_grad():
        assert torch.equal(interp.predictions, model(images[:300]).argmax(1))


def test_covered_images_lie_on_the_seed_side_of_every_boundary(setup):
    _, _, interp, results = setup
    assert len(results) >= 2
    for cls, its in results.items():
        assert 1 <= len(its) <= 2
        for it in its:
            assert it.cls == cls and int(interp.predictions[it.seed_index]) == cls
            vals = it.boundaries.decision_values(interp.features)  # (N, |P|)
            on_seed_side = ((vals >= 0) == it.seed_sides).all(1)
            assert on_seed_side[it.seed_index]
            covered = torch.zeros(len(vals), dtype=torch.bool)
            covered[it.covered] = True
            assert torch.equal(on_seed_side, covered)  # exactly the reported images
            assert (it.boundaries.pos_class == cls).all()
            same = interp.predictions[it.covered] == cls
            assert int(same.sum()) == it.n_covered_same and int((~same).sum()) == it.n_covered_other
            assert it.n_covered_other <= it.delta == it.min_delta
            assert 0 < it.coverage <= 1 and 0 < it.precision <= 1
            assert it.num_candidates == min(50, int((interp.predictions != cls).sum()))


def test_seeds_of_a_class_come_from_uncovered_images(setup):
    _, _, _, results = setup
    for its in results.values():
        if len(its) == 2:
            assert its[1].seed_index not in set(its[0].covered.tolist())


def test_delta_zero_covers_no_image_of_another_class():
    model = make_model()
    images = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    interp = RepresentativeInterpreter(model, images, num_candidates=500, delta=0)
    for its in interp.cover_all(k=1).values():
        it = its[0]
        assert it.delta == 0 and it.n_covered_other == 0
        assert (interp.predictions[it.covered] == it.cls).all()
        assert it.precision == 1.0


def test_infeasible_delta_is_one_clear_error():
    model = make_model()
    images = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    interp = RepresentativeInterpreter(model, images, num_candidates=1)
    cls = max(interp.class_counts(), key=interp.class_counts().get)
    seed = int(torch.nonzero(interp.predictions == cls)[0])
    min_delta = interp.interpret(seed).min_delta
    assert min_delta > 0
    with pytest.raises(InfeasibleDeltaError, match=f"use delta >= {min_delta}"):
        interp.interpret(seed, delta=min_delta - 1)


def test_class_without_images_and_wrong_shapes_raise_clear_errors(setup):
    _, images, interp, _ = setup
    missing = next(c for c in range(10) if c not in interp.class_counts())
    with pytest.raises(
        EmptyClassError, match=f"no reference image is predicted as class {missing}"
    ):
        interp.cover_class(missing)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        interp.evaluate_heldout([], torch.randn(4, 1, 9, 9))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RepresentativeInterpreter(make_model(), torch.randn(10, 8, 8))


def test_heldout_coverage_and_precision(setup):
    _, images, interp, results = setup
    its = [it for v in results.values() for it in v]
    stats = interp.evaluate_heldout(its, images[300:])
    feats = interp.features_of(images[300:])
    preds = interp.predict(images[300:])
    for it, st in zip(its, stats):
        cov = it.covers(feats)
        assert st["covered"] == int(cov.sum())
        n_cls = int((preds == it.cls).sum())
        assert st["coverage"] == pytest.approx(int((cov & (preds == it.cls)).sum()) / max(1, n_cls))
        if st["covered"]:
            assert 0 <= st["precision"] <= 1


def test_ranking_puts_covered_first_then_by_distance(setup):
    _, _, interp, results = setup
    it = next(iter(results.values()))[0]
    order, dist = interp.rank(it)
    covered = torch.zeros(len(dist), dtype=torch.bool)
    covered[it.covered] = True
    k = len(it.covered)
    assert covered[order[:k]].all() and not covered[order[k:]].any()
    assert (dist[order[:k]].diff() >= 0).all() and (dist[order[k:]].diff() >= 0).all()
    assert dist[it.seed_index] <= 1e-5 * dist.max() and order[0] == it.seed_index
    # Dist is the L1 distance of the projections on the boundaries' normals
    w = it.boundaries.weight
    ref = ((interp._flat - interp._flat[it.seed_index]) @ w.T).abs().sum(1)
    torch.testing.assert_close(dist, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="covered must have shape"):
        rank_by_interpretation(it.boundaries, interp.features[0], interp.features, covered[:3])


def test_heatmaps_follow_the_formula(setup):
    _, images, interp, results = setup
    it = next(iter(results.values()))[0]
    maps = interp.heatmaps(it, images[:5])
    assert maps.shape == (5, 8, 8) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # oracle: one image, one boundary at a time
    feats = interp.features_of(images[:5])
    for n in range(5):
        per_h = []
        for h in range(len(it.boundaries)):
            a = it.boundaries.weight[h].reshape(interp.feature_shape).mean(dim=(1, 2))
            m = torch.relu((a[:, None, None] * feats[n]).sum(0))[None, None]
            m = torch.nn.functional.interpolate(m, size=(8, 8), mode="bilinear")[0, 0]
            per_h.append((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12))
        torch.testing.assert_close(maps[n], torch.stack(per_h).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spatial feature map"):
        interpretation_heatmaps(
            it.boundaries.__class__(
                it.boundaries.weight,
                it.boundaries.bias,
                it.boundaries.pos_class,
                it.boundaries.neg_class,
                (512,),
            ),
            feats,
            (8, 8),
        )


def test_keep_most_important_and_ad_ai_definitions():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 10, 10)
    sal = torch.rand(3, 10, 10)
    kept = keep_most_important(x, sal, keep=0.2, fill=torch.tensor([-1.0, -2.0]))
    changed = (kept != x).any(1)
    assert (changed.reshape(3, -1).sum(1) == 80).all()  # 20 of 100 pixels kept
    thresh = sal.reshape(3, -1).sort(1, descending=True).values[:, 19]
    assert ((sal >= thresh[:, None, None]) == ~changed).all()
    assert (kept[:, 1][changed] == -2.0).all()

    model = make_model()
    imgs = torch.randn(20, 1, 8, 8)
    full = average_drop_increase(model, imgs, torch.rand(20, 8, 8), keep=1.0)
    assert full == {"AD": 0.0, "AI": 0.0}
    # A model whose class-0 probability only depends on the top-left pixel: keeping that pixel
    # (and zeroing the rest) cannot drop it, discarding it drops it.
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        lin[1].weight.zero_()
        lin[1].bias.zero_()
        lin[1].weight[0, 0] = 5.0
    pos = torch.rand(20, 1, 8, 8) + 0.5
    good = torch.zeros(20, 8, 8)
    good[:, 0, 0] = 1
    res_good = average_drop_increase(
        lin, pos, good, classes=torch.zeros(20, dtype=torch.long), keep=0.2
    )
    res_bad = average_drop_increase(
        lin, pos, 1 - good, classes=torch.zeros(20, dtype=torch.long), keep=0.2
    )
    assert res_good["AD"] == pytest.approx(0.0, abs=1e-4)
    assert res_bad["AD"] > 30 and res_bad["AI"] == 0.0


def test_ri_against_grad_cam_package(setup):
    from glassbox.interpret import cam_saliency, ri_saliency
    from glassbox.interpret.faithfulness import saliency_order

    _, images, interp, results = setup
    its = [it for v in results.values() for it in v]
    x = images[300:330]
    table = compare_saliency_methods(interp, its, x)
    assert set(table) == {"RI", "gradcam", "gradcam++", "scorecam"}
    model = interp.split.model
    # the package restored the model's mode and left no gradients behind
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    # oracle: AD/AI by their definition on the maps of each method, image by image
    cls = interp.predict(x)
    with torch.no_grad():
        y = model(x).softmax(1).gather(1, cls[:, None])[:, 0]
    maps = {"RI": ri_saliency(interp, its, x)[0]}
    layer = interp.split.psi_module
    maps.update({m: cam_saliency(model, layer, x, cls, m) for m in table if m != "RI"})
    for name, m in maps.items():
        keep = torch.zeros(30, 64, dtype=torch.bool)
        order = saliency_order(m, seed=0)  # CAM maps have ties at 0: the seeded order
        for n in range(30):  # the 13 most salient of 64 pixels
            keep[n, order[n, :13]] = True
            assert m[n].flatten()[order[n, :13]].min() >= m[n].flatten()[order[n, 13:]].max()
        masked = torch.where(keep.reshape(30, 1, 8, 8), x, torch.zeros(()))
        with torch.no_grad():
            y2 = model(masked).softmax(1).gather(1, cls[:, None])[:, 0]
        ad = 100 * float(((y - y2).clamp_min(0) / y).mean())
        ai = 100 * float((y < y2).float().mean())
        assert table[name]["AD"] == pytest.approx(ad, abs=1e-3), name
        assert table[name]["AI"] == pytest.approx(ai, abs=1e-3), name
    covered = interp.assign(its, x)[1]
    assert table["RI"]["covered"] == pytest.approx(100 * float(covered.float().mean()))


def test_cams_work_when_no_parameter_before_the_layer_requires_grad():
    """e2cnn nets in eval mode run on cached filter buffers: the CAM target layer's output
    then needs a grad-requiring input to receive gradients."""
    from glassbox.interpret import cam_saliency

    model = make_model()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cls = model(x).argmax(1)
    reference = cam_saliency(model, model[0][3], x, cls, method="gradcam")
    model[0].requires_grad_(False)
    maps = cam_saliency(model, model[0][3], x, cls, method="gradcam")
    assert maps.shape == (6, 8, 8) and float(maps.max()) == pytest.approx(1.0)
    torch.testing.assert_close(maps, reference)  # the same maps as with trainable layers
