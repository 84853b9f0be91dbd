"""The separability analysis as one :class:`~glassbox.results.Result`.

Files (in the analysis folder): ``separability.{csv,json,md,png}`` (per-layer class
separability), ``probes.{csv,json,md,png}`` (analytical classifiers), ``pca.json`` and
``pca_explained_variance.png`` (glass-box nets), ``pose.json`` (pose readout). Logger keys:
``separability/<layer>/<measure>``, ``separability/<layer>/<classifier>_acc``,
``separability/pca/<quantity>``, ``separability/pose/<quantity>``; tables
``separability/table`` and ``separability/probes``; the figures together as
``separability/plots`` (captions: their file stems).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glassbox.metrics.separability import MEASURES
from glassbox.reporting.figures import plot_explained_variance, plot_probes, plot_separability
from glassbox.results import Result

ANALYSIS = "separability"
SEPARABILITY_FILE = "separability"
PROBES_FILE = "probes"
TABLE_FORMATS = ("csv", "json", "md")
PCA_SCALARS = ("variance_kept", "variance_kept_optimal", "threshold_dim", "reduced_dim")


def separability_result(
    separability: Sequence[Mapping[str, Any]],
    probes: Sequence[Mapping[str, Any]] = (),
    pca: Mapping[str, Any] | None = None,
    pose: Mapping[str, float] | None = None,
) -> Result:
    """The Result of :func:`~glassbox.analysis.separability.separability_table` rows,
    :func:`~glassbox.analysis.classifiers.probe_table` rows, a
    :func:`~glassbox.analysis.pca.pca_report` dict and a
    :func:`~glassbox.analysis.pose.pose_accuracy` dict (each optional but the first)."""
    result = Result(ANALYSIS)
    for r in separability:
        for m in MEASURES:
            result.scalars[result.key(r["layer"], m)] = r[m]
    result.add_table("table", separability, file=SEPARABILITY_FILE, formats=TABLE_FORMATS)
    result.add_figure(
        "plots", plot_separability(separability), SEPARABILITY_FILE, SEPARABILITY_FILE
    )
    if probes:
        for r in probes:
            result.scalars[result.key(r["layer"], f"{r['classifier']}_acc")] = r["test_acc"]
        result.add_table("probes", probes, file=PROBES_FILE, formats=TABLE_FORMATS)
        result.add_figure("plots", plot_probes(probes), PROBES_FILE, PROBES_FILE)
    if pca is not None:
        result.add_document("pca", dict(pca))
        for key in PCA_SCALARS:
            if pca.get(key) is not None:
                result.add_scalar("pca", key, value=pca[key])
        stem = "pca_explained_variance"
        result.add_figure("plots", plot_explained_variance(pca), stem, stem)
    if pose is not None:
        result.add_document("pose", dict(pose))
        for key, value in pose.items():
            result.add_scalar("pose", key, value=value)
    return result
