"""Piecewise-linear decision boundaries and representative interpretations (no Lightning).

Split a model F = G ∘ ψ at a layer, extract the exact linear decision boundaries of the
piecewise-linear head G, sample candidates between a seed and other-class images, co-cluster
boundaries and images with the greedy SCSC, rank images, draw heat maps and score them
(AD/AI) against the grad-cam package. See ``docs/interpretation.md``.
"""

from glassbox.interpret.boundaries import LinearBoundaries, decision_boundaries
from glassbox.interpret.consistency import rotation_consistency
from glassbox.interpret.evaluation import (
    CAM_METHODS,
    average_drop_increase,
    cam_saliency,
    compare_saliency_methods,
    keep_most_important,
    ri_saliency,
)
from glassbox.interpret.faithfulness import (
    deletion_insertion_auc,
    drop_increase,
    faithfulness_suite,
    keep_mask,
    paired_wilcoxon,
    road_scores,
)
from glassbox.interpret.heatmap import channel_weights, interpretation_heatmaps
from glassbox.interpret.protocols import (
    PROTOCOLS,
    cam_channel_weights,
    per_image_protocol,
    reuse_protocol,
)
from glassbox.interpret.ranking import interpretation_distance, rank_by_interpretation
from glassbox.interpret.representative import (
    EmptyClassError,
    Interpretation,
    RepresentativeInterpreter,
)
from glassbox.interpret.results import interpretation_result
from glassbox.interpret.sampling import bisect_class_change, sample_candidates
from glassbox.interpret.scsc import (
    InfeasibleDeltaError,
    ScscResult,
    SignMatrix,
    greedy_scsc,
    pack_bits,
    sign_matrix,
    unpack_bits,
)
from glassbox.interpret.split import (
    NotPiecewiseLinearError,
    SplitModel,
    UnknownLayerError,
    assert_piecewise_linear,
    default_layer,
    named_leaves,
    register_piecewise_linear,
    split_model,
)

__all__ = [
    "PROTOCOLS",
    "cam_channel_weights",
    "deletion_insertion_auc",
    "drop_increase",
    "faithfulness_suite",
    "keep_mask",
    "paired_wilcoxon",
    "per_image_protocol",
    "reuse_protocol",
    "road_scores",
    "rotation_consistency",
    "CAM_METHODS",
    "EmptyClassError",
    "InfeasibleDeltaError",
    "Interpretation",
    "LinearBoundaries",
    "NotPiecewiseLinearError",
    "RepresentativeInterpreter",
    "ScscResult",
    "SignMatrix",
    "SplitModel",
    "UnknownLayerError",
    "assert_piecewise_linear",
    "average_drop_increase",
    "bisect_class_change",
    "cam_saliency",
    "channel_weights",
    "compare_saliency_methods",
    "decision_boundaries",
    "default_layer",
    "greedy_scsc",
    "interpretation_distance",
    "interpretation_heatmaps",
    "interpretation_result",
    "keep_most_important",
    "named_leaves",
    "pack_bits",
    "rank_by_interpretation",
    "register_piecewise_linear",
    "ri_saliency",
    "sample_candidates",
    "sign_matrix",
    "split_model",
    "unpack_bits",
]
