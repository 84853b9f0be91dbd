"""Average Drop / Average Increase of saliency maps, for RI and the grad-cam package's CAMs.

With e an image, c its predicted class, Y_c the softmax probability of c and e′ the image
keeping only the ``keep`` (default 20%) most important pixels of e (the rest set to
``fill``):

    AD = 100 · mean max(0, Y_c(e) − Y_c(e′)) / Y_c(e)      (lower is better)
    AI = 100 · mean 1[Y_c(e) < Y_c(e′)]                     (higher is better)

Grad-CAM, Grad-CAM++ and Score-CAM come from the ``grad-cam`` package, used as they are on
the same model, images and layer (the ψ layer) as the representative interpretations.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError
from glassbox.interpret.faithfulness import keep_mask
from glassbox.interpret.representative import Interpretation, RepresentativeInterpreter
from glassbox.probe import preserve_modes

__all__ = [
    "CAM_METHODS",
    "average_drop_increase",
    "cam_saliency",
    "compare_saliency_methods",
    "keep_most_important",
    "ri_saliency",
]

CAM_METHODS = ("gradcam", "gradcam++", "scorecam")


def keep_most_important(
    images: Tensor,
    saliency: Tensor,
    keep: float = 0.2,
    fill: float | Tensor = 0.0,
    seed: int = 0,
) -> Tensor:
    """e′: keep the ``keep`` fraction of pixels with the highest saliency (all channels), set
    the others to ``fill`` (a scalar or a per-channel (C,) tensor in the model's input space).
    Ties among equal saliencies are broken in a seeded random order (not memory order)."""
    if not 0.0 < keep <= 1.0:
        raise AnalysisInputError(f"keep must be in (0, 1], got {keep}")
    n, c, h, w = images.shape
    if tuple(saliency.shape) != (n, h, w):
        raise AnalysisInputError(
            f"saliency must have shape {(n, h, w)} to match the images, got {tuple(saliency.shape)}"
        )
    mask = keep_mask(saliency.to(images.device), keep, seed=seed)[:, None]
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    fill = fill.reshape(1, -1, 1, 1) if fill.dim() == 1 else fill
    return torch.where(mask, images, fill)


@torch.no_grad()
def _probabilities(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    return torch.cat(
        [model(images[i : i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)]
    )


@torch.no_grad()
def average_drop_increase(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | None = None,
    keep: float = 0.2,
    fill: float | Tensor = 0.0,
    batch_size: int = 256,
) -> dict[str, float]:
    """AD and AI (percent) of ``saliency`` (N, H, W) for ``model`` on ``images``.

    ``classes`` defaults to the model's predictions on the unmasked images.
    """
    probs = _probabilities(model, images, batch_size)
    if classes is None:
        classes = probs.argmax(1)
    classes = torch.as_tensor(classes, device=probs.device).long()
    masked = keep_most_important(images, saliency, keep=keep, fill=fill)
    probs_masked = _probabilities(model, masked, batch_size)
    y = probs.gather(1, classes[:, None])[:, 0]
    y_masked = probs_masked.gather(1, classes[:, None])[:, 0]
    drop = (y - y_masked).clamp_min(0) / y.clamp_min(1e-12)
    return {"AD": 100.0 * float(drop.mean()), "AI": 100.0 * float((y < y_masked).float().mean())}


def cam_saliency(
    model: nn.Module,
    target_layer: nn.Module,
    images: Tensor,
    classes: Tensor,
    method: str = "gradcam",
    batch_size: int = 64,
    scorecam_batch_size: int = 128,
) -> Tensor:
    """Saliency maps (N, H, W) in [0, 1] from the ``grad-cam`` package (used as it is).

    The package backpropagates into the parameters; their ``.grad`` is restored afterwards,
    so calling this mid-training leaves the optimiser's state untouched.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cams = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
    if method not in cams:
        raise AnalysisInputError(f"unknown CAM method {method!r}; choose from {', '.join(cams)}")
    saved_grads = [(p, p.grad) for p in model.parameters()]
    maps = []
    try:  # the package calls model.eval(): every module's own mode is restored
        with (
            preserve_modes(model),
            torch.enable_grad(),
            cams[method](model=model, target_layers=[target_layer]) as cam,
        ):
            if method == "scorecam":
                cam.batch_size = scorecam_batch_size
            for start in range(0, len(images), batch_size):
                # An input that requires grad: the target layer's output then requires grad
                # even where the model has none before it (e2cnn's eval-mode cached filters).
                x = images[start : start + batch_size].detach().clone().requires_grad_(True)
                targets = [
                    ClassifierOutputTarget(int(c)) for c in classes[start : start + batch_size]
                ]
                # Score-CAM prints a progress bar per image; keep logs readable.
                with contextlib.redirect_stderr(io.StringIO()):
                    maps.append(np.asarray(cam(input_tensor=x, targets=targets)))
    finally:
        for p, g in saved_grads:
            p.grad = g
    return torch.from_numpy(np.concatenate(maps)).float()


def ri_saliency(
    interpreter: RepresentativeInterpreter, interpretations: list[Interpretation], images: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """RI heat maps (N, H, W) of ``images``: each image under the interpretation of its
    predicted class that covers it, else the one whose seed is nearest in Dist.

    Returns ``(maps, assigned interpretation index, covered flag)``; an image whose class has
    no interpretation gets a uniform map (index -1).
    """
    feats = interpreter.features_of(images)
    assigned, covered = interpreter.assign(interpretations, images)
    maps = torch.ones(len(images), *images.shape[-2:])
    for i, it in enumerate(interpretations):  # a loop over interpretations, batched over images
        rows = torch.nonzero(assigned == i).squeeze(1)
        if len(rows):
            maps[rows] = interpreter.heatmaps(it, features=feats[rows.to(feats.device)]).cpu()
    return maps, assigned, covered


def compare_saliency_methods(
    interpreter: RepresentativeInterpreter,
    interpretations: list[Interpretation],
    images: Tensor,
    methods: tuple[str, ...] | list[str] = CAM_METHODS,
    keep: float = 0.2,
    fill: float | Tensor = 0.0,
) -> dict[str, dict[str, float]]:
    """AD/AI (percent) of RI and of the grad-cam package's ``methods`` on the same model,
    images (held out from the reference set) and layer (the ψ layer).

    Returns ``{"RI": {"AD", "AI", "covered"}, "gradcam": {"AD", "AI"}, ...}``.
    """
    model = interpreter.split.model
    images = images.to(interpreter.features.device)
    classes = interpreter.predict(images)
    ri_maps, _, covered = ri_saliency(interpreter, interpretations, images)
    table = {"RI": average_drop_increase(model, images, ri_maps, classes, keep=keep, fill=fill)}
    table["RI"]["covered"] = 100.0 * float(covered.float().mean())
    for m in methods:
        maps = cam_saliency(model, interpreter.split.psi_module, images, classes, method=m)
        table[m] = average_drop_increase(model, images, maps, classes, keep=keep, fill=fill)
    return table
