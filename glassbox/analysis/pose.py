"""Equivariant readout: the orientation of an input, read off the glass-box equivariant part.

``net.layers(x).equivariant`` (B, C, |G|) holds the final regular fields, spatially averaged.
Rotating the input by 2π·k/N (N the rotation order of the group) rolls the rotation axis of
every field by +k: ``eq(rot(x, k))[..., j] = eq(x)[..., j - k]`` (checked against e2cnn for C_N
and D_N; for D_N the axis is (flip, rotation) and each half rolls the same way).

:class:`PoseReadout` stores a template of the fields of upright training images (one per
class, plus a class-agnostic one) and estimates the orientation of a new input as the roll of
its template that correlates best with the input's fields. Because the template is fixed and
the class used to pick it comes from the invariant logits, the estimate is exactly
equivariant: rotating the input by 90°·k moves it by exactly k quarter turns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError, AnalysisStateError, AnalysisTypeError
from glassbox.probe import eval_mode, model_device

CLASS_SOURCES = ("predicted", "true", "none")


def rotate90(x: Tensor, k: int) -> Tensor:
    """Rotate images (…, H, W) by k·90° counter-clockwise as displayed (``torch.rot90``)."""
    return torch.rot90(x, k, dims=(-2, -1))


def rotation_order_of(net: nn.Module) -> int:
    """N, the number of rotations in the net's group (C_N: |G|; D_N: |G|/2)."""
    gspace = getattr(net, "gspace", None)
    group = getattr(gspace, "fibergroup", None)
    if group is None:
        raise AnalysisInputError(
            f"{type(net).__name__} has no e2cnn gspace (net.gspace.fibergroup): pass rotation_order explicitly"
        )
    return int(getattr(group, "rotation_order", None) or group.order())


def _rotation_axis(equivariant: Tensor, n_rot: int) -> Tensor:
    """(B, C, |G|) → (B, C·|G|/N, N): every field's rotation axis last."""
    if not isinstance(equivariant, Tensor) or equivariant.ndim != 3:
        shape = (
            tuple(equivariant.shape)
            if isinstance(equivariant, Tensor)
            else type(equivariant).__name__
        )
        raise AnalysisInputError(
            f"equivariant features must be (B, C, |G|) (net.layers(x).equivariant), got {shape}"
        )
    if n_rot < 1 or equivariant.shape[-1] % n_rot:
        raise AnalysisInputError(
            f"the group axis has {equivariant.shape[-1]} entries, not a multiple of the rotation order {n_rot}"
        )
    b = equivariant.shape[0]
    return equivariant.reshape(b, -1, n_rot).double()


