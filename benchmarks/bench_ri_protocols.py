"""The paper's reuse protocol vs the per-image protocol: cost of producing the maps.

Setting (the acceptance case): the project's AlexNet (``conf/model/alexnet.yaml``: width 0.5,
hidden 512, 32×32 inputs) on the embedded digits, split at ``features.11``; 10
representative interpretations (one per predicted class) built on 300 reference images;
Grad-CAM, Grad-CAM++ and Score-CAM as baselines; 10 new images per interpretation.

* ``reuse``: RI's maps of the 10 top-ranked unseen images of each interpretation, and each
  baseline's channel weights computed once on the 10 seeds (the grad-cam package's
  ``get_cam_weights``) and reused on the seeds' 10 nearest unseen images in ψ-space.
* ``per_image``: RI's maps and each baseline's package CAM of the same 100 unseen images.

Both are timed interleaved (medians of ``--repeats``), so load on a shared machine hits both
alike. The faithfulness suite that scores the maps is the same for both and is not timed.

Run: ``python benchmarks/bench_ri_protocols.py [--repeats 3] [--device cuda]``.
Target: reuse / per_image ≤ 2×.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _device import add_device_argument, clock, describe, resolve_device

from glassbox.data import GlassBoxDataModule
from glassbox.interpret import RepresentativeInterpreter
from glassbox.interpret.protocols import per_image_protocol, reuse_protocol
from glassbox.models.alexnet import AlexNet

BASELINES = ("gradcam", "gradcam++", "scorecam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10, help="new images per interpretation")
    add_device_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)

    dm = GlassBoxDataModule(name="digits", mean=(0.17,), std=(0.29,), seed=0)
    dm.setup("fit")
    ref_x, _ = dm.analysis_batch("train", 300, 0)
    unseen, _ = dm.analysis_batch("val", 150, 0)
    torch.manual_seed(0)
    net = AlexNet(in_channels=1, image_size=32, num_classes=10, width_mult=0.5, hidden=512)
    net = net.to(device).eval()
    with torch.no_grad():  # untrained: centre and scale the logits so every class is predicted
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        logits = net(ref_x.to(device))
        last.bias -= logits.mean(0)
        last.weight /= logits.std(0)[:, None]
        last.bias /= logits.std(0)
    interp = RepresentativeInterpreter(net, ref_x.to(device), num_candidates=20)
    its = [v[0] for v in interp.cover_all(k=1).values()][:10]
    n_images = len(its) * args.k
    # per_image explains the same number of images the reuse protocol scores
    pool = unseen[:n_images].to(device)

    def run_reuse():
        reuse_protocol(interp, its, ref_x, unseen, k=args.k, methods=BASELINES, floors=False)

    def run_per_image():
        per_image_protocol(interp, its, pool, methods=BASELINES, floors=False)

    run_reuse(), run_per_image()  # warm-up
    t_reuse, t_per = [], []
    for _ in range(args.repeats):
        t0 = clock(device)
        run_reuse()
        t1 = clock(device)
        run_per_image()
        t2 = clock(device)
        t_reuse.append(t1 - t0)
        t_per.append(t2 - t1)
    r, p = statistics.median(t_reuse), statistics.median(t_per)
    print(f"device: {describe(device)}")
    print(
        f"{len(its)} interpretations x {args.k} images x {len(BASELINES)} baselines on digits "
        f"(AlexNet, psi = {interp.layer} {tuple(interp.feature_shape)})"
    )
    print(f"reuse:     {r:8.3f} s")
    print(f"per_image: {p:8.3f} s")
    print(f"reuse / per_image cost ratio: {r / p:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
