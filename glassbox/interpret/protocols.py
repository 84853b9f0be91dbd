"""Two protocols for comparing representative interpretations with the CAM baselines
(no Lightning).

* ``reuse`` — the protocol of Lam et al. ("Finding representative interpretations on
  convolutional neural networks", ICCV 2021): every method computes its explanation on the
  seed image x of an interpretation once and **reuses** it on k new images x_new. RI's x_new
  are the k unseen images ranked first under P(x) (covered first, then by Dist); each
  baseline's x_new are x's k nearest unseen images by Euclidean distance in ψ-space, and its
  map of x_new is ReLU(Σ_k α_k(x) ψ_k(x_new)) with the channel weights α(x) computed on x by
  the ``grad-cam`` package's own ``get_cam_weights`` (Grad-CAM, Grad-CAM++, Score-CAM). All
  maps are upsampled bilinearly to the image and min-max normalised, exactly as RI's. AD/AI
  use the seed's class c (the class the reused explanation is for).
* ``per_image`` — each baseline computes its map from x_new's own activations and gradients
  (the grad-cam package end to end), RI explains every unseen image with the interpretation
  of its predicted class that covers it (else the nearest by Dist); classes are the
  predictions. This is the baselines' best case, a different (easier) experiment.

Both return ``{method: (images, saliency, classes)}`` for :func:`faithfulness_suite`, plus a
``random`` and a ``centre`` floor on RI's images.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassbox.errors import AnalysisInputError
from glassbox.interpret.evaluation import CAM_METHODS, cam_saliency, ri_saliency
from glassbox.interpret.faithfulness import centre_prior_saliency, random_saliency
from glassbox.interpret.heatmap import interpretation_heatmaps
from glassbox.interpret.ranking import rank_by_interpretation
from glassbox.interpret.representative import Interpretation, RepresentativeInterpreter

__all__ = [
    "PROTOCOLS",
    "cam_channel_weights",
    "check_protocols",
    "per_image_protocol",
    "reuse_protocol",
    "weighted_maps",
]

PROTOCOLS = ("reuse", "per_image")

MethodSets = dict[str, tuple[Tensor, Tensor, Tensor]]


def check_protocols(protocols: Sequence[str]) -> list[str]:
    """Known, non-empty protocol names (one error line otherwise)."""
    protocols = list(protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise AnalysisInputError(
            f"unknown interpretation protocol {unknown[0]!r}; choose from {', '.join(PROTOCOLS)}"
        )
    return protocols


def check_k(k: int, num_unseen: int) -> None:
    if not 1 <= k <= num_unseen:
        raise AnalysisInputError(
            f"reuse_k={k} must be in [1, {num_unseen}] (the number of unseen images); "
            "lower reuse_k or raise num_images"
        )


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM

    cams = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
    if method not in cams:
        raise AnalysisInputError(f"unknown CAM method {method!r}; choose from {', '.join(cams)}")
    return cams[method]


def cam_channel_weights(
    model: nn.Module,
    target_layer: nn.Module,
    images: Tensor,
    classes: Tensor,
    method: str = "gradcam",
    scorecam_batch_size: int = 128,
) -> Tensor:
    """Channel weights α (N, K) of ``images`` for ``classes`` from the grad-cam package.

    The package's own hooks (``ActivationsAndGradients``) and its method's
    ``get_cam_weights`` are used as they are; only the last step of a CAM (weighting the
    activations of the *same* image) is left out, so the weights can be reused. Parameter
    gradients and module modes are restored afterwards.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_cls = _cam_class(method)
    modes = [(m, m.training) for m in model.modules()]  # the package calls model.eval()
    saved_grads = [(p, p.grad) for p in model.parameters()]
    try:
        with torch.enable_grad(), cam_cls(model=model, target_layers=[target_layer]) as cam:
            if method == "scorecam":
                cam.batch_size = scorecam_batch_size
            x = images.detach().clone().requires_grad_(True)
            targets = [ClassifierOutputTarget(int(c)) for c in classes]
            outputs = cam.activations_and_grads(x)
            if cam.uses_gradients:
                model.zero_grad()
                loss = sum(t(o) for t, o in zip(targets, outputs))
                loss.backward(retain_graph=True)
            acts = cam.activations_and_grads.activations[0].cpu().numpy()
            grads = cam.activations_and_grads.gradients
            grads = grads[0].cpu().numpy() if grads else None
            with contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's progress bars
                weights = cam.get_cam_weights(x, target_layer, targets, acts, grads)
    finally:
        for p, g in saved_grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode
    return torch.as_tensor(weights).to(device=images.device, dtype=images.dtype)


