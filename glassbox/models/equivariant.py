"""e2cnn building blocks for the glass-box representation layer, with cached He init and
state-dict hooks that make checkpoints independent of train/eval mode."""

from __future__ import annotations

import torch
from e2cnn import gspaces
from e2cnn import nn as enn

from glassbox.errors import ConfigError

GSPACES = ("rot", "fliprot")
POOLINGS = ("max", "max_antialiased", "avg")

# e2cnn's generalized He init costs seconds for wide layers; the variances depend only on the
# layer's signature, so compute them once per process.
_HE_VARIANCES: dict[tuple, torch.Tensor] = {}


def make_gspace(name: str, order: int):
    if name not in GSPACES:
        raise ConfigError(f"unknown gspace {name!r}; use one of {', '.join(GSPACES)}")
    if order < 1:
        raise ConfigError(f"group_order must be >= 1, got {order}")
    return gspaces.Rot2dOnR2(order) if name == "rot" else gspaces.FlipRot2dOnR2(order)


def he_init_cached(conv: enn.R2Conv) -> None:
    """Generalized He init (as e2cnn's default), with the variance tensor cached by signature."""
    from e2cnn.nn.init import _generalized_he_init_variances

    key = (
        conv.in_type.gspace.name,
        tuple(r.name for r in conv.in_type.representations),
        tuple(r.name for r in conv.out_type.representations),
        conv.kernel_size,
        conv.basisexpansion.dimension(),  # the basis options change the basis
    )
    if key not in _HE_VARIANCES:
        _HE_VARIANCES[key] = _generalized_he_init_variances(conv.basisexpansion)
    with torch.no_grad():
        conv.weights.copy_(_HE_VARIANCES[key] * torch.randn_like(conv.weights))


def pooling_layer(ftype, pooling: str, sigma: float = 0.6) -> enn.EquivariantModule:
    """A 2×2, stride-2 pooling of ``ftype``'s fields that keeps the block exactly equivariant to
    90° rotations on even-sized maps.

    ``max`` and ``avg`` pool 2×2 windows; ``max_antialiased`` (Zhang, "Making convolutional
    networks shift-invariant again", ICML 2019) takes a stride-1 2×2 max, then blurs with a
    Gaussian of std ``sigma`` and subsamples, which lowers the aliasing that breaks
    equivariance to rotations between multiples of 90°. (e2cnn's anti-aliased *average*
    pooling subsamples a grid that rot90 does not map onto itself, so it is not offered.)
    """
    if pooling == "max":
        return enn.PointwiseMaxPool(ftype, kernel_size=2, stride=2)
    if pooling == "max_antialiased":
        pool = enn.PointwiseMaxPoolAntialiased(ftype, kernel_size=2, stride=2, sigma=sigma)
        # the Gaussian is a constant of sigma, not state: keep it out of checkpoints
        pool.register_buffer("filter", pool.filter, persistent=False)
        return pool
    if pooling == "avg":
        return enn.PointwiseAvgPool(ftype, kernel_size=2, stride=2)
    raise ConfigError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")


def conv_block(
    in_type,
    out_type,
    kernel_size: int,
    pool: bool,
    pooling: str = "max",
    frequencies_cutoff: float | None = None,
    maximum_offset: int | None = None,
) -> enn.SequentialModule:
    """R2Conv → InnerBatchNorm → ReLU (→ 2×2 pooling). Stride 1 and 'same' padding keep the
    block exactly equivariant to 90° rotations on even-sized maps.

    ``frequencies_cutoff`` and ``maximum_offset`` are e2cnn's filter-basis options (Weiler &
    Cesa, NeurIPS 2019): the highest angular frequency per ring radius (``cutoff × radius``;
    None: e2cnn's default policy) and how many aliased frequencies a finite group's basis
    keeps (None: all the cutoff allows). Lower values give smoother filters, which stay closer
    to equivariant under rotations the group does not contain.
    """
    if kernel_size % 2 == 0:
        raise ConfigError(
            f"model.net.kernel_sizes has the even size {kernel_size}; use odd sizes (e.g. 3, 5, 7) so that "
            "'same' padding keeps the block exactly rotation-equivariant"
        )
    conv = enn.R2Conv(
        in_type,
        out_type,
        kernel_size,
        padding=kernel_size // 2,
        bias=False,
        initialize=False,
        frequencies_cutoff=None if frequencies_cutoff is None else float(frequencies_cutoff),
        maximum_offset=maximum_offset,
    )
    he_init_cached(conv)
    layers = [conv, enn.InnerBatchNorm(out_type), enn.ReLU(out_type, inplace=True)]
    if pool:
        layers.append(pooling_layer(out_type, pooling))
    return enn.SequentialModule(*layers)


