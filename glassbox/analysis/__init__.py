"""Pure analysis of trained nets (no Lightning): per-layer features, class separability,
analytical classifiers, PCA reports, the equivariant pose readout and their Result."""

from glassbox.analysis.classifiers import CLASSIFIERS, probe_accuracy, probe_table
from glassbox.analysis.layers import (
    INPUT,
    available_layers,
    collect_dataset_features,
    collect_features,
    default_layers,
)
from glassbox.analysis.pca import (
    PCAFit,
    choose_dim,
    explained_variance_ratio,
    fit_pca,
    pca_report,
    variance_kept,
)
from glassbox.analysis.pose import PoseReadout, pose_accuracy, rotate90
from glassbox.analysis.results import separability_result
from glassbox.analysis.separability import (
    class_separability,
    layerwise_separability,
    separability_table,
)

__all__ = [
    "CLASSIFIERS",
    "INPUT",
    "PCAFit",
    "PoseReadout",
    "available_layers",
    "choose_dim",
    "collect_dataset_features",
    "collect_features",
    "default_layers",
    "explained_variance_ratio",
    "fit_pca",
    "layerwise_separability",
    "pca_report",
    "pose_accuracy",
    "probe_accuracy",
    "probe_table",
    "rotate90",
    "class_separability",
    "separability_result",
    "separability_table",
    "variance_kept",
]
