"""Collect per-layer features of any model, for the separability and probe analyses.

Three kinds of model are understood without configuration:

- **glass-box nets** (a ``layers(x)`` method and a ``representation`` e2cnn stack): the output
  of each representation block (``block1``…, regular fields), then the fields of
  ``net.layers(x)``: ``invariant`` (group- and spatially pooled), ``reduced``, ``logits``
  (and, on request, ``invariant_map`` and ``equivariant``);
- **plain CNNs** (AlexNet or any module of ``Conv``/``Linear`` layers): each convolution or
  linear layer, read after its activation when one follows (``conv1``…, ``fc1``…), the last
  linear layer as ``logits``;
- any module, with ``layers`` given as module paths (``{"name": "features.4"}``).

``pixels`` (the input itself) is added first unless ``include_input=False``. Features come back
as detached float32 CPU tensors in their original shape (batch, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from glassbox import probe
from glassbox.errors import AnalysisInputError, AnalysisTypeError
from glassbox.probe import LayerCapture, as_tensor, model_device
from glassbox.runtime.devices import full_precision

INPUT = "pixels"
GLASSBOX_FIELDS = ("invariant_map", "invariant", "equivariant", "reduced", "logits")
GLASSBOX_DEFAULT_FIELDS = ("invariant", "reduced", "logits")

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
)
_ACTIVATIONS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.PReLU,
)

LayerSpec = Sequence[str] | Mapping[str, str] | None


def is_glassbox(model: nn.Module) -> bool:
    """Whether ``model`` follows the glass-box contract (``layers(x)`` + ``representation``)."""
    return callable(getattr(model, "layers", None)) and isinstance(
        getattr(model, "representation", None), nn.Module
    )


def _glassbox_blocks(model: nn.Module) -> dict[str, str]:
    return {name: f"representation.{name}" for name, _ in model.representation.named_children()}


def auto_layers(model: nn.Module) -> dict[str, str]:
    """Readable layer names → module paths for a plain CNN.

    Walks the leaf modules in registration order (the execution order of ``nn.Sequential``
    models such as AlexNet). Each Conv/Linear layer is read after the normalisation and
    activation that directly follow it; convolutions are named ``conv1``…, linear layers
    ``fc1``…, and the last linear layer ``logits``.
    """
    leaves: list[tuple[str, nn.Module]] = []
    weighted: list[str] = []  # a Conv/Linear is a leaf even with children (parametrizations)
    for n, m in model.named_modules():
        if not n or any(n.startswith(w + ".") for w in weighted):
            continue
        if isinstance(m, _WEIGHTED):
            weighted.append(n)
            leaves.append((n, m))
        elif not any(True for _ in m.children()):
            leaves.append((n, m))
    taps: list[tuple[str, str]] = []
    n_conv = n_fc = 0
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, _WEIGHTED):
            continue
        tap = name
        for next_name, nxt in leaves[i + 1 :]:
            if isinstance(nxt, _NORMS):
                tap = next_name
                continue
            if isinstance(nxt, _ACTIVATIONS):
                tap = next_name
            break
        if isinstance(module, nn.Linear):
            n_fc += 1
            taps.append((f"fc{n_fc}", tap))
        else:
            n_conv += 1
            taps.append((f"conv{n_conv}", tap))
    if taps and isinstance(dict(leaves)[taps[-1][1]], nn.Linear):
        taps[-1] = ("logits", taps[-1][1])
    return dict(taps)


def available_layers(model: nn.Module) -> list[str]:
    """Every layer name :func:`collect_features` accepts for ``model`` (besides module paths)."""
    if is_glassbox(model):
        return [*_glassbox_blocks(model), *GLASSBOX_FIELDS]
    return list(auto_layers(model))


def default_layers(model: nn.Module) -> list[str]:
    """The layers reported by default: glass-box blocks + invariant/reduced/logits, or every
    conv/linear layer of a plain CNN."""
    if is_glassbox(model):
        return [*_glassbox_blocks(model), *GLASSBOX_DEFAULT_FIELDS]
    names = list(auto_layers(model))
    if not names:
        raise AnalysisInputError(
            f"found no Conv/Linear layers in {type(model).__name__} to read features from; pass layers= "
            "as {'name': 'module.path'} (see model.named_modules())"
        )
    return names


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> dict[str, str]:
    """Map display names to where they are read: a module path (hooked) or ``"@field"`` (a field
    of ``net.layers(x)`` for glass-box nets)."""
    modules = set(probe.layer_names(model, output=False))
    known: dict[str, str] = {}
    if is_glassbox(model):
        known.update(_glassbox_blocks(model))
        known.update({f: "@" + f for f in GLASSBOX_FIELDS})
        known.update({"@" + f: "@" + f for f in GLASSBOX_FIELDS})  # already resolved
    else:
        known.update(auto_layers(model))
    if layers is None:
        layers = default_layers(model)
    if isinstance(layers, str):
        raise AnalysisTypeError(
            f"layers must be a list of names or a {{name: module path}} dict, got the string {layers!r}"
        )
    pairs = layers.items() if isinstance(layers, Mapping) else ((n, n) for n in layers)
    resolved: dict[str, str] = {}
    for display, where in pairs:
        if display == INPUT:
            raise AnalysisInputError(
                f"{INPUT!r} is the input itself and is added by include_input=True; do not list it"
            )
        if where in known:
            resolved[display] = known[where]
        elif where in modules:
            resolved[display] = where
        else:
            names = probe.layer_names(model, output=False)
            aliases = [k for k in known if not k.startswith("@")]
            raise AnalysisInputError(
                f"unknown layer {where!r} of {type(model).__name__}; valid names (named_modules()): "
                f"{', '.join(names) or '(none)'}; aliases: {', '.join(aliases) or '(none)'}"
            )
    if not resolved:
        raise AnalysisInputError(
            "layers is empty: name at least one layer (or pass None for the defaults)"
        )
    return resolved


def _to_cpu_copy(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float32, copy=True)


@full_precision()  # exact arithmetic even inside a 16-mixed autocast region
@torch.no_grad()
def collect_features(
    model: nn.Module,
    x: Tensor,
    layers: LayerSpec = None,
    *,
    include_input: bool = True,
    eval_mode: bool = True,
) -> dict[str, Tensor]:
    """Features of one batch ``x`` at each layer: ``{name: (B, ...) float32 CPU tensor}``.

    Args:
        model: any ``nn.Module`` (glass-box nets and plain CNNs get readable default names).
        x: input batch; moved to the model's device.
        layers: ``None`` (defaults, see :func:`default_layers`), a list of names from
            :func:`available_layers` or module paths, or ``{display name: name or path}``.
        include_input: put the input itself first, as ``"pixels"``.
        eval_mode: run the model in eval mode (restored afterwards).
    """
    if not isinstance(x, Tensor):
        raise AnalysisTypeError(f"x must be a tensor batch, got {type(x).__name__}")
    resolved = resolve_layers(model, layers)
    captured: dict[str, Tensor] = {}

    def keep(path: str, _module: nn.Module, output: Any) -> None:
        # a copy: an in-place activation that follows would otherwise overwrite the capture
        captured[path] = _to_cpu_copy(as_tensor(output))

    result: dict[str, Tensor] = {}
    if include_input:
        result[INPUT] = _to_cpu_copy(x)  # before the forward: a model may modify its input in place
    x = x.to(model_device(model))
    hooked = [p for p in dict.fromkeys(resolved.values()) if not p.startswith("@")]
    with LayerCapture(model, hooked, on_output=keep), probe.eval_mode(model, eval_mode):
        if any(p.startswith("@") for p in resolved.values()):
            out = model.layers(x)
        else:
            model(x)
    for display, path in resolved.items():
        if path.startswith("@"):
            result[display] = _to_cpu_copy(as_tensor(getattr(out, path[1:])))
        elif path in captured:
            result[display] = captured[path]
        else:
            raise AnalysisInputError(
                f"layer {display!r} ({path}) was not run by the forward pass of {type(model).__name__}"
            )
    return result


def iter_batches(
    data: Dataset | Iterable | tuple[Tensor, Tensor],
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) batches from a map-style dataset of ``(image, label)`` items, a pair of tensors
    ``(X, Y)``, or any iterable of ``(x, y)`` batches (a DataLoader).

    ``max_samples`` keeps a seeded random subset of a dataset or tensor pair, or the first
    ``max_samples`` samples of an iterable.
    """
    if batch_size < 1:
        raise AnalysisInputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        xs, ys = data
        if xs.shape[0] != ys.shape[0]:
            raise AnalysisInputError(
                f"X and Y have different lengths: {xs.shape[0]} and {ys.shape[0]}"
            )
        idx = _subset_indices(xs.shape[0], max_samples, seed)
        for start in range(0, len(idx), batch_size):
            sel = idx[start : start + batch_size]
            yield xs[sel], ys[sel]
        return
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        idx = _subset_indices(len(data), max_samples, seed)
        loader = DataLoader(Subset(data, idx.tolist()), batch_size=batch_size, shuffle=False)
        yield from ((x, torch.as_tensor(y)) for x, y in loader)
        return
    seen = 0
    for batch in data:
        x, y = batch[0], torch.as_tensor(batch[1])
        if max_samples is not None and seen + x.shape[0] > max_samples:
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        if x.shape[0]:
            yield x, y
        seen += x.shape[0]
        if max_samples is not None and seen >= max_samples:
            return


