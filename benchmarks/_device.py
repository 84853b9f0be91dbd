"""``--device`` for the benchmarks: one clear error when CUDA is asked for and absent, and
timers that wait for the GPU (CUDA kernels run asynchronously; without a synchronize a timer
measures only the launch)."""

from __future__ import annotations

import argparse
import time

import torch


def add_device_argument(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    parser.add_argument(
        "--device",
        default=default,
        help="cpu, cuda or cuda:<n> (default %(default)s); the ratios are printed for this device",
    )


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; exits with one line naming the fix when CUDA is not usable."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: --device {name} is not a device; use cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"error: --device {name} but CUDA is not available here (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); run on a GPU machine or with --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(
                f"error: --device {name} but this machine has {torch.cuda.device_count()} GPU(s); "
                "use cuda:0 .. cuda:<n-1>"
            )
    elif device.type != "cpu":
        raise SystemExit(f"error: --device {name}: the benchmarks run on cpu or cuda")
    return device


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device | str) -> float:
    """``time.perf_counter()`` after the device has finished the work queued so far."""
    synchronize(device)
    return time.perf_counter()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
