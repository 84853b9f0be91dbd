"""How long building the HTML reports takes, and how big the run report is with its images.

    python benchmarks/bench_report.py [--run RUN_DIR] [--sweep MULTIRUN_DIR] [--repeat 3]

Bars: the run report of the default run in ≤ 5 s, the report of a 6-job sweep in ≤ 15 s, the
default run's report with its images ≤ 5 MB. Without ``--run``/``--sweep`` it writes files shaped
like the default run's (10 epochs of history and of equivariance summaries over 6 layers, a 10-class
confusion matrix, the analyses' PNGs) and a 6-job sweep of them (2 models × 3 seeds) into a
temporary directory, so it runs in seconds with no training; pass real directories
(``logs/train/runs/<time>``, ``logs/train/multiruns/<time>``) to measure those. Times are the
median over ``--repeat`` builds, wall clock and CPU (on a busy machine the CPU time is the
better guide to what an idle one takes). The sweep's time assumes its jobs already have their
reports (train.py writes them); the cold time, building the six job reports too, is printed next
to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device import add_device_argument  # noqa: E402

RUN_BAR_S, SWEEP_BAR_S, SIZE_BAR_MB = 5.0, 15.0, 5.0
LAYERS = [
    ("representation.block1", "SequentialModule"),
    ("representation.block2", "SequentialModule"),
    ("representation.block3", "SequentialModule"),
    ("group_pool", "GroupPooling"),
    ("pool", "AdaptiveAvgPool2d"),
    ("output", "GlassBoxNet"),
]


def _png(path: Path, seed: int) -> None:
    """A plot of the size the analyses draw (9 × 4.5 in at 100 dpi)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for k in range(4):
        ax.semilogy(range(6), [10 ** (-(k + 1) * (i + seed % 3) / 3) for i in range(6)], marker="o")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def synth_run(run: Path, model: str = "glassbox", seed: int = 1, epochs: int = 10) -> None:
    """A run directory shaped like the default run's (train.py logger=csv)."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"task_name: train\nseed: {seed}\nmodel:\n  name: {model}\n  optimizer:\n"
        "    _target_: torch.optim.AdamW\n    lr: 0.003\ndata:\n  name: digits\n  batch_size: 64\n"
        f"trainer:\n  max_epochs: {epochs}\ncallbacks:\n  history:\n    _target_: x\n"
        "  equivariance:\n    _target_: x\n"
    )
    (run / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n- seed={seed}\n")
    acc = 0.95 + 0.01 * seed - (0.02 if model == "alexnet" else 0)
    matrix = [
        [30 if i == j else (1 if (i + j + seed) % 7 == 0 else 0) for j in range(10)]
        for i in range(10)
    ]
    metrics = {"val/acc": acc, "val/loss": 0.2, "test/loss": 0.15, "test/acc": acc, "test/f1": acc}
    metrics["test/confusion_matrix"] = matrix
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "task": "train",
                "model": model,
                "data": "digits",
                "best_ckpt": f"{run}/checkpoints/epoch_{epochs - 1:03d}.ckpt",
                "metrics": metrics,
            }
        )
    )
    lines = ["epoch,step,val/loss,val/acc,val/f1,train/loss,train/acc,train/f1,lr"]
    for e in range(epochs):
        f = math.exp(-e / 3)
        lines.append(
            f"{e},{20 * (e + 1)},{2 * f},{1 - f / 1.5},{1 - f / 1.4},{2.1 * f},{1 - f / 1.6},{1 - f / 1.5},{0.003 * (1 - e / epochs)}"
        )
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    tags = [f"epoch{e:03d}" for e in range(epochs)] + ["fit_end", "test"]
    for i, tag in enumerate(tags):
        out = run / "equivariance" / tag
        out.mkdir(parents=True)
        rows = ["model,depth,layer,module,invariance,equivariance,spatial,best_fit,consistency"]
        for d, (layer, module) in enumerate(LAYERS):
            inv = 0.9 / (d + 1) if d < 4 else 1e-7
            rows.append(
                f"{model},{d},{layer},{module},{inv},{1e-7 * (1 + i / 10)},{inv},{5e-6 / (d + 1)},{'1.0' if layer == 'output' else ''}"
            )
        (out / "equivariance_summary.csv").write_text("\n".join(rows) + "\n")
        (out / "status.json").write_text(
            json.dumps(
                {
                    "analysis": "equivariance",
                    "tag": tag,
                    "status": "ran",
                    "scalars": 20,
                    "seconds": 3.0,
                }
            )
        )
        _png(out / "equivariance.png", i)


def report_size(report: Path) -> int:
    """Bytes of report.html and of every image it shows."""
    text = report.read_text()
    srcs = set(re.findall(r'<img src="([^"]+)"', text))
    return len(text.encode()) + sum(
        (report.parent / s).stat().st_size for s in srcs if (report.parent / s).is_file()
    )


def timed(fn, repeat: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", type=Path, help="a run directory (default: a synthetic default run)"
    )
    parser.add_argument(
        "--sweep", type=Path, help="a multirun directory (default: a synthetic 6-job sweep)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    add_device_argument(parser)  # accepted for `make bench`; the reports use the CPU only
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import glassbox.report  # noqa: F401  (imports and matplotlib's first use are not the report's time)
    from glassbox.reporting.run_report import build_run_report
    from glassbox.reporting.sweep_report import build_sweep_report

    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    run = args.run
    if run is None:
        run = tmp / "run"
        synth_run(run)
    sweep = args.sweep
    if sweep is None:
        sweep = tmp / "multirun"
        for n, (model, seed) in enumerate(
            (m, s) for s in (1, 2, 3) for m in ("glassbox", "alexnet")
        ):
            synth_run(sweep / str(n), model, seed)
    _png(tmp / "warm.png", 0)  # matplotlib's font cache and first draw

    wall, cpu = timed(lambda: build_run_report(run), args.repeat)
    size = report_size(run / "report.html") / 2**20
    jobs = sorted({p.parent for p in sweep.rglob("metrics.json")})
    for job in jobs:  # cold: no job report yet, the sweep report builds them
        (job / "report.html").unlink(missing_ok=True)
    cold_wall, cold_cpu = timed(lambda: build_sweep_report([sweep]), 1)
    swall, scpu = timed(lambda: build_sweep_report([sweep]), args.repeat)

    def verdict(wall: float, cpu: float, bar: float) -> str:
        if wall <= bar:
            return "ok"
        return "OVER" if cpu > bar else "over in wall time on this busy machine; CPU time within"

    print(
        f"run report   ({run}): {wall:.2f} s wall, {cpu:.2f} s CPU (bar {RUN_BAR_S:g} s: {verdict(wall, cpu, RUN_BAR_S)})"
    )
    print(
        f"run report size with its images: {size:.2f} MB (bar {SIZE_BAR_MB:g} MB: {'ok' if size <= SIZE_BAR_MB else 'OVER'})"
    )
    print(
        f"sweep report ({len(jobs)} jobs, {sweep}): {swall:.2f} s wall, {scpu:.2f} s CPU "
        f"(bar {SWEEP_BAR_S:g} s: {verdict(swall, scpu, SWEEP_BAR_S)}); "
        f"with the {len(jobs)} job reports built too: {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
