"""measure_layerwise: the acceptance numbers of issue 3, the batched engine against the
reference measures, the Lie derivative, and one clear error per kind of bad input."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn

from glassbox.equivariance import (
    MEASURES,
    GroupElement,
    GroupRepresentabilityError,
    LayerOutputError,
    LayerSelectionError,
    best_fit_error,
    default_layers,
    equivariance_error,
    equivariance_result,
    get_group,
    invariance_error,
    measure_layerwise,
    rotate_interpolated,
    spatial_error,
    summary_table,
    transform_images,
)


def by(records, **match):
    """The records whose fields equal ``match``."""
    return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]


# --------------------------------------------------------------------------- models


class C4Net(nn.Module):
    """Hand-built, exactly C4-equivariant e2cnn net on 16×16 images: two regular-field blocks,
    group pooling (invariant maps), global average pool and a linear head (invariant logits)."""

    def __init__(self):
        super().__init__()
        gs = gspaces.Rot2dOnR2(4)
        self.in_type = enn.FieldType(gs, [gs.trivial_repr])
        t1 = enn.FieldType(gs, 3 * [gs.regular_repr])
        t2 = enn.FieldType(gs, 4 * [gs.regular_repr])
        self.representation = enn.SequentialModule(
            enn.SequentialModule(
                enn.R2Conv(self.in_type, t1, 5, padding=2),
                enn.InnerBatchNorm(t1),
                enn.ReLU(t1),
                enn.PointwiseMaxPool(t1, 2),
            ),
            enn.SequentialModule(
                enn.R2Conv(t1, t2, 3, padding=1), enn.InnerBatchNorm(t2), enn.ReLU(t2)
            ),
        )
        self.group_pool = enn.GroupPooling(t2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        fields = self.representation(enn.GeometricTensor(x, self.in_type))
        return self.head(self.pool(self.group_pool(fields).tensor))


class LiftingConv(nn.Module):
    """Channel k = conv(x, rot90^k(w)): rotating the input rotates the maps AND cyclically
    shifts the channels (φ(Rx)_k = R φ(x)_{k−1}), so it is equivariant only up to a channel
    permutation — the case the best-fit measure exists for."""

    def __init__(self, in_channels=2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, in_channels, 5, 5))

    def forward(self, x):
        w = torch.cat([torch.rot90(self.weight, k, dims=(-2, -1)) for k in range(4)])
        return F.conv2d(x, w, padding=2)


class BiasedLiftingConv(LiftingConv):
    """LiftingConv plus a different bias per channel: φ(Rx)_k = R φ(x)_{k−1} + β_k − β_{k−1}, so a
    rotation acts as rot90 ∘ (channel permutation + per-channel offset), an affine channel map."""

    def __init__(self, in_channels=2):
        super().__init__(in_channels)
        self.bias = nn.Parameter(torch.tensor([0.0, 1.0, 2.5, -1.5]))

    def forward(self, x):
        return super().forward(x) + self.bias[:, None, None]


def cyclic_shift(features, element):
    """The known action of LiftingConv: rotate the maps, shift the 4 channels by the turns."""
    return torch.roll(
        torch.rot90(features, element.quarter_turns, dims=(-2, -1)), element.quarter_turns, dims=1
    )


@pytest.fixture(scope="module")
def c4net():
    torch.manual_seed(0)
    net = C4Net()
    net.train()
    with torch.no_grad():
        net(torch.randn(32, 1, 16, 16))  # non-trivial batch-norm statistics
    return net.eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- acceptance


def test_identity_layer_is_zero_on_every_measure(images):
    model = nn.Sequential(nn.Identity())
    records = measure_layerwise(model, images, "D4", layers=["0"], measures=MEASURES)
    for measure in ("spatial", "best_fit", "lie_derivative"):
        values = [r.value for r in by(records, measure=measure)]
        assert values and max(values) <= 1e-6, measure
    # an e2cnn identity on trivial fields: the known action too
    gs = gspaces.Rot2dOnR2(4)
    ident = enn.IdentityModule(enn.FieldType(gs, [gs.trivial_repr]))
    rec = measure_layerwise(
        enn.SequentialModule(ident), images, "C4", layers=["0", "output"], measures=["equivariance"]
    )
    assert len(rec) == 2 * 3 and max(r.value for r in rec) <= 1e-6
    # invariance of the identity is, by definition, how much the image itself changed
    for r in by(records, measure="invariance"):
        el = GroupElement(r.angle, r.flip)
        expected = (transform_images(images, el) - images).norm() / images.norm()
        assert r.value == pytest.approx(float(expected), rel=1e-5)


def test_c4_e2cnn_net_is_equivariant_at_every_layer(c4net, images):
    layers = default_layers(c4net)
    assert layers == ["representation.0", "representation.1", "group_pool", "pool", "output"]
    # every e2cnn submodule too: convs, batch norms, nonlinearities, pooling
    inner = [n for n, m in c4net.named_modules() if isinstance(m, enn.EquivariantModule) and n]
    records = measure_layerwise(c4net, images, "C4", layers=inner + ["pool", "output"])
    equi = by(records, measure="equivariance")
    assert {r.layer for r in equi} == set(inner)
    assert len(equi) == 3 * len(inner)
    assert max(r.value for r in equi) <= 1e-5
    # the regular fields really move: without the channel permutation the error is large
    assert min(r.value for r in by(records, measure="spatial", layer="representation.0.0")) > 0.1
    # invariant maps and invariant outputs
    assert max(r.value for r in by(records, measure="spatial", layer="group_pool")) <= 1e-5
    for layer in ("pool", "output"):
        assert max(r.value for r in by(records, measure="invariance", layer=layer)) <= 1e-5
    assert [r.value for r in by(records, measure="consistency")] == [1.0, 1.0, 1.0]
    # best fit recovers the permutation on held-out images
    assert max(r.value for r in by(records, measure="best_fit", layer="group_pool")) <= 1e-4


def test_random_plain_conv_is_not_spatially_equivariant(images):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1))
    records = measure_layerwise(conv, images, "C4", layers=["0"], measures=["spatial"])
    rot = [r.value for r in records if r.element in ("rot90", "rot270")]
    assert len(rot) == 2 and min(rot) >= 0.1


def test_rotate_and_permute_layer_is_recovered_by_best_fit():
    torch.manual_seed(0)
    model = nn.Sequential(LiftingConv())
    x = torch.randn(16, 2, 12, 12)
    records = measure_layerwise(
        model,
        x,
        "C4",
        layers=["0"],
        measures=["spatial", "best_fit", "equivariance"],
        actions={"0": cyclic_shift},
    )
    assert max(r.value for r in by(records, measure="best_fit")) <= 1e-4
    assert min(r.value for r in by(records, measure="spatial")) >= 0.5
    assert (
        max(r.value for r in by(records, measure="equivariance")) <= 1e-5
    )  # user-given known action


def test_best_fit_map_is_affine_so_a_biased_rotate_and_permute_layer_is_exact():
    """A per-channel bias that the rotation permutes leaves a constant residual that no linear
    channel map absorbs (0.31–0.33 with the former linear fit); the affine fit's intercept does."""
    torch.manual_seed(0)
    model = nn.Sequential(BiasedLiftingConv())
    x = torch.randn(16, 2, 12, 12)
    records = measure_layerwise(model, x, "C4", layers=["0"], measures=["spatial", "best_fit"])
    assert len(by(records, measure="best_fit")) == 3
    assert max(r.value for r in by(records, measure="best_fit")) <= 1e-5
    assert min(r.value for r in by(records, measure="spatial")) >= 0.5
    # the reference function fits the same affine map
    with torch.no_grad():
        f0 = model(x)
        for el in get_group("C4").elements:
            fg = model(transform_images(x, el))
            assert float(best_fit_error(f0, fg, el)) <= 1e-5