def _subset_indices(n: int, max_samples: int | None, seed: int) -> Tensor:
    if max_samples is None or max_samples >= n:
        return torch.arange(n)
    if max_samples < 1:
        raise AnalysisInputError(f"max_samples must be >= 1 or None, got {max_samples}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_samples]
    return perm.sort().values


def collect_dataset_features(
    model: nn.Module,
    data: Dataset | Iterable | tuple[Tensor, Tensor],
    layers: LayerSpec = None,
    *,
    include_input: bool = True,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
    flatten: bool = True,
) -> tuple[dict[str, Tensor], Tensor]:
    """Features of a whole dataset at each layer, and its labels.

    Returns ``({name: (N, D) float32 CPU tensor}, labels (N,))`` (``flatten=False`` keeps the
    layer shapes). Memory is N·ΣD·4 bytes: for wide layers use :func:`layer_groups` and call
    this once per group.
    """
    feats: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    for x, y in iter_batches(data, batch_size, max_samples, seed):
        out = collect_features(model, x, layers, include_input=include_input)
        for name, f in out.items():
            feats.setdefault(name, []).append(f.reshape(f.shape[0], -1) if flatten else f)
        labels.append(y.reshape(-1).long().cpu())
    if not labels:
        raise AnalysisInputError(
            "the data yielded no samples; check the dataset split and max_samples"
        )
    return {name: torch.cat(parts) for name, parts in feats.items()}, torch.cat(labels)


def dataset_inputs(
    data: Dataset | Iterable | tuple[Tensor, Tensor],
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The inputs themselves as (N, D) float32 features, and the labels — the ``pixels``
    representation without running a model (same subset as :func:`collect_dataset_features`)."""
    xs, ys = [], []
    for x, y in iter_batches(data, batch_size, max_samples, seed):
        xs.append(x.reshape(x.shape[0], -1).float().cpu())
        ys.append(y.reshape(-1).long().cpu())
    if not xs:
        raise AnalysisInputError(
            "the data yielded no samples; check the dataset split and max_samples"
        )
    return torch.cat(xs), torch.cat(ys)


def layer_dims(
    model: nn.Module, example: Tensor, layers: LayerSpec = None, include_input: bool = True
) -> dict[str, int]:
    """Flattened feature size of each layer, from one forward pass of ``example`` (a batch)."""
    out = collect_features(model, example[:2], layers, include_input=include_input)
    return {name: math.prod(f.shape[1:]) for name, f in out.items()}


def layer_groups(
    dims: Mapping[str, int], num_samples: int, budget_mb: float = 512.0
) -> list[list[str]]:
    """Split layers into consecutive groups whose float32 features for ``num_samples`` samples
    fit in ``budget_mb`` (a layer larger than the budget gets a group of its own)."""
    groups: list[list[str]] = []
    used = 0.0
    for name, d in dims.items():
        size = num_samples * d * 4 / 2**20
        if groups and used + size <= budget_mb:
            groups[-1].append(name)
            used += size
        else:
            groups.append([name])
            used = size
    return groups
