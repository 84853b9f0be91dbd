"""GPU tests (``pytest -m gpu``, ``make test-gpu``): the default models train on CUDA with
16-mixed precision and every analysis callback on; evaluation on the GPU matches the CPU; the
analysis APIs give the CPU's results on CUDA tensors; DDP on 2 GPUs matches one device.

Without CUDA every test here is skipped with the reason. ``GLASSBOX_TEST_DEVICE=cpu`` runs the
same code with the CPU standing in for the GPU (CPU against CPU: it checks the tests' own logic
on a machine without a GPU, not the GPU)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import EVAL_FAST, FAST, run_script

DEVICE = os.environ.get("GLASSBOX_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        ON_GPU and not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
        "run `make test-gpu` on a GPU machine, or GLASSBOX_TEST_DEVICE=cpu to dry-run on the CPU",
    ),
]

# The trainer a GPU user picks, or its CPU stand-in for the dry run.
GPU_TRAINER = ["trainer=gpu"] if ON_GPU else ["trainer=cpu"]
ANALYSES = [
    "callbacks=[default,separability,interpretation]",
    "callbacks.separability.at_fit_end=true",
    "callbacks.separability.max_train_samples=300",
    "callbacks.separability.max_eval_samples=200",
    "callbacks.interpretation.num_images=16",
    "callbacks.interpretation.num_reference=200",
    "callbacks.interpretation.interpretations_per_class=1",
    "callbacks.interpretation.baselines=[gradcam]",
    "callbacks.interpretation.max_galleries=2",
    # the equivariance report on the tested checkpoint
    "callbacks.equivariance.at_test_end=true",
]


def _fast(*drop: str) -> list[str]:
    return [o for o in FAST if not o.startswith(("trainer=", "trainer.limit_", *drop))]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def _test_size(ckpt: Path) -> int:
    import hydra
    from omegaconf import OmegaConf

    from glassbox.runtime.checkpoints import load_checkpoint
    from glassbox.utils import resolvers

    resolvers.register()
    cfg = OmegaConf.create(load_checkpoint(ckpt)["glassbox"]["config"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("test")
    return len(dm.tensors("test")[1])


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("model", ["glassbox", "alexnet"])
def test_train_on_gpu_then_evaluate_matches_cpu(tmp_path, model):
    """train.py trainer=gpu (16-mixed): 2 epochs with the equivariance, separability and
    interpretation callbacks; evaluate.py of its checkpoint on the GPU and on the CPU agree on
    the test accuracy within one image."""
    run = tmp_path / "run"
    proc = run_script(
        "train.py",
        *_fast(),
        *GPU_TRAINER,
        f"model={model}",
        "trainer.max_epochs=2",
        *ANALYSES,
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = _metrics(run)
    assert metrics["test/acc"] > 0.5, metrics  # digits: learnt something in 2 epochs
    # every analysis ran and reported
    assert any(k.startswith("equivariance/") for k in metrics), sorted(metrics)
    assert any(k.startswith("separability/") for k in metrics), sorted(metrics)
    assert any(k.startswith("interpretation/") for k in metrics), sorted(metrics)
    if model == "glassbox":  # the PCA reduction was fitted on the device at fit start
        assert "PCA reduction fitted on" in (run / "train.log").read_text()

    ckpt = Path(json.loads((run / "metrics.json").read_text())["best_ckpt"])
    accs = {}
    for name, trainer in (("gpu", GPU_TRAINER), ("cpu", ["trainer=cpu"])):
        out = tmp_path / f"eval_{name}"
        proc = run_script(
            "evaluate.py",
            *[o for o in EVAL_FAST if not o.startswith(("trainer=", "trainer.limit_"))],
            *trainer,
            "callbacks.separability=null",
            f"ckpt_path={ckpt}",
            f"hydra.run.dir={out}",
            f"paths.log_dir={tmp_path}",
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        accs[name] = _metrics(out)["test/acc"]
    n = _test_size(ckpt)
    assert abs(accs["gpu"] - accs["cpu"]) * n <= 1 + 1e-6, (accs, n)


@pytest.mark.skipif(
    ON_GPU and torch.cuda.device_count() < 2, reason="DDP on 2 GPUs needs 2 CUDA devices"
)
def test_ddp_on_two_gpus_matches_one_device(tmp_path):
    """trainer=ddp devices=2 against one device at the same global batch (16 = 2 × 8), so with
    the same number of optimizer steps: the same test accuracy within 3% (the runs see the data
    in different orders and batch-norm statistics per rank), and exactly one run directory with
    one metrics.json, one .hydra/ and one log."""
    accs = {}
    for name, trainer in (
        ("one", GPU_TRAINER),
        (
            "ddp",
            ["trainer=ddp", "trainer.devices=2", "data.batch_size=8"]
            + ([] if ON_GPU else ["trainer.accelerator=cpu"]),
        ),
    ):
        logs = tmp_path / name
        proc = run_script(
            "train.py",
            *_fast(),
            *trainer,
            "trainer.max_epochs=3",
            "++callbacks.equivariance=null",
            f"paths.log_dir={logs}",
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        (run,) = list((logs / "train" / "runs").iterdir())  # one run directory
        assert len(list(logs.rglob("metrics.json"))) == 1
        assert len(list(logs.rglob(".hydra"))) == 1 and len(list(logs.rglob("train.log"))) == 1
        accs[name] = _metrics(run)["test/acc"]
    assert abs(accs["ddp"] - accs["one"]) <= 0.03, accs


# --------------------------------------------------------------------------- analysis APIs
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _glassbox_net():
    from glassbox.models.glassbox_net import GlassBoxNet

    torch.manual_seed(0)
    net = GlassBoxNet(
        in_channels=1,
        image_size=16,
        num_classes=4,
        group_order=4,
        widths=(4, 4, 8),
        kernel_sizes=(3, 3, 3),
        reduction="linear",
        reduced_dim=6,
        classifier_hidden=(8,),
    )
    return net  # train mode: deep-copyable (eval mode caches e2cnn's expanded filters)


def _plain_cnn():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1)
    ).eval()


@pytest.mark.parametrize("which", ["glassbox", "plain"])
def test_equivariance_measures_on_cuda_equal_cpu(which):
    """Every record of the layerwise report: CUDA value = CPU value within 1e-5 relative
    (1e-6 absolute for the round-off-level errors of the equivariant layers)."""
    from glassbox.equivariance import measure_layerwise

    net = _glassbox_net() if which == "glassbox" else _plain_cnn()
    x = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    twin = copy.deepcopy(net).to(DEVICE)  # eval mode set on the device: caches built there
    cpu = measure_layerwise(net.eval(), x, "C4")
    dev = measure_layerwise(twin.eval(), x.to(DEVICE), "C4")
    assert [(r.layer, r.measure) for r in dev] == [(r.layer, r.measure) for r in cpu]
    for a, b in zip(dev, cpu):
        assert abs(a.value - b.value) <= 1e-5 * abs(b.value) + 1e-6, (a, b)


def test_decision_boundaries_on_cuda_equal_cpu():
    from glassbox.interpret import decision_boundaries

    torch.manual_seed(3)
    head = nn.Sequential(
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 24),
        nn.ReLU(),
        nn.Linear(24, 5),
    ).eval()
    alpha = torch.randn(64, 6, 4, 4)
    cpu = decision_boundaries(head, alpha)
    dev = decision_boundaries(copy.deepcopy(head).to(DEVICE), alpha.to(DEVICE))
    assert dev.weight.device.type == torch.device(DEVICE).type
    assert torch.equal(dev.pos_class.cpu(), cpu.pos_class)
    assert torch.equal(dev.neg_class.cpu(), cpu.neg_class)
    assert _rel(dev.weight, cpu.weight) <= 1e-5 and _rel(dev.bias, cpu.bias) <= 1e-5


def test_scsc_bool_on_cuda_selects_what_packed_selects_on_cpu():
    """Representative interpretations of a float64 model (no sign flips from round-off): the
    ``bool`` backend on CUDA picks the same boundaries and covers the same images as the
    ``packed`` backend on the CPU."""
    from glassbox.interpret import RepresentativeInterpreter

    torch.manual_seed(0)
    model = (
        nn.Sequential(
            nn.Sequential(
                nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
            ),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 24),
            nn.ReLU(),
            nn.Linear(24, 4),
        )
        .double()
        .eval()
    )
    g = torch.Generator().manual_seed(1)
    images = torch.randn(400, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits = model(images)
        model[-1].bias -= logits.mean(0)  # every class predicted
    cpu = RepresentativeInterpreter(model, images, backend="packed").cover_all(k=2)
    dev = RepresentativeInterpreter(
        copy.deepcopy(model).to(DEVICE), images.to(DEVICE), backend="bool"
    ).cover_all(k=2)
    assert sorted(dev) == sorted(cpu) and len(cpu) >= 2
    for cls in cpu:
        assert len(dev[cls]) == len(cpu[cls])
        for a, b in zip(dev[cls], cpu[cls]):
            assert a.seed_index == b.seed_index
            assert torch.equal(a.covered.cpu(), b.covered.cpu())
            assert torch.equal(a.seed_sides.cpu(), b.seed_sides.cpu())
            assert _rel(a.boundaries.weight, b.boundaries.weight) <= 1e-12


def test_separability_on_cuda_equals_cpu():
    from glassbox.analysis.separability import class_separability
    from glassbox.metrics.separability import ClassSeparability

    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 32, generator=g) + torch.randint(0, 5, (500, 1), generator=g).float()
    y = torch.randint(0, 5, (500,), generator=g)
    cpu = class_separability(x, y, 5)
    dev = class_separability(x.to(DEVICE), y.to(DEVICE), 5)
    for k in cpu:
        assert abs(dev[k] - cpu[k]) <= 1e-6 * abs(cpu[k]), (k, dev[k], cpu[k])
    metric = ClassSeparability(5).to(DEVICE)
    for part in range(0, 500, 128):  # streamed in batches, state on the device
        metric.update(x[part : part + 128].to(DEVICE), y[part : part + 128].to(DEVICE))
    assert metric.sums.device.type == torch.device(DEVICE).type
    for k, v in metric.compute().items():
        assert abs(float(v) - cpu[k]) <= 1e-6 * abs(cpu[k]), k


def test_pca_fit_on_cuda_equals_cpu():
    """The default model's start-up step on the GPU: Reduction.fit on CUDA features."""
    from glassbox.models.reduction import Reduction

    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(5)) @ torch.randn(16, 16)
    cpu, dev = Reduction(16, 6), Reduction(16, 6).to(DEVICE)
    cpu.fit(x)
    dev.fit(x.to(DEVICE))
    assert dev.linear.weight.device.type == torch.device(DEVICE).type
    assert _rel(dev.linear.weight, cpu.linear.weight) <= 1e-5
    assert _rel(dev.linear.bias, cpu.linear.bias) <= 1e-5
