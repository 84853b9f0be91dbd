"""Representative interpretations as one :class:`~glassbox.results.Result`: scalars, the
records (``interpretations.json``), the AD/AI table (``evaluation.json``, logged as
``interpretation/ad_ai``), the boundaries (``boundaries.pt``) and galleries
(``gallery_class<c>_<j>.png``: the seed, the top-ranked covered images and their heat maps,
logged together as ``interpretation/galleries``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

from glassbox.interpret.representative import Interpretation, RepresentativeInterpreter
from glassbox.results import Result

ANALYSIS = "interpretation"


def _mean(values) -> float:
    values = [v for v in values if v == v]  # drop NaN (no held-out image covered)
    return float(sum(values) / len(values)) if values else float("nan")


def interpretation_scalars(
    interpreter: RepresentativeInterpreter,
    by_class: Mapping[int, Sequence[Interpretation]],
    table: Mapping[str, Mapping[str, float]],
) -> dict[str, float]:
    """Mean size, coverage and precision of the interpretations (on the reference and
    held-out images), the share of each class they cover together, and AD/AI per method."""
    its = [it for c in sorted(by_class) for it in by_class[c]]
    counts = interpreter.class_counts()
    class_cov = []
    for c, group in by_class.items():
        covered = set()
        for it in group:
            covered.update(i for i in it.covered.tolist() if int(interpreter.predictions[i]) == c)
        class_cov.append(len(covered) / counts[c])
    result = Result(ANALYSIS)
    values = {
        "num_interpretations": float(len(its)),
        "num_boundaries": _mean([len(it.boundaries) for it in its]),
        "coverage": _mean([it.coverage for it in its]),
        "precision": _mean([it.precision for it in its]),
        "class_coverage": _mean(class_cov),
        "heldout_coverage": _mean([it.heldout["coverage"] for it in its]),
        "heldout_precision": _mean([it.heldout["precision"] for it in its]),
    }
    for name, value in values.items():
        result.scalars[result.key(name)] = value  # NaN kept: "no held-out image covered"
    for method, row in table.items():
        result.scalars[result.key(method, "AD")] = row["AD"]
        result.scalars[result.key(method, "AI")] = row["AI"]
    return result.scalars


def boundary_records(by_class: Mapping[int, Sequence[Interpretation]]) -> list[dict[str, Any]]:
    """The boundaries (w, b, classes) and the seed's sides of every interpretation (CPU)."""
    return [
        {
            "class": it.cls,
            "seed_index": it.seed_index,
            "weight": it.boundaries.weight.cpu(),
            "bias": it.boundaries.bias.cpu(),
            "pos_class": it.boundaries.pos_class.cpu(),
            "neg_class": it.boundaries.neg_class.cpu(),
            "seed_sides": it.seed_sides.cpu(),
            "feature_shape": it.boundaries.feature_shape,
        }
        for c in sorted(by_class)
        for it in by_class[c]
    ]


def gallery_figure(
    interpreter: RepresentativeInterpreter,
    it: Interpretation,
    images: torch.Tensor,
    title: str,
    size: int = 8,
) -> Figure:
    """The seed and the ``size`` top-ranked reference images of ``it`` (by Dist, covered
    first) over their RI heat maps; ``images`` are the reference images as (N, H, W, C) in
    [0, 1] (see :func:`display_images`)."""
    ranked, dist = interpreter.rank(it)
    idx = ranked[: size + 1].cpu()  # the seed ranks first (Dist 0, covered)
    covered = torch.zeros(len(dist), dtype=torch.bool)
    covered[it.covered] = True
    maps = interpreter.heatmaps(
        it, features=interpreter.features[idx.to(interpreter.features.device)]
    ).cpu()
    grid = _gallery_grid(images[idx], maps)
    labels = [
        "seed" if i == it.seed_index else f"{'cov' if covered[i] else 'unc'} {float(dist[i]):.2g}"
        for i in idx.tolist()
    ]
    # One axes holding a composed grid: far cheaper to draw than an axes per image.
    h, w = grid.shape[0] // 2, grid.shape[1] / len(idx)
    fig = Figure(figsize=(1.3 * len(idx), 2.9))
    ax = fig.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([w * (k + 0.5) for k in range(len(idx))], labels, fontsize=7)
    ax.set_yticks([h * 0.5, h * 1.5], ["image", "RI map"], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=8)
    return fig


