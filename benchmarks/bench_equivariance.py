"""Cost of the layerwise equivariance report relative to the forward passes it cannot avoid.

For each model, side by side in one process and interleaved round by round (so machine
load hits all variants alike), it times:

- ``forward``: the 1 + m plain forward passes (the original batch and its m transformed
  copies, m = |G| − 1 non-identity elements), run one batch at a time, in eval mode, no grad;
- ``forward (one batch)``: the same images as ONE concatenated forward (what the report ran
  before it streamed the copies one forward at a time);
- ``report``: :func:`measure_layerwise` with every measure except the Lie derivative
  (transforms, hooks, invariance, known action, spatial, best-fit fits, consistency);
- ``lie``: :func:`measure_layerwise` with only the Lie derivative (one JVP pass).

It prints medians and the ratios report / forward (target ≤ 1.3) and lie / one forward.
The report streams the |G| forwards of 64 images (a layer's originals are kept, each copy is
measured as it appears, a cache-sized block of images at a time), solves one LU per layer and
writes each held-out residual with one GEMM accumulated onto the copy. On the idle 2-core
machine (1 thread, two runs) the glass-box model gives 1.11 / 1.12 and AlexNet 1.51 / 1.49:
AlexNet is above the bar. Its extra ≈ 140 ms per report (torch.profiler): best-fit GEMMs
30 ms (≈ 3.5 GFLOP, 12 % of the forward's FLOPs), Gram matrices and LU solves 13 ms,
differences 21 ms, norms 12 ms, pixel gathers 19 ms, channel-major copies 13 ms, centring
3 ms, ≈ 10 ms of small ops. Getting under 1.3 needs the gather, differences and norms of a
block fused into about one pass, which PyTorch's CPU kernels do not offer.

    python benchmarks/bench_equivariance.py [--model alexnet|glassbox|both] [--rounds 7] [--batch 64] [--group C4] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch
from _device import add_device_argument, clock, describe, resolve_device
from torch import nn

from glassbox.equivariance import FINITE_MEASURES, get_group, measure_layerwise, transform_images

MODELS = {"glassbox": "GlassBoxNet", "alexnet": "AlexNet"}


def _models(channels: int, size: int, which: str) -> dict[str, nn.Module]:
    """The project's glass-box net and/or AlexNet as conf/model/{glassbox,alexnet}.yaml build them."""
    from glassbox.models.alexnet import AlexNet
    from glassbox.models.glassbox_net import GlassBoxNet

    build = {
        "glassbox": lambda: GlassBoxNet(in_channels=channels, image_size=size),
        "alexnet": lambda: AlexNet(
            in_channels=channels, image_size=size, width_mult=0.5, hidden=512
        ),
    }
    chosen = list(MODELS) if which == "both" else [which]
    return {MODELS[k]: build[k]() for k in chosen}


def _timed(fn, device) -> float:
    start = clock(device)
    fn()
    return clock(device) - start


def bench(model: nn.Module, images: torch.Tensor, group: str, rounds: int) -> dict[str, float]:
    model.eval()
    elements = get_group(group).elements
    copies = [images] + [transform_images(images, e) for e in elements]
    batched = torch.cat(copies)

    @torch.no_grad()
    def forward_each():
        for c in copies:
            model(c)

    @torch.no_grad()
    def forward_batched():
        model(batched)

    @torch.no_grad()
    def forward_one():
        model(images)

    def report():
        measure_layerwise(model, images, group, measures=FINITE_MEASURES)

    def lie():
        measure_layerwise(model, images, group, measures=["lie_derivative"])

    variants = {
        "forward": forward_each,
        "forward (one batch)": forward_batched,
        "report": report,
        "single forward": forward_one,
        "lie": lie,
    }
    for fn in variants.values():  # warm-up: allocator, e2cnn eval-mode filters, oneDNN kernels
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants.items())
        if r % 2:  # alternate the order so no variant always runs right after another
            order.reverse()
        for name, fn in order:
            times[name].append(_timed(fn, images.device))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--group", default="C4")
    parser.add_argument(
        "--model",
        choices=[*MODELS, "both"],
        default="both",
        help="which net to measure (default both)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared machine, other processes stall multi-threaded "
        "ops at every barrier, which swamps what is measured; 0 keeps torch's default)",
    )
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    images = torch.randn(args.batch, args.channels, args.size, args.size, device=args.device)
    order = get_group(args.group).order
    print(
        f"layerwise equivariance report vs plain forward passes: group {args.group} (|G| = {order}: the "
        f"original + {order - 1} transformed copies), batch {args.batch}, {args.size}×{args.size}, "
        f"device {describe(args.device)}, median of {args.rounds} interleaved rounds"
    )
    ratios = {}
    for name, model in _models(args.channels, args.size, args.model).items():
        model.to(args.device)
        t = bench(model, images, args.group, args.rounds)
        ms = {k: 1e3 * v for k, v in t.items()}
        print(
            f"{name:12s} forward ×{order}: {ms['forward']:8.1f} ms | one batch: {ms['forward (one batch)']:8.1f} ms | "
            f"report: {ms['report']:8.1f} ms | ratio report/forward = {t['report'] / t['forward']:.2f} "
            f"(target <= 1.3; vs one batch {t['report'] / t['forward (one batch)']:.2f})"
        )
        ratios[name] = t["report"] / t["forward"]
        print(
            f"{'':12s} Lie derivative: {ms['lie']:8.1f} ms = {t['lie'] / t['single forward']:.2f} × one forward "
            f"of the {args.batch} originals ({ms['single forward']:.1f} ms)"
        )

    print("report / |G| forwards: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