@torch.no_grad()
def weighted_maps(alpha: Tensor, features: Tensor, image_size: tuple[int, int]) -> Tensor:
    """ReLU(Σ_k α_k ψ_k) per row (α (N, K), ψ (N, K, h, w)), upsampled bilinearly to
    ``image_size`` and min-max normalised per map → (N, H, W) in [0, 1]."""
    if features.dim() != 4 or alpha.shape != features.shape[:2]:
        raise AnalysisInputError(
            f"channel weights {tuple(alpha.shape)} do not match features {tuple(features.shape)}; "
            "split the model at a convolutional layer"
        )
    maps = torch.relu(torch.einsum("nk,nkhw->nhw", alpha.to(features), features))[:, None]
    maps = F.interpolate(maps, size=tuple(image_size), mode="bilinear", align_corners=False)
    lo = maps.amin(dim=(2, 3), keepdim=True)
    hi = maps.amax(dim=(2, 3), keepdim=True)
    return ((maps - lo) / (hi - lo).clamp_min(1e-12))[:, 0]


def _floors(sets: MethodSets, images: Tensor, classes: Tensor, seed: int) -> None:
    n, _, h, w = images.shape
    sets["random"] = (images, random_saliency(n, h, w, seed, like=images), classes)
    sets["centre"] = (images, centre_prior_saliency(n, h, w, like=images), classes)


def reuse_protocol(
    interpreter: RepresentativeInterpreter,
    interpretations: list[Interpretation],
    reference_images: Tensor,
    unseen_images: Tensor,
    k: int = 10,
    methods: Sequence[str] = CAM_METHODS,
    floors: bool = True,
    seed: int = 0,
) -> tuple[MethodSets, dict[str, Tensor]]:
    """The paper's reuse protocol: k new images per interpretation for every method.

    ``reference_images`` are the images the interpreter was built on (the seeds are taken
    from them); ``unseen_images`` were not used to build the interpretations. Returns the
    method sets and ``{"ri_index", "nn_index"}`` ((I, k) indices into ``unseen_images``).
    """
    if not interpretations:
        raise AnalysisInputError("reuse protocol needs at least one interpretation")
    check_k(k, len(unseen_images))
    device = interpreter.features.device
    unseen_images = unseen_images.to(device)
    reference_images = reference_images.to(device)
    size = tuple(unseen_images.shape[-2:])
    feats = interpreter.features_of(unseen_images)
    seeds = torch.tensor([it.seed_index for it in interpretations], device=device)
    seed_classes = torch.tensor([it.cls for it in interpretations], device=device)
    classes = seed_classes.repeat_interleave(k)

    ri_index, ri_maps = [], []
    for it in interpretations:  # a loop over interpretations, batched over images
        covered = it.covers(feats)
        order, _ = rank_by_interpretation(
            it.boundaries, interpreter.features[it.seed_index], feats, covered
        )
        idx = order[:k]
        ri_index.append(idx)
        ri_maps.append(interpretation_heatmaps(it.boundaries, feats[idx], size))
    ri_index = torch.stack(ri_index)
    sets: MethodSets = {
        "RI": (unseen_images[ri_index.flatten()], torch.cat(ri_maps).to(unseen_images), classes)
    }

    flat = feats.flatten(1).double()
    dist = torch.cdist(interpreter.features[seeds].flatten(1).double(), flat)
    nn_index = dist.topk(k, dim=1, largest=False).indices  # (I, k), nearest first
    nn_images = unseen_images[nn_index.flatten()]
    nn_feats = feats[nn_index.flatten()]
    for m in methods:
        alpha = cam_channel_weights(
            interpreter.split.model,
            interpreter.split.psi_module,
            reference_images[seeds],
            seed_classes,
            method=m,
        )
        maps = weighted_maps(alpha.repeat_interleave(k, 0), nn_feats, size)
        sets[m] = (nn_images, maps.to(unseen_images), classes)
    if floors:
        _floors(sets, sets["RI"][0], classes, seed)
    return sets, {"ri_index": ri_index, "nn_index": nn_index}


def per_image_protocol(
    interpreter: RepresentativeInterpreter,
    interpretations: list[Interpretation],
    images: Tensor,
    methods: Sequence[str] = CAM_METHODS,
    floors: bool = True,
    seed: int = 0,
) -> tuple[MethodSets, dict[str, Tensor]]:
    """Every method explains each image from the image itself (see the module docstring).
    Returns the method sets and ``{"covered"}`` (which images an RI covers)."""
    images = images.to(interpreter.features.device)
    classes = interpreter.predict(images)
    ri_maps, _, covered = ri_saliency(interpreter, interpretations, images)
    sets: MethodSets = {"RI": (images, ri_maps.to(images), classes)}
    for m in methods:
        maps = cam_saliency(
            interpreter.split.model, interpreter.split.psi_module, images, classes, m
        )
        sets[m] = (images, maps.to(images), classes)
    if floors:
        _floors(sets, images, classes, seed)
    return sets, {"covered": covered}
