"""Split a network F = G ∘ ψ at a named layer and check that G is piecewise linear.

Supported models are an ``nn.Sequential`` or any model with a ``sequential()`` method that
returns one (both glass-box nets have it). Nested plain ``nn.Sequential`` containers are
flattened into their leaves, named by their dotted path (``features.11``,
``classifier.4``: the model's ``named_modules()`` names); every other module is a leaf (e.g.
the glass-box ``group_pool`` block, which runs the e2cnn layers up to the group pooling).
A ``named_modules()`` name of the model also names the leaf that is that same module. ψ runs the leaves up to and including the named one, G the
rest. G must be piecewise linear so that, inside one activation pattern, it is exactly
affine: that is what makes the extracted decision boundaries exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError, AnalysisTypeError
from glassbox.probe import as_tensor, layer_names

__all__ = [
    "NotPiecewiseLinearError",
    "SplitModel",
    "UnknownLayerError",
    "assert_piecewise_linear",
    "default_layer",
    "named_leaves",
    "register_piecewise_linear",
    "run_head",
    "split_model",
]


class NotPiecewiseLinearError(AnalysisTypeError):
    """G contains a module whose output is not a piecewise-linear function of its input."""


class UnknownLayerError(AnalysisInputError):
    """The layer name is not one of the model's leaves (the message lists the valid ones)."""


# Types whose forward is piecewise linear (affine maps, ReLU-like kinks, max/avg selections,
# reshapes). BatchNorm and Dropout only in eval mode, checked by `assert_piecewise_linear`.
_PIECEWISE_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardtanh,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ZeroPad2d,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
)
_EVAL_ONLY: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
)
_REGISTERED: list[type[nn.Module]] = []


