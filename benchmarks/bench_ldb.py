"""Closed-form LDB extraction vs per-image autograd, at equal results.

The baseline does what the authors' code does: for every image, a forward pass and one
backward pass per logit (the full Jacobian row by row), then w = J_top1 − J_top2 and
b = (G_top1 − G_top2) − wᵀα. The library evaluates the masked weight products for the
whole batch with one forward and one backward pass (``decision_boundaries``).

The head is the project's AlexNet (``conf/model/alexnet.yaml``: small stem, width 0.5,
hidden 512, 32×32 inputs) split after the last conv ReLU (``features.11``, ψ of shape
(128, 8, 8)): MaxPool → AdaptiveAvgPool → Flatten → Dropout → Linear → ReLU → Dropout →
Linear → ReLU → Linear, in eval mode. The baseline's cost grows with the number of classes
(one backward per logit), so 10 classes (digits) and 100 classes are both reported.

Run: ``python benchmarks/bench_ldb.py [--images 256 --repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from glassbox.interpret import decision_boundaries, default_layer, split_model


def per_image_autograd(head: nn.Module, alpha: torch.Tensor):
    """One forward per image and one backward per logit (the authors' approach)."""
    ws, bs = [], []
    for a in alpha:
        a = a[None].clone().requires_grad_(True)
        out = head(a)[0]
        rows = []
        for k in range(out.shape[0]):
            (g,) = torch.autograd.grad(out[k], a, retain_graph=k + 1 < out.shape[0])
            rows.append(g.reshape(-1))
        jac = torch.stack(rows)
        top = out.detach().topk(2).indices
        w = jac[top[0]] - jac[top[1]]
        ws.append(w)
        bs.append((out[top[0]] - out[top[1]]).detach() - w @ a.detach().reshape(-1))
    return torch.stack(ws), torch.stack(bs)


def alexnet_head(num_classes: int, images: int):
    from glassbox.models.alexnet import AlexNet

    torch.manual_seed(0)
    net = AlexNet(
        in_channels=1, image_size=32, num_classes=num_classes, width_mult=0.5, hidden=512
    ).eval()
    split = split_model(net, default_layer(net))
    with torch.no_grad():
        alpha = split.features(torch.randn(images, 1, 32, 32))
    return split.layer, split.head, alpha


def measure(num_classes: int, images: int, repeats: int) -> float:
    layer, head, alpha = alexnet_head(num_classes, images)
    t_fast, t_slow = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        t = time.perf_counter()
        lb = decision_boundaries(head, alpha)
        t_fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        w_ref, b_ref = per_image_autograd(head, alpha)
        t_slow.append(time.perf_counter() - t)
    err_w = float((lb.weight - w_ref).norm() / w_ref.norm())
    err_b = float((lb.bias - b_ref).norm() / b_ref.norm())
    max_w = float(((lb.weight - w_ref).norm(dim=1) / w_ref.norm(dim=1)).max())
    tf, ts = statistics.median(t_fast), statistics.median(t_slow)
    print(f"[{num_classes} classes, psi = {layer} {tuple(alpha.shape[1:])}, {len(alpha)} images]")
    print(f"  equal results: relative error w {err_w:.2e} (worst row {max_w:.2e}), b {err_b:.2e}")
    print(f"  closed form (1 forward + 1 backward for the batch): median {tf * 1e3:.1f} ms")
    print(
        f"  per-image autograd (1 forward + {num_classes} backward per image): median {ts * 1e3:.1f} ms"
    )
    print(
        f"  SPEED-UP closed form vs per-image autograd: {ts / tf:.0f}x "
        f"[target >= 50x: {'MET' if ts / tf >= 50 else 'MISSED'}]"
    )
    return ts / tf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for c in args.classes:
        measure(c, args.images, args.repeats)


if __name__ == "__main__":
    main()
