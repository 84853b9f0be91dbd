"""The rotation-ablation knobs: pooling, e2cnn basis options, upsampling, the mean over a turn
and its plot. Every model option must keep the logits exactly invariant to 90° rotations."""

from __future__ import annotations

import pytest
import torch

from glassbox.data.transforms import fit_images, mean_over_turn
from glassbox.errors import ConfigError
from glassbox.models.glassbox_net import GlassBoxNet

SMALL = dict(widths=(3, 4, 6), reduced_dim=4, classifier_hidden=(8,))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "max_antialiased"},
        {"pooling": "avg"},
        {"frequencies_cutoff": 1.0},
        {"maximum_offset": 0},
        {"group_order": 16},
        {"group_order": 16, "pooling": "max_antialiased", "image_size": 48},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_keep_logits_invariant_to_quarter_turns(options):
    torch.manual_seed(0)
    options = dict(options)
    size = options.pop("image_size", 32)
    net = GlassBoxNet(image_size=size, **SMALL, **options)
    net.reduction.fit(torch.randn(64, 6))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(2):  # non-trivial BatchNorm statistics
        loss = net(torch.randn(8, 1, size, size)).logsumexp(1).mean()
        opt.zero_grad(), loss.backward(), opt.step()
    net.eval()
    x = torch.randn(5, 1, size, size)
    with torch.no_grad():
        out = net(x)
        for k in (1, 2, 3):
            assert _rel(net(torch.rot90(x, k, dims=(-2, -1))), out) < 1e-5


def test_options_change_the_model():
    torch.manual_seed(0)
    base = GlassBoxNet(**SMALL)
    # the basis options shrink the filter basis: fewer weights
    assert (
        GlassBoxNet(frequencies_cutoff=1.0, **SMALL).parameter_counts()["representation"]
        < (base.parameter_counts()["representation"])
    )
    assert (
        GlassBoxNet(maximum_offset=0, **SMALL).parameter_counts()["representation"]
        < (base.parameter_counts()["representation"])
    )
    # anti-aliased pooling blurs: on a single bright pixel it spreads the response
    net = GlassBoxNet(pooling="max_antialiased", **SMALL)
    pool = list(net.representation.block1.children())[3]
    x = torch.zeros(1, pool.in_type.size, 8, 8)
    x[..., 3, 3] = 1.0
    from e2cnn import nn as enn

    y = pool(enn.GeometricTensor(x, pool.in_type)).tensor
    assert y.shape[-2:] == (4, 4)
    assert (y[0, 0] > 1e-3).sum() > 1  # plain 2×2 max pooling would light one output pixel


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GlassBoxNet(pooling="median", **SMALL), "unknown pooling 'median'"),
        (lambda: GlassBoxNet(frequencies_cutoff=-1.0, **SMALL), "frequencies_cutoff=-1.0 must be"),
        (lambda: GlassBoxNet(maximum_offset=-1, **SMALL), "maximum_offset=-1 must be >= 0"),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_resize_modes():
    torch.manual_seed(0)
    src = torch.rand(3, 1, 8, 8)
    nearest = fit_images(src, 32, 4, "nearest")
    # nearest neighbour by 3: every source pixel becomes a 3×3 block
    assert torch.equal(
        nearest[..., 4:28, 4:28], src.repeat_interleave(3, -2).repeat_interleave(3, -1)
    )
    bilinear, bicubic = fit_images(src, 32, 4, "bilinear"), fit_images(src, 32, 4, "bicubic")
    assert bicubic.shape == bilinear.shape == (3, 1, 32, 32)
    assert (bicubic - bilinear).abs().max() > 1e-3 and bicubic.min() >= 0 and bicubic.max() <= 1
    assert torch.equal(bilinear[..., :4, :], torch.zeros_like(bilinear[..., :4, :]))


def test_bad_resize_mode_is_one_clear_error():
    from glassbox.data import GlassBoxDataModule

    with pytest.raises(ConfigError, match="data.resize='cubic'.*bilinear, bicubic"):
        GlassBoxDataModule(resize="cubic")


def test_mean_over_turn_counts_equal_angles_once():
    values = {0.0: 1.0, 90.0: 0.5, 180.0: 0.5, 270.0: 1.0, 360.0: 1.0}
    assert mean_over_turn(values) == pytest.approx(0.75)  # 360° is 0°: four angles
    assert mean_over_turn({-90.0: 0.2, 270.0: 0.9, 45.0: 0.4}) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least one angle"):
        mean_over_turn({})


def test_accuracy_vs_angle_plot_legend_outside_and_exact_angles_marked(tmp_path):
    import pandas as pd

    from glassbox.reporting.figures import plot_accuracy_vs_angle

    rows = [
        {"group": g, "angle": a, "mean": m, "std": 0.01, "n": 3}
        for g, base in (("variant=a", 0.9), ("variant=b", 0.6))
        for a, m in zip(range(0, 361, 45), [base, base - 0.1] * 4 + [base])
    ]
    fig = plot_accuracy_vs_angle(pd.DataFrame(rows))
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    # the mean over the 8 distinct angles (360° = 0°), in the legend
    assert labels == ["variant=a (n=3): mean 0.850", "variant=b (n=3): mean 0.550"]
    # the legend box lies right of the axes: it cannot hide a curve
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    # dotted guides at the exactly representable angles
    vlines = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert vlines == [0, 90, 180, 270, 360]
    path = plot_accuracy_vs_angle(pd.DataFrame(rows), tmp_path / "a.png")
    assert path.stat().st_size > 1000


def test_sweep_mean_over_turn_for_jobs_with_and_without_the_logged_metric(tmp_path):
    import json

    from glassbox.reporting.sweep import collect

    per_angle = {"test_rot0/acc": 1.0, "test_rot90/acc": 0.5, "test_rot360/acc": 1.0}
    jobs = {"0": {**per_angle, "test_rot_mean/acc": 0.6}, "1": per_angle}  # "1": an older job
    for name, metrics in jobs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    df = collect([tmp_path]).set_index("job")
    assert df.loc[f"{tmp_path.name}/0", "test_rot_mean/acc"] == pytest.approx(0.6)  # as logged
    # computed over one turn: 0° and 360° once → (1.0 + 0.5) / 2
    assert df.loc[f"{tmp_path.name}/1", "test_rot_mean/acc"] == pytest.approx(0.75)
