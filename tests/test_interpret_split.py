"""Splitting a model at a layer, and the checks on the head G."""

import pytest
import torch
from torch import nn

from glassbox.interpret import (
    NotPiecewiseLinearError,
    UnknownLayerError,
    default_layer,
    named_leaves,
    register_piecewise_linear,
    split_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
        ),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Sequential(
            nn.Linear(6 * 4 * 4, 12),
            nn.BatchNorm1d(12),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(12, 3),
        ),
    ).eval()


class WithSequential(nn.Module):
    """A model that is not an nn.Sequential but offers sequential()."""

    def __init__(self):
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        return self.net(x)

    def sequential(self):
        return self.net


def test_leaves_are_flattened_with_dotted_names():
    names = [n for n, _ in named_leaves(small_cnn())]
    assert names == ["0.0", "0.1", "0.2", "0.3", "1", "2", "3.0", "3.1", "3.2", "3.3", "3.4"]


@pytest.mark.parametrize("layer", ["0.3", "0", "1", "3.2"])
def test_split_composes_to_the_model(layer):
    torch.manual_seed(0)
    model = small_cnn()
    x = torch.randn(5, 1, 8, 8)
    s = split_model(model, layer)
    assert s.psi_names[-1] == layer or s.psi_names[-1].startswith(layer + ".")
    torch.testing.assert_close(s.head(s.psi(x)), model(x), rtol=0, atol=0)
    torch.testing.assert_close(s.model(x), model(x), rtol=0, atol=0)
    assert s.psi_module is model.get_submodule(layer)


def test_sequential_method_is_used():
    m = WithSequential().eval()
    s = split_model(m, "0.3")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(s.head(s.psi(x)), m(x))


def test_default_layer_is_last_conv_activation():
    assert default_layer(small_cnn()) == "0.3"


def test_unknown_layer_lists_valid_names():
    with pytest.raises(
        UnknownLayerError, match=r"unknown layer 'conv9'.*valid layer names: 0\.0, 0\.1"
    ):
        split_model(small_cnn(), "conv9")


def test_last_layer_leaves_no_head():
    with pytest.raises(UnknownLayerError, match="nothing is left for the head"):
        split_model(small_cnn(), "3.4")


def test_non_piecewise_linear_head_names_the_module():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 8), nn.GELU(), nn.Linear(8, 2)
    )
    with pytest.raises(NotPiecewiseLinearError, match=r"module '3' \(GELU\).*not piecewise linear"):
        split_model(model, "0")
    # splitting after the GELU is fine
    split_model(model, "3")


def test_training_mode_batchnorm_is_rejected_when_extracting():
    s = split_model(small_cnn().train(), "1")
    with pytest.raises(
        NotPiecewiseLinearError,
        match=r"'3\.1' \(BatchNorm1d\) is in training mode.*model\.eval\(\)",
    ):
        s.check_head()


def test_model_without_sequential_is_rejected():
    with pytest.raises(TypeError, match="sequential\\(\\) method"):
        split_model(nn.Linear(2, 2), "0")


def test_registered_custom_affine_module_is_accepted():
    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x) * 2.0

    model = nn.Sequential(nn.Linear(4, 4), Affine(), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(NotPiecewiseLinearError, match=r"'1' \(Affine\)"):
        split_model(model, "0")
    register_piecewise_linear(Affine)
    split_model(model, "0")


def test_images_of_the_wrong_shape_raise_one_clear_error():
    s = split_model(small_cnn(), "0.3")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        s.features(torch.randn(8, 8))
    with pytest.raises(ValueError, match="channel count and size"):
        s.features(torch.randn(2, 3, 8, 8))


def test_psi_module_is_the_module_psi_runs_when_sequential_builds_adapters():
    """sequential() may build fresh adapter modules per call (the glass-box `features`); the
    CAM hook target must be the instance inside psi."""

    class Adapter(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self._conv = [conv]

        def forward(self, x):
            return self._conv[0](x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 36, 2))

        def sequential(self):
            return nn.Sequential(Adapter(self.conv), self.head)

    s = split_model(Net().eval(), "0")
    assert s.psi_module is list(s.psi.leaves)[0]
