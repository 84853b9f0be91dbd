"""Layerwise equivariance of any ``nn.Module``: :func:`measure_layerwise`.

The original images, then each transformed copy, go through the model: the |G| forward
passes a user would run. A forward hook on each chosen layer copies the originals'
features once and measures each copy's features the moment the layer returns them
(every measure of that element: :mod:`glassbox.equivariance.engine`), keeping nothing of
the copy, so a later in-place op (AlexNet's ``ReLU(inplace=True)``) cannot corrupt them. The Lie derivative, when asked for, costs
one extra forward-mode (JVP) pass over the original images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from glassbox import probe
from glassbox.equivariance.actions import fibre_action, lie_not_applicable
from glassbox.equivariance.engine import LayerMeasure, Workspace, shared_workspace
from glassbox.equivariance.groups import (
    Group,
    GroupElement,
    check_exact_policy,
    get_group,
    transform_images,
)
from glassbox.equivariance.measures import lie_derivative_norms, split_sizes
from glassbox.errors import AnalysisInputError, AnalysisTypeError
from glassbox.probe import (
    OUTPUT,
    LayerCapture,
    LayerOutputError,
    LayerSelectionError,
    as_tensor,
    is_geometric_tensor,
    model_output,
    run_model,
)
from glassbox.runtime.devices import full_precision

__all__ = [
    "FINITE_MEASURES",
    "MEASURES",
    "OUTPUT",
    "EquivarianceRecord",
    "LayerOutputError",
    "LayerSelectionError",
    "default_layers",
    "measure_layerwise",
    "resolve_layer_names",
]
MEASURES = ("invariance", "equivariance", "spatial", "best_fit", "consistency", "lie_derivative")
FINITE_MEASURES = MEASURES[:5]
LIE_ELEMENT = "d/dtheta"

Action = Callable[[torch.Tensor, GroupElement], torch.Tensor]


@dataclass
class EquivarianceRecord:
    """One measurement: a (layer, group element, measure) triple and its value.

    ``depth`` is the layer's position in execution order (the output comes last);
    ``shape`` is the per-image feature shape; ``exact`` says whether the element acted
    on the images and on this layer's grid without interpolation. ``value`` is a relative
    error (0 = perfectly equivariant) except for ``consistency``, a fraction in [0, 1]; it is
    NaN where the measure does not apply to the layer, and ``note`` says why (the Lie
    derivative on regular fields of a discrete group).
    """

    layer: str
    depth: int
    module: str
    shape: tuple[int, ...]
    group: str
    element: str
    angle: float
    flip: bool
    exact: bool
    measure: str
    value: float
    model: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = "x".join(str(s) for s in self.shape)
        return d


# --------------------------------------------------------------------------- layers

_CONV = (nn.Conv2d, nn.ConvTranspose2d)
_POOL = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
)
_E2CNN_CONV = ("R2Conv", "R2ConvTransposed")
_E2CNN_POOL = (
    "GroupPooling",
    "InducedNormPool",
    "MaxPoolChannels",
    "NormMaxPool",
    "NormPool",
    "PointwiseAdaptiveAvgPool",
    "PointwiseAdaptiveMaxPool",
    "PointwiseAvgPool",
    "PointwiseAvgPoolAntialiased",
    "PointwiseMaxPool",
    "PointwiseMaxPoolAntialiased",
)


def _e2cnn_classes(names: Sequence[str]) -> tuple[type, ...]:
    try:
        import e2cnn.nn as enn
    except ImportError:  # pragma: no cover - e2cnn is a dependency
        return ()
    return tuple(getattr(enn, n) for n in names if hasattr(enn, n))


def _is_block(module: nn.Module) -> bool:
    """An e2cnn SequentialModule with an R2Conv among its direct children."""
    seq = _e2cnn_classes(("SequentialModule",))
    convs = _e2cnn_classes(_E2CNN_CONV)
    return (
        bool(seq)
        and isinstance(module, seq)
        and any(isinstance(c, convs) for c in module.children())
    )


def default_layers(model: nn.Module) -> list[str]:
    """Every conv or equivariant block, every pooling layer, then ``"output"``.

    An equivariant block (an e2cnn ``SequentialModule`` that directly holds an
    ``R2Conv``) is measured as a whole; the convs and pools inside it are not listed again.
    """
    convs = _CONV + _e2cnn_classes(_E2CNN_CONV)
    pools = _POOL + _e2cnn_classes(_E2CNN_POOL)
    chosen: list[str] = []
    blocks: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(b + ".") for b in blocks):
            continue
        if _is_block(module):
            blocks.append(name)
            chosen.append(name)
        elif isinstance(module, convs + pools):
            chosen.append(name)
    return chosen + [OUTPUT]


def resolve_layer_names(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The measured layers: ``layers`` checked by :func:`glassbox.probe.resolve_layer_names`
    (``named_modules()`` names + ``"output"``), or :func:`default_layers`."""
    return default_layers(model) if layers is None else probe.resolve_layer_names(model, layers)


