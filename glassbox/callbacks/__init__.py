"""Analysis callbacks that attach to any LightningModule and any data.

>>> from glassbox.callbacks import (
...     EquivarianceCallback, SeparabilityCallback, RepresentativeInterpretationCallback)

Each one picks a fixed set of images (given ``data``, the datamodule's ``analysis_batch``, or
a seeded choice from the split's dataloader, whatever the batch structure), analyses the
network (the module, or its ``model_attr`` attribute; by default ``net`` if present), writes
its reports into ``<output_dir>/<name>/<tag>/`` with a ``status.json``, and logs scalars.
An analysis that cannot run on the current model or data is skipped with a warning; a
misconfigured callback fails in ``setup``, before training. See :mod:`glassbox.callbacks.base`.
"""

from glassbox.callbacks.base import (
    IMAGE_KEYS,
    LABEL_KEYS,
    AnalysisCallback,
    analysis_results,
    split_batch,
)
from glassbox.callbacks.equivariance import EquivarianceCallback
from glassbox.callbacks.interpretation import RepresentativeInterpretationCallback
from glassbox.callbacks.separability import SeparabilityCallback

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "AnalysisCallback",
    "EquivarianceCallback",
    "RepresentativeInterpretationCallback",
    "SeparabilityCallback",
    "analysis_results",
    "split_batch",
]
