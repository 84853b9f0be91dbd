"""A faithfulness suite for saliency maps (no Lightning): AD/AI over several keep fractions,
deletion/insertion AUC, ROAD, random and centre-prior floors, paired Wilcoxon tests.

All measures use the probability Y_c (softmax) of a given class c per image:

* **AD / AI at keep q** (Chattopadhay et al., "Grad-CAM++", WACV 2018, as used by Lam et al.,
  ICCV 2021): e′ keeps the q most salient pixels of e, the rest set to ``fill``;
  AD = 100·mean max(0, Y_c(e) − Y_c(e′))/Y_c(e) (lower is better),
  AI = 100·mean 1[Y_c(e) < Y_c(e′)] (higher is better).
* **Deletion / insertion AUC** (Petsiuk et al., "RISE", BMVC 2018): Y_c while the most salient
  pixels are removed (deletion, lower is better) or inserted into a ``fill`` image
  (insertion, higher is better), in ``steps`` equal steps, area under the curve (trapezoid)
  on the fraction axis [0, 1].
* **ROAD** (Rong et al., "A consistent and efficient evaluation strategy for attribution
  methods", ICML 2022) from the ``grad-cam`` package, used as it is: the change of Y_c after
  noisy-linear imputation of the most (MoRF, lower is better) or least (LeRF, higher is
  better) relevant pixels, averaged over ``road_percentiles``.

Hard top-k masks break ties among equal saliencies by a seeded random order, so a sparse map
(many zeros) is not rewarded or punished by the order pixels sit in memory.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError

__all__ = [
    "DEFAULT_KEEP_FRACTIONS",
    "DEFAULT_ROAD_PERCENTILES",
    "centre_prior_saliency",
    "check_keep_fractions",
    "check_road_percentiles",
    "class_probabilities",
    "deletion_insertion_auc",
    "drop_increase",
    "faithfulness_suite",
    "keep_mask",
    "paired_wilcoxon",
    "positive_fraction",
    "random_saliency",
    "road_scores",
    "saliency_order",
]

DEFAULT_KEEP_FRACTIONS = (0.05, 0.1, 0.2, 0.5)
DEFAULT_ROAD_PERCENTILES = (20, 40, 60, 80)


def check_keep_fractions(keeps: Sequence[float]) -> list[float]:
    """Every keep fraction in (0, 1] (one error line otherwise)."""
    keeps = [float(k) for k in keeps]
    if not keeps:
        raise AnalysisInputError("keep_fractions is empty; give at least one fraction in (0, 1]")
    bad = [k for k in keeps if not 0.0 < k <= 1.0]
    if bad:
        raise AnalysisInputError(
            f"keep fractions must be in (0, 1] (the share of pixels kept), got {bad}"
        )
    return keeps


def check_road_percentiles(percentiles: Sequence[float]) -> list[float]:
    """A non-empty list of percentiles in (0, 100)."""
    percentiles = [float(p) for p in percentiles]
    if not percentiles:
        raise AnalysisInputError(
            "road_percentiles is empty; give at least one percentile in (0, 100), e.g. [20, 40, 60, 80]"
        )
    bad = [p for p in percentiles if not 0.0 < p < 100.0]
    if bad:
        raise AnalysisInputError(f"road_percentiles must be in (0, 100), got {bad}")
    return percentiles


def _check_saliency(images: Tensor, saliency: Tensor) -> None:
    n, _, h, w = images.shape
    if tuple(saliency.shape) != (n, h, w):
        raise AnalysisInputError(
            f"saliency must have shape {(n, h, w)} to match the images, got {tuple(saliency.shape)}"
        )


def saliency_order(saliency: Tensor, seed: int = 0) -> Tensor:
    """(N, H·W) pixel indices, most salient first; ties in a seeded random order.

    One random permutation per image, then a *stable* descending sort of the permuted
    saliencies: equal values keep the random order.
    """
    n = saliency.shape[0]
    flat = saliency.reshape(n, -1)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.rand(flat.shape, generator=gen).argsort(dim=1).to(flat.device)
    order = torch.argsort(flat.gather(1, perm), dim=1, descending=True, stable=True)
    return perm.gather(1, order)


def keep_mask(saliency: Tensor, keep: float, seed: int = 0, order: Tensor | None = None) -> Tensor:
    """(N, H, W) bool: the ``keep`` fraction of most salient pixels (ties broken at random)."""
    check_keep_fractions([keep])
    n, h, w = saliency.shape
    order = saliency_order(saliency, seed) if order is None else order
    k = max(1, int(round(keep * h * w)))
    mask = torch.zeros(n, h * w, dtype=torch.bool, device=saliency.device)
    mask.scatter_(1, order[:, :k], True)
    return mask.reshape(n, h, w)


def _fill(fill: float | Tensor, images: Tensor) -> Tensor:
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return fill.reshape(1, -1, 1, 1) if fill.dim() == 1 else fill


@torch.no_grad()
def class_probabilities(
    model: nn.Module, images: Tensor, classes: Tensor, batch_size: int = 256
) -> Tensor:
    """Y_c (N,): softmax probability of ``classes`` for every image."""
    classes = torch.as_tensor(classes, device=images.device).long()
    out = []
    for s in range(0, len(images), batch_size):
        p = model(images[s : s + batch_size]).softmax(1)
        out.append(p.gather(1, classes[s : s + batch_size, None].to(p.device))[:, 0])
    return torch.cat(out) if out else images.new_zeros(0)


@torch.no_grad()
def drop_increase(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor,
    keeps: Sequence[float] = DEFAULT_KEEP_FRACTIONS,
    fill: float | Tensor = 0.0,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[float, tuple[Tensor, Tensor]]:
    """Per-image drop max(0, Y−Y′)/Y and increase 1[Y < Y′] for each keep fraction
    (all keep fractions masked and evaluated in one batched pass)."""
    keeps = check_keep_fractions(keeps)
    _check_saliency(images, saliency)
    saliency = saliency.to(images.device)
    order = saliency_order(saliency, seed)
    y = class_probabilities(model, images, classes, batch_size)
    masks = torch.stack([keep_mask(saliency, q, order=order) for q in keeps])  # (Q, N, H, W)
    masked = torch.where(masks[:, :, None], images[None], _fill(fill, images)[None])
    y_m = class_probabilities(
        model, masked.flatten(0, 1), classes.repeat(len(keeps)), batch_size
    ).reshape(len(keeps), -1)
    drop = (y[None] - y_m).clamp_min(0) / y[None].clamp_min(1e-12)
    inc = (y[None] < y_m).float()
    return {q: (drop[i], inc[i]) for i, q in enumerate(keeps)}


@torch.no_grad()
def deletion_insertion_auc(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor,
    fill: float | Tensor = 0.0,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Per-image deletion and insertion AUC (N,) each, on the fraction axis [0, 1]."""
    _check_saliency(images, saliency)
    if steps < 1:
        raise AnalysisInputError(f"steps must be >= 1, got {steps}")
    n, _, h, w = images.shape
    order = saliency_order(saliency.to(images.device), seed)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=images.device)).long()
    top = rank[None] < counts[:, None, None]  # (S+1, N, HW): pixels among the most salient
    top = top.reshape(steps + 1, n, 1, h, w)
    fill = _fill(fill, images)[None]
    deleted = torch.where(top, fill, images[None]).flatten(0, 1)
    inserted = torch.where(top, images[None], fill).flatten(0, 1)
    cls = classes.repeat(steps + 1)
    y_del = class_probabilities(model, deleted, cls, batch_size).reshape(steps + 1, n)
    y_ins = class_probabilities(model, inserted, cls, batch_size).reshape(steps + 1, n)
    x = counts.to(y_del.dtype) / (h * w)
    return torch.trapezoid(y_del, x, dim=0), torch.trapezoid(y_ins, x, dim=0)


