"""Bad input to the interpretation protocols and the faithfulness suite: one clear
GlassboxError line each, naming the cause and the fix."""

import pytest
import torch

from glassbox.callbacks.interpretation import RepresentativeInterpretationCallback
from glassbox.errors import GlassboxError
from glassbox.interpret.faithfulness import check_keep_fractions, drop_increase, road_scores
from glassbox.interpret.protocols import check_k, check_protocols


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_unknown_protocol():
    with pytest.raises(GlassboxError) as e:
        RepresentativeInterpretationCallback(protocols=["reuse", "paper"])
    assert one_line(e) == "unknown interpretation protocol 'paper'; choose from reuse, per_image"
    with pytest.raises(GlassboxError, match="unknown interpretation protocol 'x'"):
        check_protocols(["x"])


def test_k_larger_than_the_unseen_images():
    with pytest.raises(GlassboxError) as e:
        RepresentativeInterpretationCallback(num_images=8, reuse_k=10)
    assert one_line(e) == (
        "reuse_k=10 must be in [1, 8] (the number of unseen images); lower reuse_k or raise "
        "num_images"
    )
    with pytest.raises(GlassboxError, match=r"reuse_k=5 must be in \[1, 3\]"):
        check_k(5, 3)
    # per_image alone does not need k unseen images per interpretation
    RepresentativeInterpretationCallback(num_images=8, reuse_k=10, protocols=["per_image"])


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_keep_fraction_outside_zero_one(bad):
    with pytest.raises(GlassboxError) as e:
        RepresentativeInterpretationCallback(keep_fractions=[0.1, bad])
    assert (
        one_line(e) == f"keep fractions must be in (0, 1] (the share of pixels kept), got [{bad}]"
    )
    with pytest.raises(GlassboxError, match="keep fractions must be in"):
        drop_increase(
            torch.nn.Flatten(), torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1).long(),
            keeps=[bad],
        )  # fmt: skip
    with pytest.raises(GlassboxError, match="keep_fractions is empty"):
        check_keep_fractions([])


def test_empty_road_percentile_list():
    with pytest.raises(GlassboxError) as e:
        RepresentativeInterpretationCallback(road_percentiles=[])
    assert one_line(e) == (
        "road_percentiles is empty; give at least one percentile in (0, 100), e.g. [20, 40, 60, 80]"
    )
    with pytest.raises(GlassboxError, match="road_percentiles is empty"):
        road_scores(torch.nn.Flatten(), torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2), [0], [])
    with pytest.raises(GlassboxError, match=r"road_percentiles must be in \(0, 100\)"):
        RepresentativeInterpretationCallback(road_percentiles=[100])
    RepresentativeInterpretationCallback(road_percentiles=None)  # null skips ROAD
