"""Devices and precision on a CPU: the PCA fit follows its input's device and dtype (the
default model's GPU start-up crash), exact analyses run outside autocast, and a trainer config
that cannot run on this machine stops in one line naming the fix."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, run_script
from glassbox.errors import ConfigError
from glassbox.models.reduction import Reduction
from glassbox.runtime.devices import check_trainer_devices, full_precision

pytestmark = pytest.mark.usefixtures("one_thread")


def _exact_pca(x: torch.Tensor, k: int):
    """Reference: principal axes of float64 ``x`` by the covariance's eigenvectors."""
    x = x.double()
    xc = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(xc.T @ xc)
    order = evals.argsort(descending=True)
    return evals[order] / evals.sum(), evecs[:, order[:k]].T


# --------------------------------------------------------------------------- PCA fit
def test_pca_fit_follows_float64_features():
    """float64 features and a float64 layer: the fit is float64 end to end and agrees with the
    exact eigen-decomposition to 1e-12 (a float32 step anywhere would leave ~1e-7)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64) @ torch.randn(
        8, 8, generator=gen, dtype=torch.float64
    )
    red = Reduction(8, 3).double()
    ratios = red.fit(x)
    assert ratios.dtype == torch.float64 and red.linear.weight.dtype == torch.float64
    want_ratio, want_axes = _exact_pca(x, 3)
    torch.testing.assert_close(ratios, want_ratio, rtol=0, atol=1e-12)
    # same axes up to sign; the projection of the data is centred
    cos = (red.linear.weight * want_axes).sum(1).abs()
    torch.testing.assert_close(cos, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        red(x).mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_pca_fit_creates_nothing_off_the_features_device():
    """On the ``meta`` device every tensor the fit creates must live on the input's device; a
    CPU-created ``components`` (the crash the default model hit on a GPU) raises here."""
    red = Reduction(6, 3).to("meta")
    ratios = red.fit(torch.empty(20, 6, device="meta"))
    assert ratios.device.type == "meta" and red.linear.bias.device.type == "meta"


def test_pca_fit_is_exact_under_autocast():
    """Called inside a bfloat16 autocast region (a 16-mixed trainer), the fit still matches
    the float64 reference: autocast is off inside it."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=gen)
    ref = Reduction(6, 2)
    ref.fit(x)
    red = Reduction(6, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        red.fit(x)
    torch.testing.assert_close(red.linear.weight, ref.linear.weight, rtol=0, atol=0)
    torch.testing.assert_close(red.linear.bias, ref.linear.bias, rtol=0, atol=0)


def test_full_precision_disables_autocast():
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with full_precision():
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16


# --------------------------------------------------------------------------- start-up checks
def _trainer(**kw):
    return OmegaConf.create({"accelerator": "auto", "devices": 1, **kw})


def test_gpu_trainer_without_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(ConfigError) as err:
            check_trainer_devices(_trainer(accelerator=accelerator))
        msg = str(err.value)
        assert "no CUDA GPU" in msg and "trainer=cpu" in msg and "trainer.accelerator=cpu" in msg
    # CPU and auto run anywhere, with any number of processes
    check_trainer_devices(_trainer(accelerator="cpu", devices=2))
    check_trainer_devices(_trainer(accelerator="auto", devices=4))


@pytest.mark.parametrize(
    ("devices", "needle"),
    [
        (4, "asks for 4 GPUs but this machine has 2; set trainer.devices=2"),
        ("3", "asks for 3 GPUs but this machine has 2"),
        ([0, 2], "names GPU 2 but this machine has GPUs 0..1"),
        ("1,5", "names GPU 5"),
        (0, "asks for no device"),
        ("many", "is not a device count or list"),
    ],
)
def test_more_devices_than_gpus_is_one_clear_error(monkeypatch, devices, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        check_trainer_devices(_trainer(accelerator="gpu", devices=devices))


@pytest.mark.parametrize("devices", [1, 2, -1, "auto", [1], "0,1", None])
def test_devices_that_fit_the_machine_pass(monkeypatch, devices):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_trainer_devices(_trainer(accelerator="gpu", devices=devices))
    check_trainer_devices(_trainer(accelerator="auto", devices=devices))


def test_build_trainer_runs_the_check(cfg_train, monkeypatch):
    from glassbox.pipeline import build_trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="trainer=cpu"):
        build_trainer(cfg_train("trainer=gpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_py_trainer_gpu_without_cuda_says_how_to_fix(tmp_path):
    """As a user sees it: one error line naming the fix, no traceback, nothing trained."""
    proc = run_script(
        "train.py",
        *[o for o in FAST if not o.startswith("trainer=")],
        "trainer=gpu",
        f"paths.log_dir={tmp_path}",
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer.accelerator=gpu but this machine has no CUDA GPU"), (
        proc.stderr[-2000:]
    )
    assert "trainer=cpu" in last and "trainer.accelerator=cpu" in last
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


# --------------------------------------------------------------------------- analyses under autocast
def test_exact_analyses_ignore_an_enclosing_autocast():
    """A 16-mixed trainer's autocast region around an analysis call changes nothing: the
    decision boundaries and the layerwise equivariance errors equal those computed outside
    (bfloat16 would be off by ~1e-2)."""
    from torch import nn

    from glassbox.equivariance import measure_layerwise
    from glassbox.interpret import decision_boundaries

    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    alpha = torch.randn(20, 6, 2, 2)
    ref = decision_boundaries(head, alpha)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = decision_boundaries(head, alpha)
    assert got.weight.dtype == torch.float32
    torch.testing.assert_close(got.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(got.bias, ref.bias, rtol=0, atol=0)

    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(6, 1, 8, 8)
    want = [r.value for r in measure_layerwise(conv, x, "C4", layers=["0"])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        have = [r.value for r in measure_layerwise(conv, x, "C4", layers=["0"])]
    assert have == want


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "script", ["bench_foundation.py", "bench_equivariance.py", "bench_ldb.py", "bench_scsc.py"]
)
def test_benchmarks_device_cuda_without_cuda_is_one_line(script):
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stdout.strip() == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: --device cuda but CUDA is not available here (torch {torch.__version__}, "
        "torch.cuda.is_available() is False); run on a GPU machine or with --device cpu"
    ]