# --------------------------------------------------------------------------- engine = reference


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        h = self.conv2(self.pool(F.relu(self.conv1(x))))
        return self.head(h.mean((-2, -1)))


@pytest.mark.parametrize(("group", "exact"), [("D4", "error"), ("C8", "interpolate")])
def test_batched_engine_equals_reference_measures(group, exact):
    """One forward over all copies + batched measures == per-element reference functions."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(10, 2, 12, 12)
    records = measure_layerwise(model, x, group, exact=exact, fit_fraction=0.6)
    assert {r.layer for r in records} == {"conv1", "pool", "conv2", "output"}
    feats = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o))
        for n in ("conv1", "pool", "conv2")
    ]
    with torch.no_grad():

        def layer_outputs(inp):
            out = model(inp)
            return {**feats, "output": out}

        ref = layer_outputs(x)
        for el in get_group(group).elements:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trans = layer_outputs(transform_images(x, el, exact=exact))
            for layer, f0 in ref.items():
                fg = trans[layer]
                expected = {"invariance": invariance_error(f0, fg)}
                if f0.dim() == 4:
                    expected["spatial"] = spatial_error(f0, fg, el, exact=exact)
                    expected["best_fit"] = best_fit_error(f0, fg, el, fit_fraction=0.6, exact=exact)
                for measure, value in expected.items():
                    (rec,) = by(records, layer=layer, element=el.name, measure=measure)
                    assert rec.value == pytest.approx(float(value), rel=2e-4, abs=1e-6), (
                        layer,
                        el.name,
                        measure,
                    )
                    assert rec.exact == (el.quarter_turns is not None)
    for h in hooks:
        h.remove()


def test_known_action_engine_equals_reference(c4net, images):
    records = measure_layerwise(
        c4net, images, "C4", layers=["representation.0"], measures=["equivariance"]
    )
    captured = {}
    hook = dict(c4net.named_modules())["representation.0"].register_forward_hook(
        lambda m, i, o: captured.__setitem__("f", o)
    )
    with torch.no_grad():
        c4net(images)
        f0 = captured["f"]
        for el in get_group("C4").elements:
            c4net(transform_images(images, el))
            (rec,) = by(records, element=el.name)
            assert rec.value == pytest.approx(
                float(equivariance_error(f0, captured["f"], el)), abs=1e-7
            )
    hook.remove()


# --------------------------------------------------------------------------- Lie derivative


def test_lie_derivative_matches_finite_differences():
    """The JVP value equals d/dt ρ(g_−t) φ(g_t·x) by central differences (float64, linear φ)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 5, padding=2).double()
    model = nn.Sequential(conv)
    h = torch.arange(20, dtype=torch.float64)
    blob = torch.exp(-((h[:, None] - 8) ** 2 + (h - 11) ** 2) / 8)
    x = (
        (blob + 0.5 * torch.exp(-((h[:, None] - 13) ** 2 + (h - 6) ** 2) / 5))
        .expand(2, 1, 20, 20)
        .clone()
    )
    (rec,) = measure_layerwise(model, x, "SO2", layers=["0"])
    assert rec.measure == "lie_derivative" and rec.element == "d/dtheta"
    t = 1e-4
    with torch.no_grad():
        plus = rotate_interpolated(model(rotate_interpolated(x, t)), -t)
        minus = rotate_interpolated(model(rotate_interpolated(x, -t)), t)
        fd = (plus - minus) / (2 * t)
        expected = fd.norm() / model(x).norm()
    assert rec.value == pytest.approx(float(expected), rel=2e-2)
    assert rec.value > 0.05


