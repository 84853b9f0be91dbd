"""Nets: exact 90° invariance of the glass-box model, its equivariant part, export parity,
mode-independent checkpoints, AlexNet topology and the bad-input errors."""

from __future__ import annotations

import pytest
import torch

from glassbox.errors import ConfigError
from glassbox.models.alexnet import AlexNet
from glassbox.models.glassbox_net import GlassBoxNet
from glassbox.models.reduction import Reduction

SMALL = dict(widths=(3, 4, 6), reduced_dim=4, classifier_hidden=(8,))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("gspace", "order"), [("rot", 4), ("rot", 8), ("fliprot", 4)])
def test_glassbox_invariant_to_quarter_turns_in_eval(gspace, order):
    torch.manual_seed(0)
    net = GlassBoxNet(gspace=gspace, group_order=order, **SMALL)
    net.reduction.fit(torch.randn(64, 6))
    # a few training steps so BatchNorm statistics are not trivial
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(2):
        loss = net(torch.randn(8, 1, 32, 32)).logsumexp(1).mean()
        opt.zero_grad(), loss.backward(), opt.step()
    net.eval()
    x = torch.randn(6, 1, 32, 32)
    with torch.no_grad():
        out = net.layers(x)
        for k in (1, 2, 3):
            rot = net.layers(torch.rot90(x, k, dims=(-2, -1)))
            assert _rel(rot.invariant, out.invariant) < 1e-5
            assert _rel(rot.logits, out.logits) < 1e-5
            # invariant maps rotate with the image
            assert _rel(rot.invariant_map, torch.rot90(out.invariant_map, k, dims=(-2, -1))) < 1e-5
        if gspace == "rot":  # the equivariant part shifts by k·N/4 along the group axis
            for k in (1, 2, 3):
                rot = net.layers(torch.rot90(x, k, dims=(-2, -1)))
                assert (
                    _rel(rot.equivariant, torch.roll(out.equivariant, k * order // 4, dims=-1))
                    < 1e-5
                )
            # and it is not invariant (it carries the pose)
            assert (
                _rel(net.layers(torch.rot90(x, 1, dims=(-2, -1))).equivariant, out.equivariant)
                > 1e-2
            )
        else:  # flips: logits invariant under horizontal reflection too
            assert _rel(net(torch.flip(x, dims=(-1,))), out.logits) < 1e-5


def test_glassbox_layers_shapes_and_sequential_parity():
    net = GlassBoxNet(group_order=4, **SMALL).eval()
    x = torch.randn(2, 1, 32, 32)
    out = net.layers(x)
    assert out.representation.tensor.shape == (2, 6 * 4, 8, 8)
    assert out.invariant_map.shape == (2, 6, 8, 8) and out.invariant.shape == (2, 6)
    assert (
        out.equivariant.shape == (2, 6, 4)
        and out.reduced.shape == (2, 4)
        and out.logits.shape == (2, 10)
    )
    seq = net.sequential()
    assert [n for n, _ in seq.named_children()] == [
        "group_pool",
        "pool",
        "flatten",
        "reduction",
        "classifier",
    ]
    assert torch.allclose(seq(x), net(x), atol=0, rtol=0)


@pytest.mark.parametrize("gspace", ["rot", "fliprot"])
def test_export_parity(gspace):
    torch.manual_seed(1)
    net = GlassBoxNet(gspace=gspace, group_order=4, **SMALL)
    net.train()
    net(torch.randn(8, 1, 32, 32))  # move the BatchNorm running statistics
    net.eval()
    exported = net.export()
    assert not any(
        "e2cnn" in type(m).__module__
        for m in exported.modules()
        if type(m).__name__ != "MaxPoolChannels"
    )
    x = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        assert _rel(exported(x), net(x)) < 1e-5
    assert net.layers(x).logits.shape == (5, 10)


def test_state_dict_is_mode_independent():
    torch.manual_seed(2)
    net = GlassBoxNet(group_order=4, **SMALL).eval()
    state = net.state_dict()
    assert not any(k.endswith((".filter", ".expanded_bias")) for k in state)
    x = torch.randn(3, 1, 32, 32)
    ref = net(x)
    for mode in (True, False):  # into a train-mode and an eval-mode model
        other = GlassBoxNet(group_order=4, **SMALL).train(mode)
        other.load_state_dict(state, strict=True)
        assert torch.allclose(other.eval()(x), ref, atol=1e-6)
    # a state dict saved with e2cnn's eval buffers (e.g. by plain torch) also loads
    raw = dict(state)
    raw["representation.block1.0.filter"] = torch.zeros(1)
    GlassBoxNet(group_order=4, **SMALL).load_state_dict(raw, strict=True)


def test_pca_reduction_fit_is_exact_projection():
    torch.manual_seed(3)
    basis = torch.linalg.qr(torch.randn(6, 6))[0]
    x = torch.randn(500, 6) * torch.tensor([5.0, 3.0, 1.0, 0.1, 0.01, 0.001]) @ basis.T + 2.0
    red = Reduction(6, 3, "pca")
    ratios = red.fit(x)
    assert red.fitted and not red.linear.weight.requires_grad
    z = red(x)
    assert z.mean(0).abs().max() < 1e-4  # centred
    cov = torch.cov(z.T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 1e-2 * cov.max()  # decorrelated
    assert float(ratios[:3].sum()) > 0.999
    assert torch.allclose(torch.diag(cov), torch.sort(torch.diag(cov), descending=True).values)


def test_alexnet_topology_and_sequential():
    net = AlexNet(in_channels=1, image_size=32, num_classes=7, width_mult=0.25, hidden=32).eval()
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 5 and len(fcs) == 3
    x = torch.randn(2, 1, 32, 32)
    assert net(x).shape == (2, 7)
    assert torch.equal(net.sequential()(x), net(x))
    big = AlexNet(
        in_channels=3, image_size=64, num_classes=3, stem="imagenet", width_mult=0.25, hidden=16
    )
    assert big(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_alexnet_pretrained_offline_error(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(
        torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "get_state_dict", offline, raising=False
    )
    with pytest.raises(ConfigError, match="pretrained=false"):
        AlexNet(in_channels=3, image_size=32, width_mult=0.25, hidden=16, pretrained=True)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GlassBoxNet(image_size=30, **SMALL), "image_size=30 cannot be taken"),
        (lambda: GlassBoxNet(kernel_sizes=(4, 5, 5), **SMALL), "even size 4"),
        (lambda: GlassBoxNet(gspace="so2", **SMALL), "unknown gspace 'so2'"),
        (lambda: GlassBoxNet(widths=(3, 4), reduced_dim=2), "one entry per representation block"),
        (lambda: GlassBoxNet(widths=(3, 4, 6), reduced_dim=9), "reduced_dim=9"),
        (lambda: AlexNet(image_size=16, stem="imagenet", in_channels=1), "cannot take 16"),
        (lambda: AlexNet(stem="tiny"), "unknown AlexNet stem"),
    ],
)
def test_bad_model_configs(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_channel_mismatch_at_forward():
    net = GlassBoxNet(in_channels=3, **SMALL)
    with pytest.raises(ConfigError, match="in_channels=3"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="in_channels"):
        AlexNet(in_channels=3, width_mult=0.25, hidden=16)(torch.randn(1, 1, 32, 32))


def test_pca_variance_threshold_keeps_fewest_components():
    torch.manual_seed(4)
    x = torch.randn(400, 6) * torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1, 0.1])
    red = Reduction(6, 5, "pca", variance_threshold=0.95)
    ratios = red.fit(x)
    # 100+25 of ~126.5 total variance in the first two axes (≈0.988 ≥ 0.95); one axis is not enough
    assert red.kept_dim == 2 and red.variance_kept == pytest.approx(float(ratios[:2].sum()))
    assert red.variance_kept >= 0.95 > float(ratios[:1].sum())
    z = red(x)
    assert z.shape == (400, 5) and z[:, 2:].abs().max() == 0 and z[:, :2].abs().max() > 1
    with pytest.raises(ConfigError, match="variance_threshold"):
        Reduction(6, 3, "linear", variance_threshold=0.9)


def test_rebuilt_eval_caches_are_plain_constants():
    from glassbox.models.equivariant import rebuild_eval_caches

    net = GlassBoxNet(group_order=4, **SMALL)
    with torch.inference_mode():
        net.eval()  # as in Lightning's validation loop: the caches are inference tensors
    rebuild_eval_caches(net)
    from e2cnn import nn as enn

    filters = [m.filter for m in net.modules() if isinstance(m, enn.R2Conv)]
    assert len(filters) == 3
    assert all(not f.is_inference() and f.grad_fn is None and not f.requires_grad for f in filters)
