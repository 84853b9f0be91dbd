"""One Result type and one writer: files, W&B-like tables/images, TensorBoard figures, CSV scalars."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from glassbox.errors import AnalysisInputError
from glassbox.results import Result, write_result
from helpers import RecordingLogger


class TensorBoardLike:
    """Only log_metrics and an ``experiment`` with add_image (like Lightning's TensorBoardLogger)."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict, int]] = []
        self.images: dict[str, tuple] = {}
        outer = self

        class Experiment:
            def add_image(self, tag, image, global_step=None, dataformats="CHW"):
                outer.images[tag] = (image.shape, global_step, dataformats)

        self.experiment = Experiment()

    def log_metrics(self, metrics, step=None):
        self.metrics.append((dict(metrics), step))


def figure() -> Figure:
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def sample() -> Result:
    r = Result("demo")
    r.add_scalar("conv1", "error", value=0.25)
    r.add_scalar("conv1", "skipped", value=float("nan"))  # not a loggable number
    r.add_table("table", [{"layer": "conv1", "error": 0.25}, {"layer": "fc", "error": math.nan}],
                file="demo", formats=("csv", "json", "md"))  # fmt: skip
    r.add_table("hidden", pd.DataFrame({"a": [1]}), file="hidden", log=False)
    r.add_figure("plots", figure(), file="first", caption="first")
    r.add_figure("plots", figure(), file="second", caption="second")
    r.add_document("meta", {"value": math.inf, "list": [1.0, math.nan]})
    r.add_object("weights.pt", {"w": torch.arange(3)})
    return r


def test_one_writer_for_files_and_every_kind_of_logger(tmp_path):
    wandb_like, tb_like = RecordingLogger(), TensorBoardLike()
    files = write_result(sample(), tmp_path, [wandb_like, tb_like], step=7)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["demo.csv", "demo.json", "demo.md", "hidden.csv", "first.png",
                            "second.png", "meta.json", "weights.pt"])  # fmt: skip
    assert files["figure:plots[1]"] == tmp_path / "second.png"
    assert json.loads((tmp_path / "demo.json").read_text())[1] == {"layer": "fc", "error": None}
    assert json.loads((tmp_path / "meta.json").read_text()) == {"value": None, "list": [1.0, None]}
    assert (tmp_path / "demo.md").read_text().splitlines()[3] == "| fc |  |"
    assert torch.equal(torch.load(tmp_path / "weights.pt")["w"], torch.arange(3))
    assert (tmp_path / "first.png").read_bytes()[:4] == b"\x89PNG"
    # W&B-like: scalars, the logged table (NaN → None), both figures under one key
    assert wandb_like.history == [{"demo/conv1/error": 0.25}]
    assert wandb_like.tables == {
        "demo/table": (["layer", "error"], [["conv1", 0.25], ["fc", None]])
    }
    images, captions = wandb_like.images["demo/plots"]
    assert [p.rsplit("/", 1)[-1] for p in images] == ["first.png", "second.png"]
    assert captions == ["first", "second"]
    # TensorBoard-like: the same scalars at the same step, the figures as HWC RGB images
    assert tb_like.metrics == [({"demo/conv1/error": 0.25}, 7)]
    assert set(tb_like.images) == {"demo/plots/0", "demo/plots/1"}
    shape, step, fmt = tb_like.images["demo/plots/0"]
    assert step == 7 and fmt == "HWC" and shape[-1] == 3


def test_a_written_image_path_is_copied_and_a_bad_figure_is_one_error(tmp_path):
    src = tmp_path / "src.png"
    figure().savefig(src)
    r = Result("demo")
    r.add_figure("gallery", src, file="copy")
    write_result(r, tmp_path / "out")
    assert (tmp_path / "out" / "copy.png").read_bytes() == src.read_bytes()
    r.add_figure("bad", 42)
    with pytest.raises(
        AnalysisInputError, match="a figure must be a matplotlib Figure or an image path"
    ):
        write_result(r, tmp_path / "out2")


def test_a_callback_returns_a_result_and_the_base_class_writes_it(tmp_path):
    """The base class runs analyse() in eval mode without grad, writes the Result into
    <output_dir>/<name>/<tag>/ and logs it; the scalars are the callback's results."""
    from test_equivariance_callback import C4Classifier, tiny_data

    from glassbox.callbacks import AnalysisCallback
    from helpers import TinyModule, tiny_trainer

    class Norms(AnalysisCallback):
        name = "norms"

        def analyse(self, trainer, pl_module, tag):
            assert not torch.is_grad_enabled() and not pl_module.training
            x, _ = self.analysis_batch(trainer, pl_module)
            norms = self.network(pl_module)(x).norm(dim=1)
            result = Result(self.name)
            result.add_scalar("output", "mean_norm", value=norms.mean())
            result.add_table("table", [{"image": i, "norm": float(n)} for i, n in enumerate(norms)])
            return result

    logger = RecordingLogger()
    cb = Norms(output_dir=tmp_path, at_fit_end=True, num_images=6, on_error="raise")
    module = TinyModule(C4Classifier())
    tiny_trainer(logger, [cb], max_epochs=1, limit_train_batches=1).fit(
        module, datamodule=tiny_data()
    )
    assert module.training
    table = pd.read_csv(tmp_path / "norms" / "fit_end" / "table.csv")
    assert len(table) == 6
    assert cb.results["fit_end"] == {"norms/output/mean_norm": pytest.approx(table["norm"].mean())}
    assert (
        logger.metrics["norms/output/mean_norm"] == cb.results["fit_end"]["norms/output/mean_norm"]
    )
    assert logger.tables["norms/table"][0] == ["image", "norm"]
    status = json.loads((tmp_path / "norms" / "fit_end" / "status.json").read_text())
    assert status["status"] == "ran" and status["scalars"] == 1