def plain_blur(module: torch.nn.Module) -> torch.nn.Module:
    """Replace e2cnn's exported ``FixedConv2D`` (the anti-aliasing blur, whose filter is a plain
    attribute that ``.to(device)`` would not move) by the equivalent depthwise ``nn.Conv2d``."""
    from e2cnn.nn.modules.pooling.pointwise_max import FixedConv2D

    for name, child in module.named_children():
        if isinstance(child, FixedConv2D):
            f = child._filter
            conv = torch.nn.Conv2d(
                f.shape[0], f.shape[0], tuple(f.shape[-2:]), child._stride, child._pad,
                groups=f.shape[0], bias=False,
            )  # fmt: skip
            conv.weight.data.copy_(f)
            conv.requires_grad_(False)
            setattr(module, name, conv.to(f.device).eval())
        else:
            plain_blur(child)
    return module


def _r2convs(module: torch.nn.Module, prefix: str = ""):
    for name, sub in module.named_modules(prefix=prefix.rstrip(".")):
        if isinstance(sub, enn.R2Conv):
            yield (name + "." if name else ""), sub


_EVAL_BUFFERS = ("filter", "expanded_bias")


def install_mode_independent_state(module: torch.nn.Module) -> None:
    """Make ``module``'s state dict the same in train and eval mode.

    e2cnn's ``R2Conv`` registers the expanded ``filter``/``expanded_bias`` as buffers in eval
    mode only, so a checkpoint saved in one mode does not load in the other. They are pure
    functions of the weights: drop them on save, ignore them on load, and rebuild them after
    loading when the module is in eval mode.
    """

    def drop_on_save(mod, state_dict, prefix, local_metadata):
        for name, _ in _r2convs(mod, prefix):
            for buf in _EVAL_BUFFERS:
                state_dict.pop(name + buf, None)
        return state_dict

    def drop_on_load(state_dict, prefix, *args, **kwargs):
        for name, _ in _r2convs(module, prefix):
            for buf in _EVAL_BUFFERS:
                state_dict.pop(name + buf, None)

    def rebuild_after_load(mod, incompatible):
        eval_keys = {b for b in _EVAL_BUFFERS}
        incompatible.missing_keys[:] = [
            k for k in incompatible.missing_keys if k.rsplit(".", 1)[-1] not in eval_keys
        ]
        for _, conv in _r2convs(mod):
            if not conv.training:  # recompute the cached filter from the loaded weights
                conv.train(True)
                conv.train(False)

    module._register_state_dict_hook(drop_on_save)
    module._register_load_state_dict_pre_hook(drop_on_load)
    module.register_load_state_dict_post_hook(rebuild_after_load)


def rebuild_eval_caches(module: torch.nn.Module) -> None:
    """Recompute e2cnn's eval-mode filter caches outside inference mode.

    If ``eval()`` happened inside Lightning's inference-mode validation/test loop, the cached
    filters are inference tensors that autograd refuses (Grad-CAM, Lie derivatives). They are
    a pure function of the weights, so recomputing them changes no output.
    """
    # inference_mode(False) turns autograd back on: no_grad must come second, or the caches
    # would hold a graph back to the weights
    with torch.inference_mode(False), torch.no_grad():
        for _, conv in _r2convs(module):
            if not conv.training:
                conv.train(True)
                conv.train(False)
