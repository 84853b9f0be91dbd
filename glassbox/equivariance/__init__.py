"""Layerwise equivariance of any ``nn.Module`` under rotations and reflections of the input.

Pure torch (no Lightning), so notebooks can call it directly::

    from glassbox.equivariance import measure_layerwise, summary_table
    records = measure_layerwise(model, images, group="C4")
    print(summary_table(records))

See ``docs/equivariance.md`` for the measures, the options and the outputs.
"""

from glassbox.equivariance.actions import e2cnn_element, fibre_action, known_action, spatial_action
from glassbox.equivariance.engine import Workspace, release_shared_workspace
from glassbox.equivariance.groups import (
    Group,
    GroupElement,
    GroupRepresentabilityError,
    continuous_rotation,
    cyclic,
    dihedral,
    get_group,
    pixel_permutation,
    reflection,
    rotate_interpolated,
    rotation_generator,
    rotations,
    transform_images,
)
from glassbox.equivariance.layerwise import (
    FINITE_MEASURES,
    MEASURES,
    OUTPUT,
    EquivarianceRecord,
    LayerOutputError,
    LayerSelectionError,
    default_layers,
    measure_layerwise,
)
from glassbox.equivariance.measures import (
    best_fit_error,
    equivariance_error,
    invariance_error,
    lie_derivative_norms,
    prediction_consistency,
    relative_error,
    spatial_error,
)
from glassbox.equivariance.results import (
    equivariance_result,
    records_to_frame,
    save_records,
    scalars_from_summary,
    summary_table,
)
from glassbox.reporting.figures import plot_depth

__all__ = [
    "FINITE_MEASURES",
    "MEASURES",
    "OUTPUT",
    "EquivarianceRecord",
    "Group",
    "GroupElement",
    "GroupRepresentabilityError",
    "LayerOutputError",
    "LayerSelectionError",
    "Workspace",
    "best_fit_error",
    "continuous_rotation",
    "cyclic",
    "default_layers",
    "dihedral",
    "equivariance_result",
    "e2cnn_element",
    "equivariance_error",
    "fibre_action",
    "get_group",
    "invariance_error",
    "known_action",
    "lie_derivative_norms",
    "measure_layerwise",
    "plot_depth",
    "pixel_permutation",
    "prediction_consistency",
    "records_to_frame",
    "reflection",
    "relative_error",
    "release_shared_workspace",
    "rotate_interpolated",
    "rotation_generator",
    "rotations",
    "save_records",
    "scalars_from_summary",
    "spatial_action",
    "spatial_error",
    "summary_table",
    "transform_images",
]
