"""Bad-input suite: configs, data, checkpoints and the analysis APIs.

Every case asserts ONE clear error whose message names the cause and the fix, and that nothing a
finished run already wrote (checkpoints, metrics.json, metrics.csv) is changed. The config cases
run the pipeline *inside* that run's directory, as a user re-running with a typo would.
``docs/troubleshooting.md`` is drawn from this table; regenerate it with
``GLASSBOX_BAD_INPUT_TABLE=table.md pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import EVAL_FAST, FAST, compose
from glassbox import pipeline
from glassbox.config.errors import one_line_errors
from glassbox.models.module import CHECKPOINT_KEY
from glassbox.runtime.checkpoints import load_model

TINY = [
    "model.net.widths=[2,2,4]",
    "model.net.group_order=4",
    "model.net.reduced_dim=4",
    "model.net.classifier_hidden=[8]",
    "+model.pca_fit_samples=128",
]
TABLE: list[tuple[str, str, str]] = []  # (area, input, message)


# --------------------------------------------------------------------------- a finished run
@dataclass
class Run:
    dir: Path
    scratch: Path  # bad files are made here, outside the run directory

    @property
    def last(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    run_dir = tmp_path_factory.mktemp("finished_run")
    pipeline.train(compose("train", [*FAST, *TINY], run_dir))
    for name in ("checkpoints/last.ckpt", "metrics.json", "csv/metrics.csv"):
        assert (run_dir / name).is_file(), name
    yield Run(run_dir, tmp_path_factory.mktemp("scratch"))
    out = os.environ.get("GLASSBOX_BAD_INPUT_TABLE")
    if out:
        rows = ["| area | input | message |", "|---|---|---|"]
        rows += [f"| {a} | `{i}` | {m.replace('|', '/')} |" for a, i, m in TABLE]
        Path(out).write_text("\n".join(rows) + "\n")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- actions
def train_in_run(*overrides: str, tiny: bool = True) -> Callable[[Run], None]:
    def act(r: Run) -> None:
        with one_line_errors():  # as train.py does: a composition error is one line too
            cfg = compose("train", [*FAST, *(TINY if tiny else []), *overrides], r.dir)
        pipeline.run(cfg, pipeline.train)

    return act


def evaluate(make_ckpt: Callable[[Run], str | None], *overrides: str) -> Callable[[Run], None]:
    def act(r: Run) -> None:
        ckpt = make_ckpt(r)
        with one_line_errors():
            cfg = compose(
                "evaluate",
                [*EVAL_FAST, f"ckpt_path={ckpt if ckpt else 'null'}", *overrides],
                r.dir / "eval",
            )
        pipeline.run(cfg, pipeline.evaluate)

    return act


def _truncated(r: Run) -> str:
    data = r.last.read_bytes()
    (r.scratch / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    return str(r.scratch / "truncated.ckpt")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _with_payload(r: Run) -> str:
    ckpt = torch.load(r.last, weights_only=True)
    ckpt["callbacks"] = {"Evil": _Payload(r.scratch / "pwned.txt")}
    torch.save(ckpt, r.scratch / "payload.ckpt")
    return str(r.scratch / "payload.ckpt")


def _plain_tensors(r: Run) -> str:
    torch.save({"weights": torch.zeros(3)}, r.scratch / "plain.pt")
    return str(r.scratch / "plain.pt")


def _foreign_lightning(r: Run) -> str:
    ckpt = torch.load(r.last, weights_only=True)
    del ckpt[CHECKPOINT_KEY]
    torch.save(ckpt, r.scratch / "foreign.ckpt")
    return str(r.scratch / "foreign.ckpt")


def _reshaped(r: Run) -> str:
    ckpt = torch.load(r.last, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("classifier.0.weight"))
    ckpt["state_dict"][key] = torch.zeros(3, 3)
    torch.save(ckpt, r.scratch / "reshaped.ckpt")
    return str(r.scratch / "reshaped.ckpt")


def api(fn: Callable[[Run], object]) -> Callable[[Run], None]:
    return lambda r: fn(r) and None


def _net(r: Run):
    return load_model(r.last).net


def _images(n: int = 4, channels: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, 32, 32, generator=torch.Generator().manual_seed(0))


def _layerwise(**kwargs):
    def call(r: Run):
        from glassbox.equivariance import measure_layerwise

        args = {"images": _images(), **kwargs}
        return measure_layerwise(_net(r), args.pop("images"), **args)

    return call


def _split_unknown(r: Run):
    from glassbox.interpret import split_model

    return split_model(_net(r).sequential(), "block9")


def _split_sigmoid(r: Run):
    from glassbox.interpret import split_model

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 2))
    return split_model(model, "1")


def _separability_float_labels(r: Run):
    from glassbox.metrics.separability import ClassSeparability

    return ClassSeparability(num_classes=3).update(
        torch.randn(6, 4), torch.tensor([0.0, 1, 2, 0, 1, 2])
    )


def _optimized_metric(r: Run):
    cfg = compose("train", [*FAST, "optimized_metric=val/accuracy"], r.scratch / "om")
    return pipeline.optimized_metric(cfg, {"val/acc": 0.5, "val/loss": 1.2})


def _analysis_split(r: Run):
    cfg = compose("train", [*FAST], r.scratch / "dm")
    return pipeline.build_datamodule(cfg).analysis_batch(split="holdout")


@dataclass
class Case:
    area: str
    input: str
    act: Callable[[Run], None]
    cause: str  # regexes the message must match
    fix: str
    error: type[BaseException] = (
        SystemExit  # pipeline.run turns user errors into SystemExit("error: ...")
    )
    key: str | None = None  # the config key the line must start with ("error: <key>...")


CASES = [
    # ----------------------------------------------------------------- configs
    Case(
        "config",
        "model=resnet",
        train_in_run("model=resnet"),
        r"Could not find 'model/resnet'",
        r"Available options in 'model':\s+alexnet\s+glassbox",
        key="model",
    ),
    Case(
        "config",
        "model.net.gspace=hex",
        train_in_run("model.net.gspace=hex"),
        r"Invalid value 'hex'",  # rejected by the schema's enum while Hydra composes
        r"expected one of \[rot, fliprot\]",
        key="model.net.gspace",
    ),
    Case(
        "config",
        "model.net.kernel_sizes=[4,5,5]",
        train_in_run("model.net.kernel_sizes=[4,5,5]"),
        r"model.net.kernel_sizes has the even size 4",
        r"use odd sizes",
    ),
    Case(
        "config",
        "model.net.widths=[8,16]",
        train_in_run("model.net.widths=[8,16]"),
        r"widths \(2\), kernel_sizes \(3\) and pool_after \(3\)",
        r"same length: one entry per representation block",
    ),
    Case(
        "config",
        "model.net.reduced_dim=64",
        train_in_run("model.net.reduced_dim=64"),
        r"reduced_dim=64 must be between 1 and the representation size 4",
        r"lower model.net.reduced_dim",
    ),
    Case(
        "config",
        "model.net.reduction=svd",
        train_in_run("model.net.reduction=svd"),
        r"Invalid value 'svd'",
        r"expected one of \[pca, linear\]",
        key="model.net.reduction",
    ),
    Case(
        "config",
        "data.image_size=30",
        train_in_run("data.image_size=30"),
        r"image_size=30 cannot be taken",
        r"change data.image_size",
    ),
    Case(
        "config",
        "model.net.num_classes=5",
        train_in_run("model.net.num_classes=5"),
        r"model.net.num_classes=5 does not match the data \(10\)",
        r"remove the model.net.num_classes override",
    ),
    Case(
        "config",
        "+model.net.depth=3",
        train_in_run("+model.net.depth=3"),
        r"model.net.depth is not an option of GlassBoxNet",
        r"remove that override or fix its spelling \(options: in_channels",
    ),
    Case(
        "config",
        "logger=wandb logger.wandb.mode=sometimes",
        train_in_run("logger=wandb", "logger.wandb.mode=sometimes"),
        r"logger.wandb.mode='sometimes' is not a W&B mode",
        r"set it to one of auto, online, offline, disabled",
    ),
    Case(
        "config",
        "trainer=slurm trainer.plugins.1.requeue_signal=SIGINT",
        train_in_run("trainer=slurm", "trainer.plugins.1.requeue_signal=SIGINT"),
        r"requeue_signal='SIGINT' is not a signal SLURM sends",
        r"use SIGUSR1 \(with #SBATCH --signal=USR1@90\)",
    ),
    Case(
        "config",
        "data.batch_size=0",
        train_in_run("data.batch_size=0"),
        r"data.batch_size=0 is not a positive integer",
        r"set e.g. data.batch_size=64",
    ),
    Case(
        "config",
        "optimized_metric=val/accuracy",
        api(_optimized_metric),
        r"optimized_metric='val/accuracy' was not logged",
        r"set optimized_metric to one of the logged metrics: val/acc, val/loss",
        ValueError,
    ),
    # --- issue: typed configs. Each was a traceback, silently accepted, or Hydra's multi-line
    # "Error in call to target" report; BAD_CONFIGS runs the same inputs through train.py.
    Case(
        "config",
        "trainer.max_epochs=abc",
        train_in_run("trainer.max_epochs=abc"),
        r"Value 'abc' of type 'str' could not be converted",
        r"to Integer",
        key="trainer.max_epochs",
    ),
    Case(
        "config",
        "seed=abc",
        train_in_run("seed=abc"),
        r"Value 'abc' of type 'str' could not be converted",
        r"to Integer",
        key="seed",
    ),
    Case(
        "config",
        "data.rotation.mode=spin",
        train_in_run("data.rotation.mode=spin"),
        r"Invalid value 'spin'",
        r"expected one of \[random, fixed\]",
        key="data.rotation.mode",
    ),
    Case(
        "config",
        "model.optimizer.lr=-1",
        train_in_run("model.optimizer.lr=-1"),
        r"model.optimizer.lr=-1.0 must be > 0",
        r"set e.g. model.optimizer.lr=0.001",
        key="model.optimizer.lr",
    ),
    Case(
        "config",
        "callbacks.equivariance.group=Z4",
        train_in_run("callbacks.equivariance.group=Z4"),
        r"unknown group 'Z4'",
        r"use 'C<n>' \(rotations\), 'D<n>'",
        key="callbacks.equivariance",
    ),
    Case(
        "config",
        "callbacks.equivariance.layers=[nope]",
        train_in_run("callbacks.equivariance.layers=[nope]"),
        r"unknown layer name\(s\) \['nope'\] for GlassBoxNet",
        r"valid names are: representation, representation.block1",
        key="callbacks.equivariance",
    ),
    Case(
        "config",
        "trainer=gpu (no GPU)",
        lambda r: (
            pytest.skip("a GPU is present") if torch.cuda.is_available() else None,
            train_in_run("trainer=gpu")(r),
        ),
        r"(?i)gpu",
        r"(?i)gpu|cuda",
        key="trainer",
    ),
    # an optimizer argument the schema does not type: the optimizer's own check, at build time
    Case(
        "config",
        "model.optimizer._target_=torch.optim.SGD +model.optimizer.momentum=-1",
        train_in_run("model.optimizer._target_=torch.optim.SGD", "+model.optimizer.momentum=-1"),
        r"Invalid momentum value: -1",
        r"model.optimizer: ",
        key="model.optimizer",
    ),
    # ----------------------------------------------------------------- data
    Case(
        "data",
        "data.name=imagenet",
        train_in_run("data.name=imagenet"),
        r"unknown dataset 'imagenet'",
        r"choose one of digits, shapes, mnist",
    ),
    Case(
        "data",
        "data=mnist (no files, no network)",
        train_in_run("data=mnist"),
        r"mnist is not under .*/data",
        r"Set data.download=true to fetch it \(needs network\), or point data.root at",
    ),
    Case(
        "data",
        "data.classes=[3]",
        train_in_run("data.classes=[3]"),
        r"data.classes=\[3\] selects fewer than two classes",
        r"give at least two labels",
    ),
    Case(
        "data",
        "data.classes=[3,3]",
        train_in_run("data.classes=[3,3]"),
        r"data.classes=\[3, 3\] repeats a label",
        r"list each class once",
    ),
    Case(
        "data",
        "data.classes=[3,12]",
        train_in_run("data.classes=[3,12]"),
        r"data.classes has labels \[12\]",
        r"valid labels are 0..9",
    ),
    Case(
        "data",
        "data.num_classes=5",
        train_in_run("data.num_classes=5"),
        r"data.num_classes=5 but 'digits' .* has 10 classes",
        r"leave data.num_classes to its default interpolation",
    ),
    Case(
        "data",
        "data.rotation.split=sideways",
        train_in_run("data.rotation.split=sideways"),
        r"Invalid value 'sideways'",
        r"expected one of \[none, train, test, both\]",
        key="data.rotation.split",
    ),
    Case(
        "data",
        "data.rotation.split=test data.rotation.mode=spin",
        train_in_run("data.rotation.split=test", "data.rotation.mode=spin"),
        r"Invalid value 'spin'",
        r"expected one of \[random, fixed\]",
        key="data.rotation.mode",
    ),
    Case(
        "data",
        "data.val_fraction=0.9",
        train_in_run("data.val_fraction=0.9"),
        r"data.val_fraction and data.test_fraction",
        r"must be in \(0, 1\) and sum to < 1",
    ),
    Case(
        "data",
        "data.channels=2",
        train_in_run("data.channels=2"),
        r"'digits' has 1 channel\(s\) and cannot be converted to data.channels=2",
        r"use data.channels=1",
    ),
    Case(
        "data",
        "datamodule.analysis_batch(split='holdout')",
        api(_analysis_split),
        r"unknown split 'holdout'",
        r"use train, val or test",
        ValueError,
    ),
    # ----------------------------------------------------------------- checkpoints
    Case(
        "checkpoint",
        "train.py model=alexnet ckpt_path=<glassbox last.ckpt>",
        lambda r: train_in_run("model=alexnet", f"ckpt_path={r.last}", tiny=False)(r),
        r"cannot resume from .*last.ckpt: it holds a 'glassbox' model that does not fit the configured one",
        r"Resume with the run's original overrides",
    ),
    Case(
        "checkpoint",
        "train.py ckpt_path=<run>/checkpoints/lst.ckpt",
        lambda r: train_in_run(f"ckpt_path={r.dir / 'checkpoints' / 'lst.ckpt'}")(r),
        r"lst.ckpt does not exist; checkpoints there: epoch_000.ckpt, last.ckpt",
        r"Pass ckpt_path= a .ckpt file",
    ),
    Case(
        "checkpoint",
        "evaluate.py (no ckpt_path)",
        evaluate(lambda r: None),
        r"no checkpoint given",
        r"pass ckpt_path=<run dir>/checkpoints/last.ckpt",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<run dir>",
        evaluate(lambda r: str(r.dir)),
        r"is a directory, not a checkpoint file",
        r"pass one of its checkpoints: checkpoints/epoch_000.ckpt, checkpoints/last.ckpt",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<truncated file>",
        evaluate(_truncated),
        r"is corrupt or truncated",
        r"Use another checkpoint of the run .* or retrain",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<checkpoint carrying pickled code>",
        evaluate(_with_payload),
        r"carries pickled objects .* refused for safety \(Unsupported global: GLOBAL \w*\.?exec\)",
        r"Only load checkpoints written by glassbox",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<torch.save of a plain dict>",
        evaluate(_plain_tensors),
        r"is not a Lightning checkpoint \(no 'state_dict'\)",
        r"pass a .ckpt written by train.py",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<Lightning checkpoint of another framework>",
        evaluate(_foreign_lightning),
        r"was not written by glassbox \(it has no stored run config\)",
        r"pass a checkpoint from a glassbox train.py run",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<weights of another shape>",
        evaluate(_reshaped),
        r"does not fit the model its config describes .*size mismatch",
        r"pass a checkpoint of this model or retrain",
    ),
    Case(
        "checkpoint",
        "evaluate.py ckpt_path=<glassbox ckpt> model_name=alexnet",
        evaluate(lambda r: str(r.last), "model_name=alexnet"),
        r"holds a 'glassbox' model but model=alexnet was requested",
        r"drop the model override",
    ),
    # ----------------------------------------------------------------- analysis APIs
    Case(
        "analysis",
        "measure_layerwise(net, images.long())",
        api(_layerwise(images=_images().long())),
        r"images must be floating point \(normalised\), got torch.int64",
        r"convert with images.float\(\)",
        TypeError,
    ),
    Case(
        "analysis",
        "measure_layerwise(net, images, group='Z4')",
        api(_layerwise(group="Z4")),
        r"unknown group 'Z4'",
        r"use 'C<n>' \(rotations\), 'D<n>' \(rotations and mirrors\)",
        ValueError,
    ),
    Case(
        "analysis",
        "measure_layerwise(net, images, layers=['block9'])",
        api(_layerwise(layers=["block9"])),
        r"unknown layer name\(s\) \['block9'\] for GlassBoxNet",
        r"valid names are: .*representation.block1",
        ValueError,
    ),
    Case(
        "analysis",
        "measure_layerwise(net, 3-channel images)",
        api(_layerwise(images=_images(channels=3))),
        r"GlassBoxNet expects images \(B, 1, H, W\), got \(\d+, 3, 32, 32\)",
        r"make data.channels and model.net.in_channels agree",
        ValueError,
    ),
    Case(
        "analysis",
        "split_model(net.sequential(), 'block9')",
        api(_split_unknown),
        r"unknown layer 'block9'",
        r"valid layer names: group_pool",
        ValueError,
    ),
    Case(
        "analysis",
        "split_model(<head with Sigmoid>, '1')",
        api(_split_sigmoid),
        r"module '2' \(Sigmoid\) after the split layer is not piecewise linear",
        r"split at a later layer, replace it",
        TypeError,
    ),
    Case(
        "analysis",
        "ClassSeparability.update(features, float labels)",
        api(_separability_float_labels),
        r"labels must be integer class indices, got dtype torch.float32",
        r"pass y.long\(\)",
        TypeError,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}:{c.input}" for c in CASES])
def test_bad_input_gives_one_clear_error_and_damages_nothing(run: Run, case: Case):
    before = _digests(run.dir)
    with pytest.raises(case.error) as caught:
        case.act(run)
    err = caught.value
    msg = str(err.code) if isinstance(err, SystemExit) else str(err)
    if isinstance(err, SystemExit):  # what train.py / evaluate.py print: one line, no traceback
        assert msg.startswith("error: ") and "\n" not in msg and "Traceback" not in msg, msg
        assert "Error in call to target" not in msg and "full_key" not in msg, msg
        msg = msg[len("error: ") :]
    if case.key is not None:
        assert re.match(rf"{re.escape(case.key)}\b", msg), f"{msg!r} does not start with {case.key}"
    assert re.search(case.cause, msg), f"cause {case.cause!r} not in: {msg}"
    assert re.search(case.fix, msg), f"fix {case.fix!r} not in: {msg}"
    after = _digests(run.dir)
    assert {k: after.get(k) for k in before} == before, "a file of the finished run changed"
    assert not [k for k in after if k.endswith(".tmp")]
    assert not (run.scratch / "pwned.txt").exists()
    TABLE.append((case.area, case.input, " ".join(msg.split())))


# --------------------------------------------------------------------------- W&B without network
def test_wandb_without_network_falls_back_to_offline_quickly_with_one_notice(
    tmp_path, monkeypatch, caplog
):
    import wandb

    from glassbox.runtime import loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # fake credentials: "auto" would go online
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.unreachable.test")
    looked_up = []

    def dead_dns(host, *args, **kwargs):  # a name lookup that hangs, as with a dead DNS server
        looked_up.append(host)
        time.sleep(20)
        raise socket.gaierror("Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", dead_dns)
    for mode in ("auto", "online"):
        caplog.clear()
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="glassbox.runtime.loggers"):
            logger = loggers.wandb_logger(
                mode=mode, save_dir=tmp_path / mode, project="glassbox-test"
            )
        elapsed = time.perf_counter() - start
        assert looked_up[-1] == "wandb.unreachable.test"
        assert elapsed < 2.0 + 1.5, elapsed  # the 2 s probe budget, not the 20 s lookup
        assert logger._wandb_init["mode"] == "offline"
        notices = [r.getMessage() for r in caplog.records]
        assert len(notices) == 1 and "\n" not in notices[0], notices
        assert "wandb.unreachable.test is not reachable; logging offline instead" in notices[0]
        assert "wandb sync" in notices[0]
    assert len(looked_up) == 2
    # the offline run really starts, and writes under save_dir only
    start = time.perf_counter()
    try:
        run = logger.experiment
        assert run.settings.mode == "offline"
        logger.log_metrics({"val/acc": 0.5}, step=0)
    finally:
        wandb.finish()
    assert time.perf_counter() - start < 60
    assert list((tmp_path / "online" / "wandb").glob("offline-run-*"))
    # offline or disabled modes never probe the network
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert loggers.resolve_mode("auto") == "offline" and len(looked_up) == 2


def test_suite_covers_every_area_with_at_least_twenty_cases():
    assert len(CASES) >= 20
    assert {c.area for c in CASES} == {"config", "data", "checkpoint", "analysis"}