def test_lie_derivative_is_not_applicable_on_regular_fields_of_a_discrete_group(c4net, images):
    records = measure_layerwise(c4net, images, "SO2")
    assert {r.measure for r in records} == {"lie_derivative"}
    assert [r.layer for r in records] == default_layers(c4net)
    value = {r.layer: r.value for r in records}
    note = {r.layer: r.note for r in records}
    # regular fields of C4: no rotation by a small angle acts on them, so no number (no
    # spatial-only stand-in) and the reason
    for layer in ("representation.0", "representation.1"):
        assert math.isnan(value[layer]), layer
        assert note[layer] == (
            "lie_derivative n/a: regular fields of C4: a discrete group has no continuous "
            "rotation to act on them"
        )
    # trivial fields (group pooling), the pooled vector and the invariant logits: a number
    for layer in ("group_pool", "pool", "output"):
        assert math.isfinite(value[layer]) and value[layer] > 0 and note[layer] == "", layer
    # global pooling of invariant maps: much smaller than the maps themselves
    assert value["pool"] < 0.5 * value["group_pool"]
    # plain tensors keep it, maps and vectors alike
    plain = measure_layerwise(SmallCNN().eval(), torch.randn(4, 2, 12, 12), "SO2")
    assert len(plain) == 4 and all(math.isfinite(r.value) and r.note == "" for r in plain)
    # the summary: NaN and the reason, and no scalar logged for it
    table = summary_table(records).set_index("layer")
    assert math.isnan(table.loc["representation.0", "lie_derivative"])
    assert table.loc["representation.0", "note"] == note["representation.0"]
    assert table.loc["pool", "note"] == ""
    scalars = equivariance_result(records, plot=False).scalars
    assert "equivariance/representation.0/lie_derivative" not in scalars
    assert scalars["equivariance/pool/lie_derivative"] == pytest.approx(value["pool"])


