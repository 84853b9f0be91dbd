"""Per-layer class-separability tables (raw pixels, glass-box blocks, AlexNet layers).

Each row is a plain dict ``{model, layer, dim, samples, intra, inter, ratio, fisher}`` (see
:class:`glassbox.metrics.ClassSeparability` for the definitions), ready for
:func:`glassbox.analysis.results.separability_result`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from glassbox.analysis.layers import INPUT, LayerSpec, collect_features, iter_batches
from glassbox.errors import AnalysisInputError
from glassbox.metrics.separability import (
    MEASURES,
    ClassSeparability,
    check_labels,
    flatten_features,
)
from glassbox.runtime.devices import full_precision

ROW_KEYS = ("model", "layer", "dim", "samples", *MEASURES)


def _num_classes(labels: Tensor, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    return max(int(labels.max()) + 1, 2) if labels.numel() else 2


@full_precision()  # exact arithmetic even inside a 16-mixed autocast region
def class_separability(
    features: Tensor, labels: Tensor, num_classes: int | None = None
) -> dict[str, float]:
    """``{intra, inter, ratio, fisher}`` of one feature tensor (N, ...) with labels (N,)."""
    x = flatten_features(features)
    y = check_labels(labels, x.shape[0])
    metric = ClassSeparability(_num_classes(y, num_classes))
    metric.update(x, y)
    return {k: float(v) for k, v in metric.compute().items()}


def _row(model: str, layer: str, metric: ClassSeparability) -> dict:
    values = metric.compute()
    return {
        # the input belongs to no model: its rows merge across runs into one "pixels" baseline
        "model": INPUT if layer == INPUT else model,
        "layer": layer,
        "dim": int(metric.sums.shape[1]),
        "samples": int(metric.counts.sum()),
        **{k: float(values[k]) for k in MEASURES},
    }


def separability_table(
    features: Mapping[str, Tensor], labels: Tensor, num_classes: int | None = None, model: str = ""
) -> list[dict]:
    """One row per entry of ``features`` ({layer: (N, ...)}), all with the same ``labels``.

    The ``pixels`` entry (the input) gets ``model="pixels"``, the others ``model``.
    """
    rows = []
    for layer, f in features.items():
        x = flatten_features(f)
        y = check_labels(labels, x.shape[0])
        metric = ClassSeparability(_num_classes(y, num_classes))
        metric.update(x, y)
        rows.append(_row(model, layer, metric))
    return rows


@full_precision()  # exact arithmetic even inside a 16-mixed autocast region
@torch.no_grad()
def layerwise_separability(
    model: nn.Module,
    data: Dataset | Iterable | tuple[Tensor, Tensor],
    layers: LayerSpec = None,
    *,
    num_classes: int | None = None,
    include_input: bool = True,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
    model_name: str | None = None,
) -> list[dict]:
    """Stream ``data`` through ``model`` and measure the separability of every layer.

    Nothing but the per-class sums is kept (one :class:`ClassSeparability` per layer), so any
    dataset size fits in memory. ``num_classes`` defaults to ``model.num_classes``.
    """
    num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if num_classes is None:
        raise AnalysisInputError(
            f"pass num_classes: {type(model).__name__} has no num_classes attribute to read it from"
        )
    metrics: dict[str, ClassSeparability] = {}
    for x, y in iter_batches(data, batch_size, max_samples, seed):
        for layer, f in collect_features(model, x, layers, include_input=include_input).items():
            if layer not in metrics:
                metrics[layer] = ClassSeparability(num_classes)
            metrics[layer].update(f, y)
    if not metrics:
        raise AnalysisInputError(
            "the data yielded no samples; check the dataset split and max_samples"
        )
    name = model_name if model_name is not None else type(model).__name__
    return [_row(name, layer, m) for layer, m in metrics.items()]