def interpretation_result(
    interpreter: RepresentativeInterpreter,
    by_class: Mapping[int, Sequence[Interpretation]],
    table: Mapping[str, Mapping[str, float]],
    images: torch.Tensor | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    gallery_size: int = 8,
    max_galleries: int = 10,
) -> Result:
    """Everything a set of interpretations produced, as one Result (see the module docstring).

    ``images`` are the reference images for the galleries as (N, H, W, C) in [0, 1]
    (``None``: no galleries); ``meta`` / ``evaluation`` add fields to the two JSON documents.
    """
    result = Result(ANALYSIS)
    result.scalars.update(interpretation_scalars(interpreter, by_class, table))
    result.add_document(
        "interpretations",
        {
            "layer": interpreter.layer,
            "feature_shape": list(interpreter.feature_shape),
            "num_reference": len(interpreter.features),
            **dict(meta or {}),
            "interpretations": [it.summary() for c in sorted(by_class) for it in by_class[c]],
        },
    )
    result.add_document(
        "evaluation", {**dict(evaluation or {}), "layer": interpreter.layer, "methods": table}
    )
    result.add_table(
        "ad_ai",
        [{"method": m, "AD": r["AD"], "AI": r["AI"]} for m, r in table.items()],
        formats=(),  # the file is evaluation.json
    )
    result.add_object("boundaries.pt", boundary_records(by_class))
    if images is None or len(interpreter.feature_shape) != 3 or max_galleries <= 0:
        return result
    # first interpretation of every class, then the second ones, ...
    depth = max(len(v) for v in by_class.values())
    order = [(c, j) for j in range(depth) for c in sorted(by_class) if j < len(by_class[c])]
    for c, j in order[:max_galleries]:
        it = by_class[c][j]
        title = (
            f"class {c} interpretation {j}: |P|={len(it.boundaries)}, coverage {it.coverage:.2f}, "
            f"precision {it.precision:.2f} (ranked by Dist, covered first)"
        )
        fig = gallery_figure(interpreter, it, images, title, gallery_size)
        name = f"gallery_class{c}_{j}"
        result.add_figure("galleries", fig, file=name, caption=name, dpi=100)
    return result


def _gallery_grid(images: torch.Tensor, maps: torch.Tensor, pad: int = 2):
    """Row 1: the images; row 2: the heat maps (jet) blended over the grey images."""
    from matplotlib import colormaps

    n, h, w, _ = images.shape
    rgb = images.expand(-1, -1, -1, 3) if images.shape[-1] == 1 else images[..., :3]
    heat = torch.from_numpy(colormaps["jet"](maps.numpy())[..., :3]).float()
    grey = rgb.mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    blend = 0.5 * grey + 0.5 * heat
    grid = torch.ones(2 * h + 3 * pad, n * (w + pad) + pad, 3)
    for k in range(n):  # a handful of tiles
        x0 = pad + k * (w + pad)
        grid[pad : pad + h, x0 : x0 + w] = rgb[k]
        grid[2 * pad + h : 2 * pad + 2 * h, x0 : x0 + w] = blend[k]
    return grid.numpy()


def display_images(images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """(N, H, W, C) images in [0, 1] for plotting (un-normalised when mean/std are known,
    else each image stretched to its own range)."""
    x = images.float()
    if mean is not None and std is not None:
        x = x * torch.as_tensor(std).reshape(1, -1, 1, 1) + torch.as_tensor(mean).reshape(
            1, -1, 1, 1
        )
    else:
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.clamp(0, 1).permute(0, 2, 3, 1)