# --------------------------------------------------------------------------- plumbing


def test_consistency_counts_changed_predictions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))  # position-dependent: predictions change
    x = torch.randn(40, 1, 8, 8)
    records = measure_layerwise(model, x, "C4", measures=["consistency"])
    with torch.no_grad():
        pred = model(x).argmax(1)
        for r in records:
            same = (
                (model(transform_images(x, GroupElement(r.angle))).argmax(1) == pred).float().mean()
            )
            assert r.value == pytest.approx(float(same))
    assert min(r.value for r in records) < 1.0


def test_inplace_relu_does_not_overwrite_the_measured_conv_output():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    x = torch.randn(8, 1, 10, 10)
    clean = measure_layerwise(
        nn.Sequential(conv, nn.ReLU()), x, "C4", layers=["0"], measures=["best_fit", "spatial"]
    )

    class FunctionalInplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, inp):
            return self.conv(inp).relu_()

    for model, name in (
        (nn.Sequential(conv, nn.ReLU(inplace=True)), "0"),
        (FunctionalInplace(), "conv"),
    ):
        recs = measure_layerwise(model, x, "C4", layers=[name], measures=["best_fit", "spatial"])
        assert [r.value for r in recs] == pytest.approx([r.value for r in clean], rel=1e-6)
    # 4 filters cannot span the rotated copies of 3×3 filters: a real, non-zero best-fit error
    assert min(r.value for r in by(clean, measure="best_fit")) > 1e-3


def test_the_report_runs_one_forward_per_group_element_of_the_batch(images):
    """The originals, then each copy: the |G| forwards of B images a user would run (not one
    concatenated batch of |G|·B), so the report's forwards cost what the plain ones do."""
    seen = []
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True))
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].clone()))
    records = measure_layerwise(model, images, "D4")
    assert [len(x) for x in seen] == [len(images)] * 8
    torch.testing.assert_close(seen[0], images, rtol=0, atol=0)
    for x, el in zip(seen[1:], get_group("D4").elements):
        torch.testing.assert_close(x, transform_images(images, el), rtol=0, atol=0)
    assert len(by(records, measure="spatial", layer="0")) == 7


def test_eval_mode_is_used_and_restored():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    model.train()
    before = model[1].running_mean.clone()
    measure_layerwise(model, torch.randn(6, 1, 8, 8), "C4")
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, before)


def test_records_carry_depth_in_execution_order(c4net, images):
    with pytest.warns(
        UserWarning,
        match=r"not reported: representation.0: equivariance@flip \(not in the layer's e2cnn group\)",
    ):
        records = measure_layerwise(c4net, images, "flip", model_name="c4")
    depth = {r.layer: r.depth for r in records}
    assert depth == {
        "representation.0": 0,
        "representation.1": 1,
        "group_pool": 2,
        "pool": 3,
        "output": 4,
    }
    assert {r.model for r in records} == {"c4"} and {r.element for r in records} == {"flip"}
    # a C4 net has no known action for a mirror: reported as spatial/best-fit only
    assert not by(records, measure="equivariance")


def test_best_fit_is_left_out_where_it_would_over_fit(c4net, images):
    # 'pool' is (B, 4, 1, 1): 8 fitting rows for 4 channels < 4 per channel
    with pytest.warns(UserWarning, match=r"pool: best_fit \(8×1×1 fitting rows < 4 × 4 channels\)"):
        records = measure_layerwise(
            c4net, images, "C4", layers=["group_pool", "pool"], measures=["best_fit"]
        )
    assert {r.layer for r in records} == {"group_pool"}
    assert (
        len(
            measure_layerwise(
                c4net, images, "C4", layers=["pool"], measures=["best_fit"], min_fit_ratio=1.0
            )
        )
        == 3
    )


# --------------------------------------------------------------------------- bad input


def test_unknown_layer_lists_valid_names(c4net, images):
    with pytest.raises(
        LayerSelectionError,
        match=r"unknown layer name\(s\) \['blockX'\].*valid names are: .*group_pool.*output",
    ):
        measure_layerwise(c4net, images, layers=["blockX"])


