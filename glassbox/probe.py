"""One way to name the layers of any ``nn.Module`` and to capture their outputs.

Every analysis (layerwise equivariance, separability and probes, representative
interpretations, the pose readout) reads layers through this module, so a layer has the same
name everywhere and a model is put in eval mode and back the same way:

* **names** are ``model.named_modules()`` names, plus :data:`OUTPUT` for what the model
  returns (:func:`resolve_layer_names`, :func:`get_layer`); an unknown name raises one
  :class:`LayerSelectionError` that lists the valid ones;
* **capture** is a forward hook per layer (:class:`LayerCapture`); a GeometricTensor output is
  unwrapped to its tensor (:func:`as_tensor`), and a layer that runs twice in one forward pass
  or returns something other than a tensor is an error;
* **eval mode** (:func:`eval_mode`) sets every module to eval and restores each module's own
  flag afterwards (``model.train(flag)`` would overwrite a sub-module a caller froze in eval).

No Lightning here: a notebook can call it on any module.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError, AnalysisTypeError

OUTPUT = "output"

__all__ = [
    "OUTPUT",
    "LayerCapture",
    "LayerOutputError",
    "LayerSelectionError",
    "as_tensor",
    "eval_mode",
    "get_layer",
    "is_geometric_tensor",
    "layer_names",
    "model_device",
    "preserve_modes",
    "resolve_layer_names",
    "run_model",
]


class LayerSelectionError(AnalysisInputError):
    """A requested layer does not exist, or does not run exactly once per forward pass."""


class LayerOutputError(AnalysisTypeError):
    """A captured layer (or the model) returned something other than a tensor."""


# --------------------------------------------------------------------------- names
def layer_names(model: nn.Module, output: bool = True) -> list[str]:
    """Every name a layer can be given: ``named_modules()`` names, then :data:`OUTPUT`."""
    return [n for n, _ in model.named_modules() if n] + ([OUTPUT] if output else [])


def resolve_layer_names(
    model: nn.Module, layers: str | Sequence[str], output: bool = True
) -> list[str]:
    """``layers`` checked against :func:`layer_names` (de-duplicated, order kept).

    Raises:
        LayerSelectionError: an unknown name; the message lists the valid names.
    """
    if isinstance(layers, str):
        layers = [layers]
    valid = layer_names(model, output)
    known = set(valid)
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise LayerSelectionError(
            f"unknown layer name(s) {unknown} for {type(model).__name__}; valid names are: "
            f"{', '.join(valid) or '(none)'}"
        )
    return list(dict.fromkeys(layers))


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` in ``model.named_modules()`` (:class:`LayerSelectionError`
    listing the valid names otherwise)."""
    resolve_layer_names(model, [name], output=False)
    return model.get_submodule(name)


# --------------------------------------------------------------------------- tensors
def is_geometric_tensor(x: Any) -> bool:
    """True for an e2cnn ``GeometricTensor`` (without importing e2cnn when it is unused)."""
    enn = sys.modules.get("e2cnn.nn")
    return enn is not None and isinstance(x, enn.GeometricTensor)


def as_tensor(out: Any, what: str = "a layer output") -> Tensor:
    """The tensor of a layer output: a Tensor, a GeometricTensor's ``.tensor``, or the first
    element of a tuple/list of tensors."""
    if isinstance(out, Tensor):
        return out
    if is_geometric_tensor(out):
        return out.tensor
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise LayerOutputError(f"cannot read {what} of type {type(out).__name__}: it is not a tensor")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a stateless model."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def run_model(model: nn.Module, x: Tensor):
    """``model(x)``; an e2cnn module (one with ``in_type``) gets ``x`` as a GeometricTensor."""
    in_type = getattr(model, "in_type", None)
    if in_type is not None and type(model).__module__.startswith("e2cnn."):
        import e2cnn.nn as enn

        return model(enn.GeometricTensor(x, in_type))
    return model(x)


# --------------------------------------------------------------------------- modes
# ``eval_mode`` is the one way every analysis switches a model to eval and back.
@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[None]:
    """Restore every module's own training flag on exit, whatever the body does to them.

    Flags are restored with ``module.train(flag)``, parents before children, so modules that
    override ``train`` (e2cnn's ``R2Conv`` drops its eval-mode filter cache) see the change."""
    flags = [(m, m.training) for m in model.modules()]  # pre-order: parents before children
    try:
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.train(flag)


@contextlib.contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Eval mode for the body (batch statistics would otherwise mix the images of a batch and
    update the running averages); every module's own flag is restored afterwards."""
    if not enabled:
        yield
        return
    with preserve_modes(model):
        model.eval()
        yield


# --------------------------------------------------------------------------- capture
class LayerCapture:
    """Forward hooks on named layers, in one of two modes.

    With ``on_output`` each output is handed over the moment the layer returns — before any
    later in-place op (``nn.ReLU(inplace=True)`` after a conv, as in AlexNet) can overwrite
    it — and is not kept, so a forward holds one layer's features at a time. Without it,
    outputs are stored in :attr:`outputs` (copied if ``clone``). Either way a layer that runs
    twice, or returns a non-tensor, raises. Use as a context manager (hooks removed on exit).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        *,
        clone: bool = False,
        on_output: Callable[[str, nn.Module, Any], None] | None = None,
    ) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules or not n]
        if missing:
            resolve_layer_names(model, missing, output=False)  # raises with the valid names
        self.clone = clone
        self.on_output = on_output
        self.outputs: dict[str, Any] = {}
        self.seen: list[str] = []  # execution order
        self.modules = {n: modules[n] for n in dict.fromkeys(names)}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.seen:
                raise LayerSelectionError(
                    f"layer {name!r} ({type(module).__name__}) ran more than once in one forward "
                    "pass (a shared module), so its output is ambiguous; choose a layer that runs once"
                )
            if not (torch.is_tensor(output) or is_geometric_tensor(output)):
                raise LayerOutputError(
                    f"layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, not a "
                    "tensor; choose a layer that returns a Tensor or GeometricTensor (e.g. one of its "
                    "children)"
                )
            self.seen.append(name)
            if self.on_output is not None:
                self.on_output(name, module, output)
                return
            if self.clone:
                tensor = as_tensor(output).clone()
                output = (
                    type(output)(tensor, output.type) if is_geometric_tensor(output) else tensor
                )
            self.outputs[name] = output

        return hook

    def clear(self) -> None:
        self.outputs = {}
        self.seen = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def ordered(self, names: Sequence[str] | None = None) -> list[str]:
        """The captured layers in execution order; :class:`LayerSelectionError` if one of
        ``names`` (default: every hooked layer) did not run."""
        names = list(self.modules) if names is None else names
        missing = [n for n in names if n not in self.seen]
        if missing:
            raise LayerSelectionError(
                f"layer(s) {missing} did not run in the model's forward pass; choose layers that "
                "forward() uses"
            )
        return list(self.seen)


def model_output(out: Any) -> Any:
    """The model's return value if it is a tensor (or GeometricTensor), else one clear error."""
    if torch.is_tensor(out) or is_geometric_tensor(out):
        return out
    raise LayerOutputError(
        f"the model returns {type(out).__name__}, not a tensor, so layer {OUTPUT!r} cannot be read; "
        "leave 'output' out of layers or wrap the model so forward() returns a tensor"
    )
