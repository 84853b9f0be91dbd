"""The Python API on a trained run: glassbox.load_run, the README's notebook snippet (executed
as printed), evaluate.py on another data config, and the callback example of docs/extending.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT, compose
from glassbox import pipeline
from glassbox.errors import CheckpointError, ConfigError
from glassbox.probe import LayerSelectionError

TINY_GLASSBOX = [
    "model.net.widths=[2,3,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A small C4 glass-box model trained for 2 short epochs on digits: a run directory with checkpoints
    and metrics.json, as train.py leaves it."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose(
        "train",
        [*FAST, *TINY_GLASSBOX, "model.net.widths=[4,4,8]", "model.optimizer.lr=0.02",
         "trainer.max_epochs=2", "trainer.limit_train_batches=20", "data.batch_size=32",
         "callbacks.equivariance=null"],
        out,
    )  # fmt: skip
    metrics = pipeline.train(cfg)
    assert metrics["test/acc"] > 0.2  # learned something (chance: 0.1)
    return out


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- load_run example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its load_run example"
    return match.group(1)


def test_readme_snippet_is_short_and_runs_on_a_trained_run(tiny_run, capsys):
    code = readme_snippet()
    assert len(code.strip().splitlines()) <= 10
    assert '"logs/train/runs/<time>"' in code
    printed = []  # what the snippet prints, as objects (and printed as usual)

    def record(*args, **kwargs):
        printed.append(args[0] if len(args) == 1 else args)
        print(*args, **kwargs)

    code = code.replace("logs/train/runs/<time>", str(tiny_run))
    exec(compile(code, "README.md", "exec"), {"print": record})
    equivariance, separability, interpretations = printed
    assert capsys.readouterr().out.count("\n") >= 3
    # equivariance under C4: the glass-box blocks follow the known e2cnn action and the output
    # is invariant, to float round-off
    table = equivariance.set_index("layer")
    assert list(table.index) == ["representation.block1", "representation.block2",
                                 "representation.block3", "group_pool", "pool", "output"]  # fmt: skip
    assert table["equivariance"].dropna().max() < 1e-5 and table.loc["output", "invariance"] < 1e-5
    assert table.loc["output", "consistency"] == 1.0
    # separability per layer, pixels first; the logits separate the classes best
    ratios = {row["layer"]: row["ratio"] for row in separability}
    assert list(ratios) == [
        "pixels",
        "block1",
        "block2",
        "block3",
        "invariant",
        "reduced",
        "logits",
    ]
    assert ratios["logits"] > ratios["pixels"] > 0
    # interpretations: one per predicted class, each covering part of its class
    assert len(interpretations) >= 2
    for cls, (it,) in interpretations.items():
        assert it.cls == cls and 0 < it.coverage <= 1 and f"coverage={it.coverage:.2f}" in repr(it)


def test_load_run_takes_a_run_dir_or_a_checkpoint(tiny_run):
    import glassbox

    module, dm = glassbox.load_run(tiny_run)
    best = json.loads((tiny_run / "metrics.json").read_text())["best_ckpt"]
    module2, _ = glassbox.load_run(Path(best))
    assert not module.training and dm.num_classes == 10 and dm.name == "digits"
    x, _ = dm.analysis_batch("test", n=8)
    assert torch.equal(module(x), module2(x))
    _, rotated = glassbox.load_run(tiny_run, data_overrides={"rotation": {"split": "test"}})
    assert rotated.rotation["split"] == "test"
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        glassbox.load_run(tiny_run.parent)


def _eval_cfg(tmp_path, ckpt, *overrides):
    from conftest import EVAL_FAST

    fast = [*EVAL_FAST, "callbacks.separability=null", "callbacks.equivariance=null"]
    return compose("evaluate", [*fast, f"ckpt_path={ckpt}", *overrides], tmp_path)


def test_evaluate_on_another_compatible_data_config(tiny_run, tmp_path):
    best = json.loads((tiny_run / "metrics.json").read_text())["best_ckpt"]
    upright = pipeline.evaluate(_eval_cfg(tmp_path / "a", best, "rotated_test.random=false"))
    cfg = _eval_cfg(
        tmp_path / "b", best, "data=digits", "data.batch_size=32", "data.rotation.split=test",
        "data.rotation.mode=fixed", "data.rotation.angle=90", "rotated_test.random=false",
    )  # fmt: skip
    rotated = pipeline.evaluate(cfg)
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert saved["data"] == "digits"
    # the C4 glass-box model is exactly invariant to 90°: the rotated test split scores the same
    # (same test images: the run's batch size, as limit_test_batches counts batches)
    assert rotated["test/acc"] == pytest.approx(upright["test/acc"], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=shapes"], r"data=shapes does not fit checkpoint .*trained on digits: shapes has 4 classes instead of 10"),
        (["data=cifar10"], r"data=cifar10 does not fit .*: cifar10 has 3 channel\(s\) instead of 1; .*\(e.g. override data.channels=1\)"),
        (["data=digits", "data.image_size=16"], r"has 16 pixels per side instead of 32"),
    ],
)  # fmt: skip
def test_evaluate_on_incompatible_data_names_the_mismatch(tiny_run, tmp_path, overrides, message):
    best = json.loads((tiny_run / "metrics.json").read_text())["best_ckpt"]
    with pytest.raises(ConfigError, match=message) as err:
        pipeline.evaluate(_eval_cfg(tmp_path, best, *overrides))
    assert "\n" not in str(err.value)


def test_the_extending_guide_callback_runs(tmp_path):
    """The NormCallback of docs/extending.md, exactly as printed, on a glass-box run's module."""
    text = (ROOT / "docs" / "extending.md").read_text()
    code = re.search(
        r"```python\n(from glassbox.callbacks import AnalysisCallback.*?)```", text, re.S
    )
    namespace: dict = {}
    exec(compile(code.group(1), "extending.md", "exec"), namespace)
    import lightning.pytorch as pl

    from helpers import TensorDataModule, TinyGlassBox, TinyModule

    g = torch.Generator().manual_seed(0)
    data = {
        s: (torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 3) for s in ("train", "val")
    }
    cb = namespace["NormCallback"](output_dir=tmp_path, num_images=8)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[cb], accelerator="cpu")  # fmt: skip
    module = TinyModule(TinyGlassBox())
    trainer.fit(module, datamodule=TensorDataModule(data, num_classes=3))
    trainer.test(module, datamodule=TensorDataModule(data, num_classes=3), verbose=False)
    assert cb.results["test"]["norms/output/mean_norm"] > 0
    out = tmp_path / "norms" / "test"
    assert json.loads((out / "status.json").read_text())["status"] == "ran"
    assert (out / "norms.csv").read_text().splitlines()[0] == "layer,mean_norm"
    bad = namespace["NormCallback"](output_dir=tmp_path, layers=["nope"])
    with pytest.raises(LayerSelectionError, match=r"unknown layer name\(s\) \['nope'\]"):
        pl.Trainer(max_epochs=1, logger=False, callbacks=[bad], accelerator="cpu").fit(
            module, datamodule=TensorDataModule(data, num_classes=3)
        )