# --------------------------------------------------------------------------- helpers


def _check_images(images: torch.Tensor) -> None:
    if not torch.is_tensor(images):
        raise AnalysisTypeError(
            f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4:
        raise AnalysisInputError(
            f"images must be a batch of images of shape (B, C, H, W), got shape {tuple(images.shape)}; "
            "rotations and flips act only on image inputs (use x[None] for a single image)"
        )
    if not images.is_floating_point():
        raise AnalysisTypeError(
            f"images must be floating point (normalised), got {images.dtype}; convert with images.float()"
        )
    if images.shape[-1] < 2 or images.shape[-2] < 2:
        raise AnalysisInputError(
            f"images must have a spatial size of at least 2×2, got {tuple(images.shape[-2:])}"
        )


# --------------------------------------------------------------------------- main entry


@full_precision()  # exact arithmetic even inside a 16-mixed autocast region
def measure_layerwise(
    model: nn.Module,
    images: torch.Tensor,
    group: str | Group = "C4",
    layers: Sequence[str] | None = None,
    measures: Sequence[str] | None = None,
    *,
    exact: str = "error",
    fit_fraction: float = 0.5,
    ridge: float = 1e-8,
    min_fit_ratio: float = 4.0,
    actions: dict[str, Action] | None = None,
    model_name: str = "",
    eval_mode: bool = True,
    workspace: Workspace | None = None,
) -> list[EquivarianceRecord]:
    """Measure how each layer of ``model`` transforms when the input images are transformed.

    Args:
        model: any ``nn.Module`` taking (B, C, H, W) images (an e2cnn module with
            ``in_type`` gets them wrapped as a GeometricTensor).
        images: a (B, C, H, W) float batch (≥ 2 images for ``best_fit``).
        group: ``"C4"``, ``"D4"``, ``"flip"``, ``"SO2"``, ... or a :class:`Group`; its
            non-identity elements are measured.
        layers: module names from ``model.named_modules()`` plus ``"output"``; default
            :func:`default_layers` (convs / equivariant blocks, pooling layers, output).
        measures: subset of :data:`MEASURES`; default all finite measures, plus
            ``lie_derivative`` when the group is continuous (``"SO2"``).
        exact: what to do with an element that the image (or a feature map) grid cannot
            represent exactly: ``"error"``, ``"warn"`` (interpolate, warn) or ``"interpolate"``.
        fit_fraction: share of the images used to fit the best-fit channel map; the
            error is reported on the rest.
        ridge: relative ridge of the best-fit least squares (towards the identity map).
        min_fit_ratio: ``best_fit`` is left out (with a warning) for layers with fewer than
            this many fitting rows (fit images × positions) per channel, where the fit
            would over-fit (e.g. global-pooled vectors of a small batch).
        actions: known actions ``{layer: fn(features, element) -> features}`` for plain
            tensor layers whose transformation law is known (e2cnn layers need none).
        model_name: stored in every record (to overlay two models in a report).
        eval_mode: run the model in eval mode (restoring the modes afterwards).
        workspace: scratch buffers for the measures (a copy of every measured layer's
            features of the original images, plus three blocks of one layer's). Default: on
            the CPU a per-thread workspace kept between calls (each buffer ≤ 256 MiB; free it
            with ``release_shared_workspace()``), elsewhere a fresh one.

    Returns:
        One :class:`EquivarianceRecord` per (layer, element, measure) that applies:
        ``equivariance`` needs a known action (GeometricTensor or ``actions``), ``spatial``
        and ``best_fit`` need (B, C, H, W) maps, ``consistency`` only at ``"output"``.

    Raises:
        LayerSelectionError: unknown layer names (the message lists the valid ones).
        LayerOutputError: a measured layer's output is not a tensor.
        GroupRepresentabilityError: an element the grid cannot represent and ``exact="error"``.
        TypeError / ValueError: images that are not a (B, C, H, W) float batch.
    """
    _check_images(images)
    group = get_group(group)
    check_exact_policy(exact)
    if measures is None:
        measures = (FINITE_MEASURES if group.elements else ()) + (
            ("lie_derivative",) if group.continuous else ()
        )
    measures = tuple(dict.fromkeys([measures] if isinstance(measures, str) else measures))
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise AnalysisInputError(f"unknown measure(s) {bad}; choose from {MEASURES}")
    finite = [m for m in measures if m in FINITE_MEASURES]
    if finite and not group.elements:
        raise AnalysisInputError(
            f"group {group.name} has no finite elements for measures {finite}; use e.g. 'C4' or 'D4'"
        )
    names = resolve_layer_names(model, layers)
    actions = dict(actions or {})
    unknown_actions = [n for n in actions if n not in names]
    if unknown_actions:
        raise LayerSelectionError(
            f"actions given for layers {unknown_actions} that are not measured ({names})"
        )
    if "best_fit" in measures:
        split_sizes(images.shape[0], fit_fraction)

    records: list[EquivarianceRecord] = []
    with probe.eval_mode(model, eval_mode):
        if finite:
            records += _finite_records(
                model,
                images,
                group,
                names,
                finite,
                exact,
                fit_fraction,
                ridge,
                min_fit_ratio,
                actions,
                workspace or shared_workspace(images.device),
            )
        if "lie_derivative" in measures:
            records += _lie_records(model, images, group, names)
    for r in records:
        r.model = model_name
    if finite and "lie_derivative" in measures:  # lie records got their own depth pass; align
        depth = {r.layer: r.depth for r in records if r.measure != "lie_derivative"}
        for r in records:
            r.depth = depth.get(r.layer, r.depth)
    records.sort(key=lambda r: (r.depth, MEASURES.index(r.measure)))
    return records


def _finite_records(
    model,
    images,
    group,
    names,
    measures,
    exact,
    fit_fraction,
    ridge,
    min_fit_ratio,
    actions,
    workspace,
):
    """The original images, then each transformed copy, through the model (the |G| forwards
    a user would run); a hook on each layer builds its :class:`LayerMeasure` from the
    originals' features and feeds it each copy's features as they appear (streaming: only
    the originals' features are kept between the passes), the output after each forward."""
    b, _, h, w = images.shape
    elements = group.elements
    n_fit = split_sizes(b, fit_fraction)[0] if "best_fit" in measures else 0
    layers: dict[str, tuple[LayerMeasure, dict]] = {}  # name → (its measures, record fields)
    phase = [-1]  # -1: the originals; i: the copy transformed by elements[i]

    def measure(name: str, module: nn.Module, out) -> None:
        feats = as_tensor(out)
        if feats.dim() == 0 or feats.shape[0] != b:
            raise LayerOutputError(
                f"layer {name!r} returns shape {tuple(feats.shape)} whose first axis is not the "
                f"batch ({b} images went in); measure layers that keep the batch axis first"
            )
        if phase[0] >= 0:
            layers[name][0].add(phase[0], feats)
            return
        fibre = None
        if is_geometric_tensor(out):
            fibre = partial(fibre_action, out.type, device=feats.device, dtype=feats.dtype)
        state = LayerMeasure(
            feats,
            elements,
            measures,
            exact=exact,
            n_fit=n_fit,
            ridge=ridge,
            min_fit_ratio=min_fit_ratio,
            fibre=fibre,
            custom_action=actions.get(name),
            is_output=name == OUTPUT,
            what=f"output of layer {name!r}",
            workspace=workspace,
            slot=f"z0/{len(layers)}",
        )
        fields = {
            "layer": name,
            "depth": len(layers),
            "module": type(module).__name__,
            "shape": tuple(feats.shape[1:]),
            "group": group.name,
        }
        layers[name] = (state, fields)

    hooked = [n for n in names if n != OUTPUT]
    capture = LayerCapture(model, hooked, on_output=measure)
    try:
        with torch.no_grad():
            for i in range(-1, len(elements)):
                phase[0] = i
                x = images if i < 0 else transform_images(images, elements[i], exact)
                capture.clear()
                out = run_model(model, x)
                capture.ordered(hooked)
                if OUTPUT in names:
                    measure(OUTPUT, model, model_output(out))
    finally:
        capture.remove()
    skipped: list[str] = []
    pending: list[tuple[dict, torch.Tensor]] = []  # (fields, 0-d value): one device sync at the end
    for name, (state, base) in layers.items():
        values, missing = state.values()
        skipped.extend(f"{name}: {m}" for m in missing)
        shape = base["shape"]
        for el, measure_name, value in values:
            # exact = no interpolation, neither on the images nor on this layer's grid
            on_grid = len(shape) != 3 or el.is_exact_on(*shape[-2:])
            fields = dict(
                base,
                element=el.name,
                angle=el.angle,
                flip=el.flip,
                exact=el.is_exact_on(h, w) and on_grid,
                measure=measure_name,
            )
            pending.append((fields, value))
    if skipped:
        warnings.warn(f"not reported: {'; '.join(skipped)}", stacklevel=3)
    if not pending:
        return []
    values = torch.stack([v.float() for _, v in pending]).tolist()
    return [EquivarianceRecord(value=float(v), **f) for (f, _), v in zip(pending, values)]


def _lie_records(model, images, group, names):
    hooked = [n for n in names if n != OUTPUT]
    capture = LayerCapture(model, hooked, clone=True)  # in-place ops under the JVP: always copy
    order: list[str] = []
    reasons: list[str] = []  # per output: why the Lie derivative does not apply ("" if it does)

    def fn(x):
        capture.clear()
        out = run_model(model, x)
        order[:] = capture.ordered(hooked)
        raw = [capture.outputs[n] for n in order]
        if OUTPUT in names:
            raw.append(model_output(out))
        reasons[:] = [lie_not_applicable(f) for f in raw]
        return [as_tensor(f) for f in raw]

    try:
        values, outs = lie_derivative_norms(fn, images)
    finally:
        capture.remove()
    all_names = order + ([OUTPUT] if OUTPUT in names else [])
    modules = capture.modules
    values = torch.stack([v.float() for v in values]).tolist()
    return [
        EquivarianceRecord(
            layer=name,
            depth=depth,
            module=type(modules[name]).__name__ if name in modules else type(model).__name__,
            shape=tuple(f.shape[1:]),
            group="SO2",
            element=LIE_ELEMENT,
            angle=math.nan,
            flip=False,
            exact=False,
            measure="lie_derivative",
            value=math.nan if why else float(v),
            note=f"lie_derivative n/a: {why}" if why else "",
        )
        for depth, (name, f, v, why) in enumerate(zip(all_names, outs, values, reasons))
    ]
