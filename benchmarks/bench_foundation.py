"""Glass-box model cost against a plain CNN with the same feature-map shapes (issue: Foundation).

Prints two ratios, each the median over interleaved repetitions measured in this one run:
  train-step ratio  = glass-box training step (forward + backward + AdamW) / plain CNN's    (target ≤ 1.10)
  inference ratio   = exported glass-box forward (eval)                  / plain CNN's    (target ≤ 1.05)

The plain CNN has exactly the glass-box layer shapes: Conv2d(C_in·|G| → C_out·|G|, k, same) →
BatchNorm2d → ReLU → MaxPool2d per block, a channel max over each field's |G| channels, global
average pool, the reduction Linear and the classifier MLP.

    python benchmarks/bench_foundation.py [--batch 64] [--reps 15] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _device import add_device_argument, clock, describe, resolve_device
from torch import nn

from glassbox.models.glassbox_net import GlassBoxNet, mlp

DEVICE = torch.device("cpu")


class ChannelMax(nn.Module):
    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.g = group_size

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, c // self.g, self.g, h, w).amax(2)


def plain_twin(
    net: GlassBoxNet, widths, kernel_sizes, pool_after, reduced_dim, hidden
) -> nn.Sequential:
    g = net.group_size
    layers, c_in = [], net.in_channels
    for w, k, p in zip(widths, kernel_sizes, pool_after):
        layers += [
            nn.Conv2d(c_in, w * g, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(w * g),
            nn.ReLU(inplace=True),
        ]
        if p:
            layers.append(nn.MaxPool2d(2))
        c_in = w * g
    layers += [
        ChannelMax(g),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[-1], reduced_dim),
    ]
    layers.append(mlp(reduced_dim, hidden, net.num_classes))
    return nn.Sequential(*layers)


def time_call(fn, inner: int) -> float:
    start = clock(DEVICE)
    for _ in range(inner):
        fn()
    return (clock(DEVICE) - start) / inner


def train_step_fn(model, x, y):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--inner", type=int, default=3)
    add_device_argument(parser)
    args = parser.parse_args()
    global DEVICE
    DEVICE = resolve_device(args.device)
    torch.manual_seed(0)
    cfg = dict(
        widths=(8, 16, 32),
        kernel_sizes=(5, 5, 5),
        pool_after=(True, True, False),
        reduced_dim=16,
        hidden=(32,),
    )
    gb = GlassBoxNet(
        group_order=8,
        widths=cfg["widths"],
        kernel_sizes=cfg["kernel_sizes"],
        pool_after=cfg["pool_after"],
        reduced_dim=cfg["reduced_dim"],
        classifier_hidden=cfg["hidden"],
        reduction="linear",
    )
    gb.to(DEVICE)
    plain = plain_twin(gb, **cfg).to(DEVICE)
    x = torch.randn(args.batch, 1, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (args.batch,), device=DEVICE)

    steps = {
        "glassbox": train_step_fn(gb.train(), x, y),
        "plain": train_step_fn(plain.train(), x, y),
    }
    exported = gb.eval().export().to(DEVICE)
    plain.eval()
    infer = {
        "exported": lambda: exported(x),
        "plain": lambda: plain(x),
    }
    results: dict[str, list[float]] = {
        k: [] for k in ("glassbox", "plain_train", "exported", "plain_eval")
    }
    for fn in (*steps.values(), *infer.values()):  # warm-up
        for _ in range(2):
            with torch.set_grad_enabled(fn in steps.values()):
                fn()
    train_ratios, infer_ratios = [], []
    for rep in range(args.reps):
        # alternate the order so drifts in machine load hit both sides alike
        order = [("glassbox", steps["glassbox"]), ("plain_train", steps["plain"])]
        if rep % 2:
            order.reverse()
        t = {name: time_call(fn, args.inner) for name, fn in order}
        with torch.inference_mode():
            pairs = [("exported", infer["exported"]), ("plain_eval", infer["plain"])]
            if rep % 2:
                pairs.reverse()
            t.update({name: time_call(fn, args.inner * 3) for name, fn in pairs})
        for k, v in t.items():
            results[k].append(v)
        train_ratios.append(t["glassbox"] / t["plain_train"])
        infer_ratios.append(t["exported"] / t["plain_eval"])
    med = {k: statistics.median(v) * 1e3 for k, v in results.items()}
    print(
        f"batch {args.batch}, 1x32x32 images, C8 regular fields {cfg['widths']}, {args.reps} reps (medians), "
        f"device {describe(DEVICE)}"
    )
    print(
        f"  train step: glass-box {med['glassbox']:.1f} ms, plain CNN {med['plain_train']:.1f} ms"
    )
    print(f"  inference : exported  {med['exported']:.1f} ms, plain CNN {med['plain_eval']:.1f} ms")
    print(
        f"train-step ratio (glass-box / plain CNN): {statistics.median(train_ratios):.3f}  (target <= 1.10)"
    )
    print(
        f"inference ratio (exported / plain CNN):   {statistics.median(infer_ratios):.3f}  (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