def test_group_not_representable_errors_or_interpolates_with_warning():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    rect = torch.randn(4, 1, 12, 16)
    with pytest.raises(GroupRepresentabilityError, match=r"rot90.*12×16.*exact='warn'"):
        measure_layerwise(model, rect, "C4")
    with pytest.warns(UserWarning, match="interpolation"):
        records = measure_layerwise(model, rect, "C4", exact="warn")
    assert {r.exact for r in records if r.element in ("rot90", "rot270")} == {False}
    assert {r.exact for r in records if r.element == "rot180"} == {True}
    with pytest.raises(GroupRepresentabilityError, match="rot45"):
        measure_layerwise(model, torch.randn(4, 1, 8, 8), "C8")


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.randn(8, 10), ValueError, r"\(B, C, H, W\).*got shape \(8, 10\)"),
        ([[0.0]], TypeError, "must be a torch.Tensor"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TypeError, "floating point"),
    ],
)
def test_non_image_inputs(bad, error, match):
    with pytest.raises(error, match=match):
        measure_layerwise(nn.Sequential(nn.Identity()), bad)


def test_layer_output_that_is_not_a_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0]

    with pytest.raises(
        LayerOutputError, match=r"layer 'pair' \(Pair\) returns tuple, not a tensor"
    ):
        measure_layerwise(Net(), torch.randn(4, 1, 8, 8), layers=["pair"])
    with pytest.raises(LayerOutputError, match="the model returns tuple"):
        measure_layerwise(nn.Sequential(Pair()), torch.randn(4, 1, 8, 8), layers=["output"])


def test_other_bad_arguments():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    x = torch.randn(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"unknown measure\(s\) \['curl'\]"):
        measure_layerwise(model, x, measures=["curl"])
    with pytest.raises(ValueError, match="needs >= 2 images"):
        measure_layerwise(model, x[:1], measures=["best_fit"])
    with pytest.raises(ValueError, match="no finite elements"):
        measure_layerwise(model, x, "SO2", measures=["spatial"])
    shared = nn.ReLU()
    twice = nn.Sequential(shared, shared)
    with pytest.raises(LayerSelectionError, match="ran more than once"):
        measure_layerwise(twice, x, layers=["0"])


def test_dihedral_e2cnn_net_is_equivariant_under_rotations_and_mirrors():
    torch.manual_seed(0)
    gs = gspaces.FlipRot2dOnR2(4)
    t_in = enn.FieldType(gs, [gs.trivial_repr])
    t_hid = enn.FieldType(gs, 2 * [gs.regular_repr])
    net = enn.SequentialModule(
        enn.R2Conv(t_in, t_hid, 3, padding=1), enn.ReLU(t_hid), enn.GroupPooling(t_hid)
    ).eval()
    x = torch.randn(6, 1, 10, 10)
    records = measure_layerwise(net, x, "D4", layers=["0", "1", "2"], measures=["equivariance"])
    assert len(records) == 3 * 7  # every D4 element has a known action in a D4 model
    assert max(r.value for r in records) <= 1e-5


def test_reused_workspace_gives_the_same_numbers():
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))
    big = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1))
    x = torch.randn(6, 1, 12, 12)
    first = [r.value for r in measure_layerwise(small, x, "D4")]
    measure_layerwise(big, torch.randn(10, 1, 16, 16), "D4")  # grows the shared buffers
    assert [r.value for r in measure_layerwise(small, x, "D4")] == first


@pytest.mark.parametrize(("group", "exact"), [("D4", "error"), ("C8", "interpolate")])
def test_blocks_of_one_image_give_the_numbers_of_one_block(monkeypatch, c4net, group, exact):
    """The CPU engine works a cache-sized block of images at a time; the block size must
    not change any number beyond round-off (Gram, cross products and norms summed blockwise)."""
    from glassbox.equivariance import engine

    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(10, 2, 12, 12)
    imgs = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(2))

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = measure_layerwise(model, x, group, exact=exact, fit_fraction=0.6)
            e2 = measure_layerwise(c4net, imgs, "C4" if group == "D4" else "C8", exact=exact)
        return [(r.layer, r.element, r.measure, r.value) for r in plain + e2]

    monkeypatch.setattr(engine, "CHUNK_BYTES", 2**40)  # one block per split
    whole = run()
    monkeypatch.setattr(engine, "CHUNK_BYTES", 1)  # one image per block
    blocked = run()
    assert [k[:3] for k in blocked] == [k[:3] for k in whole]
    assert len({k[2] for k in whole} & {"invariance", "spatial", "best_fit", "equivariance"}) == 4
    for (*key, a), (_, _, _, b) in zip(whole, blocked):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), key