def register_piecewise_linear(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare a custom module type piecewise linear (usable as a class decorator).

    Alternatively give the class (or instance) an attribute ``piecewise_linear = True``.
    Only do this when its forward is an affine map or a composition of piecewise-linear
    operations: the exactness of every boundary rests on it.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise AnalysisTypeError(
            f"register_piecewise_linear expects an nn.Module subclass, got {cls!r}"
        )
    if cls not in _REGISTERED:
        _REGISTERED.append(cls)
    return cls


def _is_plain_sequential(module: nn.Module) -> bool:
    # Subclasses that override forward may not simply chain their children.
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def named_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's plain-``nn.Sequential`` leaves in execution order, with dotted names."""
    return _leaves_of(_as_sequential(model))


def _leaves_of(seq: nn.Sequential) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if _is_plain_sequential(child):
                visit(full, child)
            else:
                out.append((full, child))

    visit("", seq)
    return out


def _as_sequential(model: nn.Module) -> nn.Sequential:
    if _is_plain_sequential(model):
        return model
    make = getattr(model, "sequential", None)
    if callable(make):
        seq = make()
        if _is_plain_sequential(seq):
            return seq
        raise AnalysisTypeError(
            f"{type(model).__name__}.sequential() returned {type(seq).__name__}, not an nn.Sequential; "
            "return an nn.Sequential whose forward equals the model's forward"
        )
    raise AnalysisTypeError(
        f"cannot split a {type(model).__name__}: pass an nn.Sequential or a model with a "
        "sequential() method returning an nn.Sequential equal to its forward"
    )


def _leaf_is_piecewise_linear(module: nn.Module) -> bool:
    if getattr(module, "piecewise_linear", False) is True:
        return True
    if isinstance(module, (*_PIECEWISE_LINEAR, *_REGISTERED)):
        return True
    # A plain container of piecewise-linear modules is piecewise linear.
    return _is_plain_sequential(module) and all(
        _leaf_is_piecewise_linear(m) for m in module.children()
    )


def _head_leaves(head: nn.Module, names: list[str] | None) -> list[tuple[str, nn.Module]]:
    if isinstance(head, _Chain):
        return list(zip(head.names, head.leaves))
    if _is_plain_sequential(head):
        return named_leaves(head)
    return [(names[0] if names else type(head).__name__, head)]


def assert_piecewise_linear(
    head: nn.Module, require_eval: bool = True, names: list[str] | None = None
) -> None:
    """Raise :class:`NotPiecewiseLinearError` naming the first module of ``head`` that is not
    piecewise linear (or, with ``require_eval``, a BatchNorm/Dropout still in training mode)."""
    for name, module in _head_leaves(head, names):
        if not _leaf_is_piecewise_linear(module):
            raise NotPiecewiseLinearError(
                f"module {name!r} ({type(module).__name__}) after the split layer is not piecewise linear, "
                "so its decision boundaries would not be exact; split at a later layer, replace it "
                "(Linear/ReLU/LeakyReLU/pooling/Flatten/eval BatchNorm/Dropout are supported), or, if it "
                "is affine, mark it with glassbox.interpret.register_piecewise_linear"
            )
        if require_eval:
            for sub_name, sub in module.named_modules():
                if isinstance(sub, _EVAL_ONLY) and sub.training:
                    where = f"{name}.{sub_name}" if sub_name else name
                    raise NotPiecewiseLinearError(
                        f"module {where!r} ({type(sub).__name__}) is in training mode, where it is not a "
                        "fixed piecewise-linear map; call model.eval() before extracting boundaries"
                    )


def _has_inplace(module: nn.Module) -> bool:
    return any(getattr(m, "inplace", False) is True for m in module.modules())


def run_head(head: nn.Module, x: Tensor) -> Tensor:
    """``head(x)`` without letting an in-place leaf (``ReLU(inplace=True)`` behind a view such
    as Flatten or Identity) overwrite the caller's tensor ``x``."""
    if not isinstance(head, _Chain) and _has_inplace(head):
        x = x.clone()
    return head(x)


class _Chain(nn.Module):
    """Run leaves in order (a flat view of nested Sequentials that shares their modules)."""

    def __init__(self, names: list[str], modules: list[nn.Module]) -> None:
        super().__init__()
        self.names = names
        self.leaves = nn.ModuleList(modules)
        # Mirror the leaves' mode without touching them (a new Module starts in training mode).
        self.training = self.leaves.training = any(m.training for m in modules)
        # An in-place leaf (ReLU(inplace=True)) behind views (Flatten, Identity, eval Dropout)
        # would overwrite the caller's tensor, e.g. the cached reference features.
        self._clone_input = any(_has_inplace(m) for m in modules)

    def forward(self, x: Tensor) -> Tensor:
        if self._clone_input:
            x = x.clone()
        for m in self.leaves:
            x = m(x)
        return x

    def __repr__(self) -> str:
        return f"_Chain({', '.join(self.names)})"


@dataclass
class SplitModel:
    """F = G ∘ ψ split at ``layer``.

    Attributes:
        psi: the leaves up to and including ``layer``; ``psi(x)`` are the features.
        head: G, the remaining (piecewise-linear) leaves.
        layer: the split layer's dotted name.
        psi_names / head_names: the leaves' dotted names.
        psi_module: the module named ``layer`` (its output is ψ(x); e.g. the CAM target layer).
    """

    psi: nn.Module
    head: nn.Module
    layer: str
    psi_names: list[str]
    head_names: list[str]
    psi_module: nn.Module

    @property
    def model(self) -> nn.Module:
        """F = G ∘ ψ as one module running the same leaves (hooks on ``psi_module`` fire)."""
        full = nn.Sequential(self.psi, self.head)
        full.training = self.psi.training or self.head.training
        return full

    def check_head(self) -> None:
        """Raise unless G is piecewise linear and in eval mode."""
        assert_piecewise_linear(self.head, require_eval=True)

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """ψ(images) in batches, without grad; images must be (B, C, H, W)."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise AnalysisInputError(f"images must be a (B, C, H, W) tensor, got {shape}")
        outs = []
        for start in range(0, images.shape[0], batch_size):
            try:
                outs.append(as_tensor(self.psi(images[start : start + batch_size])))
            except RuntimeError as err:
                raise AnalysisInputError(
                    f"the model's layers up to {self.layer!r} failed on images of shape "
                    f"{tuple(images.shape)}: {err}. Pass images with the channel count and size the "
                    "model was built for"
                ) from err
        return torch.cat(outs)


def split_model(model: nn.Module, layer: str) -> SplitModel:
    """Split ``model`` after the leaf (or nested Sequential) named ``layer``.

    Raises:
        UnknownLayerError: unknown layer name (the message lists the valid names).
        NotPiecewiseLinearError: G contains a module that is not piecewise linear.
    """
    # One sequential() call: it may build fresh adapter modules (the glass-box `group_pool`), and
    # psi_module (the CAM hook target) must be the very module psi runs.
    seq = _as_sequential(model)
    leaves = _leaves_of(seq)
    names = [n for n, _ in leaves]
    containers = {n.rsplit(".", 1)[0] for n in names if "." in n}
    # Also accept prefixes of nested containers ("features" for AlexNet's whole conv stack).
    prefixes = set()
    for c in containers:
        parts = c.split(".")
        prefixes.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    if layer not in names and layer not in prefixes:
        # a named_modules() name of the model that is one of the leaves (same module object)
        by_id = {id(m): n for n, m in leaves}
        if layer in layer_names(model, output=False):
            layer = by_id.get(id(model.get_submodule(layer)), layer)
    if layer in names:
        cut = names.index(layer) + 1
    elif layer in prefixes:
        cut = max(i for i, n in enumerate(names) if n.startswith(layer + ".")) + 1
    else:
        valid = names + sorted(prefixes - set(names))
        raise UnknownLayerError(
            f"unknown layer {layer!r} to split {type(model).__name__} at; valid layer names: "
            f"{', '.join(valid)}"
        )
    if cut == len(names):
        raise UnknownLayerError(
            f"layer {layer!r} is the model's last layer, so nothing is left for the head G; "
            f"choose an earlier layer among: {', '.join(names[:-1])}"
        )
    psi_module = seq.get_submodule(layer)
    psi = _Chain(names[:cut], [m for _, m in leaves[:cut]])
    head = _Chain(names[cut:], [m for _, m in leaves[cut:]])
    assert_piecewise_linear(head, require_eval=False)
    return SplitModel(psi, head, layer, names[:cut], names[cut:], psi_module)


def default_layer(model: nn.Module, is_opaque: Callable[[nn.Module], bool] | None = None) -> str:
    """The natural ψ layer: the last convolution (or last non-piecewise-linear leaf, e.g. the
    glass-box ``group_pool`` block), extended through a directly following ReLU/LeakyReLU.

    For AlexNet this is the ReLU after the fifth convolution (a conv feature map); for the
    glass-box net it is ``group_pool`` (invariant spatial maps before pooling).
    """
    leaves = named_leaves(model)
    opaque = is_opaque or (lambda m: not _leaf_is_piecewise_linear(m))
    idx = None
    for i, (_, m) in enumerate(leaves):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or opaque(m):
            idx = i
    if idx is None:
        raise UnknownLayerError(
            "no convolution or feature block found to split at; pass layer= explicitly, one of: "
            + ", ".join(n for n, _ in leaves[:-1])
        )
    while idx + 1 < len(leaves) - 1 and isinstance(
        leaves[idx + 1][1], (nn.ReLU, nn.LeakyReLU, nn.ReLU6)
    ):
        idx += 1
    return leaves[idx][0]