def roll_rotation_axis(equivariant: Tensor, k: int, n_rot: int) -> Tensor:
    """The action of a rotation by 2π·k/N on (B, C, |G|) equivariant features."""
    b, c, g = equivariant.shape
    f = equivariant.reshape(b, c, g // n_rot, n_rot)
    return torch.roll(f, k, dims=-1).reshape(b, c, g)


class PoseReadout:
    """Orientation estimate from equivariant features, in steps of 2π/N (0 ≤ step < N).

    Args:
        rotation_order: N (8 for ``Rot2dOnR2(8)``, also 8 for ``FlipRot2dOnR2(8)``).
    """

    def __init__(self, rotation_order: int) -> None:
        if not isinstance(rotation_order, int) or rotation_order < 1:
            raise AnalysisInputError(
                f"rotation_order must be a positive int, got {rotation_order!r}"
            )
        self.n = rotation_order
        self.template: Tensor | None = None  # (C', N)
        self.class_templates: Tensor | None = None  # (K, C', N)
        # index[s, j] = (j - s) mod N: template[..., index[s]] is the template rolled by s
        ar = torch.arange(rotation_order)
        self._index = (ar[None, :] - ar[:, None]) % rotation_order

    def _prepare(self, equivariant: Tensor) -> Tensor:
        f = _rotation_axis(equivariant, self.n)
        # the mean over the rotation axis is invariant: it adds the same to every roll's score
        return f - f.mean(-1, keepdim=True)

    def fit(self, equivariant: Tensor, labels: Tensor | None = None) -> PoseReadout:
        """Templates from upright examples: the mean fields overall and per class."""
        f = self._prepare(equivariant)
        if f.shape[0] == 0:
            raise AnalysisInputError("fit needs at least one example")
        self.template = f.mean(0)
        self.class_templates = None
        if labels is not None:
            y = torch.as_tensor(labels, device=f.device).long().reshape(-1)
            if y.shape[0] != f.shape[0] or (y < 0).any():
                raise AnalysisInputError(
                    f"labels must be (B,)=({f.shape[0]},) non-negative class indices"
                )
            k = int(y.max()) + 1
            sums = torch.zeros(k, *f.shape[1:], dtype=f.dtype, device=f.device).index_add_(0, y, f)
            counts = torch.bincount(y, minlength=k).to(f.dtype)
            templates = sums / counts.clamp_min(1)[:, None, None]
            # a class never seen upright falls back to the class-agnostic template
            self.class_templates = torch.where(counts[:, None, None] > 0, templates, self.template)
        return self

    def scores(self, equivariant: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, N): correlation of the input's fields with its template rolled by each step."""
        if self.template is None:
            raise AnalysisStateError(
                "PoseReadout is not fitted: call fit() on upright examples first"
            )
        f = self._prepare(equivariant)
        if labels is None or self.class_templates is None:
            t = self.template.to(f.device).expand(f.shape[0], -1, -1)
        else:
            y = torch.as_tensor(labels).long().reshape(-1).to(self.class_templates.device)
            if y.shape[0] != f.shape[0]:
                raise AnalysisInputError(
                    f"labels must have shape ({f.shape[0]},), got {tuple(y.shape)}"
                )
            y = y.clamp(0, self.class_templates.shape[0] - 1)
            t = self.class_templates[y].to(f.device)
        if t.shape[1:] != f.shape[1:]:
            raise AnalysisInputError(
                f"features have {f.shape[1]} fields but the readout was fitted on {t.shape[1]}"
            )
        rolled = t[..., self._index.to(f.device)]  # (B, C', N_s, N)
        return torch.einsum("bcsj,bcj->bs", rolled, f)

    def predict(self, equivariant: Tensor, labels: Tensor | None = None) -> Tensor:
        """Estimated rotation of each input relative to the templates, in steps of 2π/N."""
        return self.scores(equivariant, labels).argmax(1)


def _layers(net: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    eqs, logits = [], []
    device = model_device(net)
    for start in range(0, x.shape[0], batch_size):
        out = net.layers(x[start : start + batch_size].to(device))
        eqs.append(out.equivariant.detach())
        logits.append(out.logits.detach())
    return torch.cat(eqs), torch.cat(logits)


@torch.no_grad()
def pose_accuracy(
    net: nn.Module,
    fit_images: Tensor,
    fit_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor | None = None,
    *,
    quarter_turns: Sequence[int] = (0, 1, 2, 3),
    class_source: str = "predicted",
    rotation_order: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Orientation-estimation accuracy on test images rotated by k·90°.

    Templates come from the upright ``fit_images``. Each test image is rotated by every k in
    ``quarter_turns`` and its orientation estimated; it is correct when the estimate is exactly
    k quarter turns. The class that picks the template is the net's prediction
    (``predicted``, invariant to the rotation), the true label (``true``, needs
    ``test_labels``) or none (``none``: one class-agnostic template).

    Returns ``accuracy`` (over all k), ``accuracy_k<k>`` per k, and ``consistency``: the
    fraction of images whose estimate moves by exactly k quarter turns relative to the
    unrotated image (1.0 for an exactly equivariant net, whatever the templates).
    """
    if class_source not in CLASS_SOURCES:
        raise AnalysisInputError(
            f"class_source must be one of {', '.join(CLASS_SOURCES)}, got {class_source!r}"
        )
    if class_source == "true" and test_labels is None:
        raise AnalysisInputError("class_source='true' needs test_labels")
    if not callable(getattr(net, "layers", None)):
        raise AnalysisTypeError(
            f"{type(net).__name__} has no layers(x) with an equivariant part; pose needs a glass-box net"
        )
    n = rotation_order if rotation_order is not None else rotation_order_of(net)
    if n % 4:
        raise AnalysisInputError(
            f"rotation order {n} is not a multiple of 4: a 90° rotation is then not a group element, "
            "so the readout cannot be exact; use a group order that is a multiple of 4"
        )
    with eval_mode(net):
        eq_fit, _ = _layers(net, fit_images, batch_size)
        readout = PoseReadout(n).fit(eq_fit, None if class_source == "none" else fit_labels)
        preds = {}
        for k in dict.fromkeys([0, *quarter_turns]):  # k = 0 is the reference for consistency
            eq, logits = _layers(net, rotate90(test_images, k), batch_size)
            labels = {"predicted": logits.argmax(1), "true": test_labels, "none": None}[
                class_source
            ]
            preds[k] = readout.predict(eq, labels).cpu()
    result: dict[str, float] = {}
    correct, consistent = [], []
    for k in dict.fromkeys(quarter_turns):
        p = preds[k]
        expected = (k * n // 4) % n
        ok = (p == expected).double()
        result[f"accuracy_k{k}"] = float(ok.mean())
        correct.append(ok)
        consistent.append(((p - preds[0]) % n == expected).double())
    result["accuracy"] = float(torch.cat(correct).mean())
    result["consistency"] = float(torch.cat(consistent).mean())
    return result