def road_scores(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor,
    percentiles: Sequence[float] = DEFAULT_ROAD_PERCENTILES,
) -> tuple[Tensor, Tensor]:
    """Per-image ROAD MoRF and LeRF scores (change of Y_c, averaged over ``percentiles``)
    from the grad-cam package's ``ROADMostRelevantFirstAverage`` /
    ``ROADLeastRelevantFirstAverage`` with its softmax target."""
    from pytorch_grad_cam.metrics.road import (
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    percentiles = check_road_percentiles(percentiles)
    _check_saliency(images, saliency)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    cams = saliency.detach().float().cpu().numpy()
    x = images.detach()
    # the imputer adds seeded-by-nothing noise; fix torch's RNG for repeatable numbers
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            morf = ROADMostRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
            lerf = ROADLeastRelevantFirstAverage(list(percentiles))(x, cams, targets, model)
    finally:
        torch.random.set_rng_state(state)
    return torch.from_numpy(np.asarray(morf)).float(), torch.from_numpy(np.asarray(lerf)).float()


def positive_fraction(saliency: Tensor) -> Tensor:
    """(N,) share of pixels with saliency > 0."""
    return (saliency > 0).float().mean(dim=(1, 2))


def random_saliency(n: int, h: int, w: int, seed: int = 0, like: Tensor | None = None) -> Tensor:
    """A floor: i.i.d. uniform saliency (seeded)."""
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    out = torch.rand(n, h, w, generator=gen)
    return out.to(like) if like is not None else out


def centre_prior_saliency(n: int, h: int, w: int, like: Tensor | None = None) -> Tensor:
    """A floor: saliency decreasing with the distance to the image centre."""
    yy = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xx = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    r = (yy[:, None] ** 2 + xx[None] ** 2).sqrt()
    out = (1.0 - r / r.max().clamp_min(1e-12)).float().expand(n, h, w).clone()
    return out.to(like) if like is not None else out


def paired_wilcoxon(a: Tensor, b: Tensor) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples (1.0 when a == b everywhere)."""
    from scipy.stats import wilcoxon

    a = np.asarray(torch.as_tensor(a).detach().double().cpu())
    b = np.asarray(torch.as_tensor(b).detach().double().cpu())
    if a.shape != b.shape:
        raise AnalysisInputError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    if len(d) == 0 or np.all(np.abs(d) <= 1e-12):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)


def _keep_label(q: float) -> str:
    return f"{100 * q:g}"


def faithfulness_suite(
    model: nn.Module,
    sets: Mapping[str, tuple[Tensor, Tensor, Tensor]],
    keep: float = 0.2,
    keeps: Sequence[float] = DEFAULT_KEEP_FRACTIONS,
    fill: float | Tensor = 0.0,
    road_percentiles: Sequence[float] | None = DEFAULT_ROAD_PERCENTILES,
    steps: int = 10,
    road_images: int | None = None,
    reference: str = "RI",
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Score every method's maps: ``sets[method] = (images, saliency, classes)``.

    Returns ``{method: {measure: value}}`` with measures ``AD``/``AI`` (at ``keep``),
    ``AD@<q%>``/``AI@<q%>`` for each of ``keeps``, ``deletion_auc``, ``insertion_auc``,
    ``road_morf``/``road_lerf`` (when ``road_percentiles`` is not None; on the first
    ``road_images`` images of each method, all when None: the package's imputer solves one
    sparse system per image and percentile), ``positive_fraction``
    (percent), ``n`` and, for every method other than ``reference`` with as many images,
    ``wilcoxon_p_AD`` / ``wilcoxon_p_deletion``: paired per-image (row-wise) signed-rank
    p-values against ``reference``.
    """
    keeps = check_keep_fractions(list(dict.fromkeys([keep, *keeps])))
    if road_percentiles is not None:
        road_percentiles = check_road_percentiles(road_percentiles)
    table: dict[str, dict[str, float]] = {}
    per_image: dict[str, dict[str, Tensor]] = {}
    for method, (images, saliency, classes) in sets.items():
        classes = torch.as_tensor(classes, device=images.device).long()
        saliency = saliency.to(device=images.device, dtype=images.dtype)
        di = drop_increase(model, images, saliency, classes, keeps, fill, seed, batch_size)
        dele, ins = deletion_insertion_auc(
            model, images, saliency, classes, fill, steps, seed, batch_size
        )
        row = {
            "AD": 100.0 * float(di[keep][0].mean()),
            "AI": 100.0 * float(di[keep][1].mean()),
        }
        for q in keeps:
            row[f"AD@{_keep_label(q)}"] = 100.0 * float(di[q][0].mean())
            row[f"AI@{_keep_label(q)}"] = 100.0 * float(di[q][1].mean())
        row["deletion_auc"] = float(dele.mean())
        row["insertion_auc"] = float(ins.mean())
        if road_percentiles is not None:
            r = len(images) if road_images is None else max(1, int(road_images))
            morf, lerf = road_scores(model, images[:r], saliency[:r], classes[:r], road_percentiles)
            row["road_morf"] = float(morf.mean())
            row["road_lerf"] = float(lerf.mean())
        row["positive_fraction"] = 100.0 * float(positive_fraction(saliency).mean())
        row["n"] = float(len(images))
        table[method] = row
        per_image[method] = {"AD": di[keep][0], "deletion": dele}
    if reference in per_image:
        ref = per_image[reference]
        for method, rows in per_image.items():
            if method == reference or len(rows["AD"]) != len(ref["AD"]):
                continue
            table[method]["wilcoxon_p_AD"] = paired_wilcoxon(ref["AD"], rows["AD"])
            table[method]["wilcoxon_p_deletion"] = paired_wilcoxon(
                ref["deletion"], rows["deletion"]
            )
    return table
