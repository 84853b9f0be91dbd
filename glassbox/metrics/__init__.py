"""torchmetrics ``Metric``s for the analysis (no Lightning imports)."""

from glassbox.metrics.separability import MEASURES, ClassSeparability, separability_from_stats

__all__ = ["MEASURES", "ClassSeparability", "separability_from_stats"]
