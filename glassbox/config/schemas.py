"""Typed schemas of the config groups glassbox owns (Hydra structured configs).

Each dataclass is stored in Hydra's ConfigStore under ``schema/...`` (see :func:`register`) and
named first in the defaults list of the YAML files it types (``- /schema/data@_here_``), so the
YAML values are merged onto it: a value of the wrong type, a key the schema does not have or an
enum value outside its set is rejected while Hydra composes the config, by OmegaConf's own
message naming the key (and the allowed values).

Every field's ``metadata["help"]`` is its one-line meaning; ``metadata["range"]`` (optional)
is checked once at start-up by :func:`glassbox.config.checks.check_ranges` ("positive",
"non_negative", "fraction" = (0, 1], "open_fraction" = (0, 1), "probability" = [0, 1)).
``python -m glassbox.config.docs`` writes docs/configuration.md from these fields.

The analysis-callback schemas are not written by hand: :func:`callback_schema` builds them from
the callback classes' ``__init__`` signatures and docstrings, so a constructor argument added
to a callback is a config key at once.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

List = typing.List  # noqa: UP006 - OmegaConf's structured configs need typing.List
Dict = typing.Dict  # noqa: UP006


def key(help: str, default: Any = MISSING, range: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its meaning (``help``) and an optional range checked at start-up."""
    metadata = {"help": help, **({"range": range} if range else {})}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


class StrEnum(str, enum.Enum):
    """An enum whose members compare, hash and print as their (string) values."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


# --------------------------------------------------------------------------- data
class RotationSplit(StrEnum):
    none = "none"
    train = "train"
    test = "test"
    both = "both"


class Resize(StrEnum):
    bilinear = "bilinear"
    bicubic = "bicubic"
    nearest = "nearest"
    area = "area"


class RotationMode(StrEnum):
    random = "random"
    fixed = "fixed"


@dataclass
class RotationConfig:
    """Rotation of the images of some splits ("trained upright, tested rotated")."""

    split: RotationSplit = key(
        "which splits are rotated: none, train (and val), test, or both", RotationSplit.none
    )
    mode: RotationMode = key(
        "random: a uniform angle in 0-360° per image; fixed: every image by `angle`",
        RotationMode.random,
    )
    angle: float = key("degrees, for mode=fixed", 0.0)


@dataclass
class DataConfig:
    """``glassbox.data.GlassBoxDataModule``: the dataset, its preprocessing, split and loading."""

    _target_: str = key("the datamodule class", "glassbox.data.GlassBoxDataModule")
    name: str = key(
        "the source: digits (embedded), shapes (generated), mnist, fashion_mnist, cifar10 "
        "(torchvision)",
        "digits",
    )
    root: str = key("where torchvision datasets are stored / looked for", "${paths.data_dir}")
    download: bool = key("download a torchvision dataset that is not under root (network)", False)
    image_size: int = key("side of the square images the model sees (pixels)", 32, "positive")
    padding: int = key(
        "zero padding on each side: images are resized to image_size - 2*padding first",
        4,
        "non_negative",
    )
    resize: Resize = key(
        "interpolation that resizes the source images: bilinear, bicubic, nearest or area",
        Resize.bilinear,
    )
    channels: int = key("channels the model sees (grey ↔ RGB conversion)", 1, "positive")
    mean: List[float] = key("per-channel normalisation mean (one value, or one per channel)")
    std: List[float] = key("per-channel normalisation std", range="positive")
    total_classes: int | None = key(
        "classes of the source (shapes: how many shape kinds it generates)", None, "positive"
    )
    classes: List[int] | None = key(
        "a subset of the source's labels, relabelled 0..k-1 in this order (e.g. [3,8]); null: all",
        None,
    )
    num_classes: int | None = key(
        "classes the model predicts: follows classes / total_classes, leave it", None, "positive"
    )
    rotation: RotationConfig = key("rotation of some splits", default_factory=RotationConfig)
    num_samples: int = key("shapes only: how many images to generate", 2000, "positive")
    val_fraction: float = key("validation share of the seeded split", 0.1, "open_fraction")
    test_fraction: float = key(
        "test share of the seeded split (sources without an official test split)",
        0.2,
        "open_fraction",
    )
    batch_size: int = key("images per batch", 64, "positive")
    num_workers: int = key("DataLoader worker processes", 0, "non_negative")
    seed: int | None = key("seed of the split and of generated data", "${seed}")


# --------------------------------------------------------------------------- model
class GSpace(StrEnum):
    rot = "rot"
    fliprot = "fliprot"


class Reduction(StrEnum):
    pca = "pca"
    linear = "linear"


class Pooling(StrEnum):
    max = "max"
    max_antialiased = "max_antialiased"
    avg = "avg"


class AlexNetStem(StrEnum):
    small = "small"
    imagenet = "imagenet"


@dataclass
class GlassBoxNetConfig:
    """``glassbox.models.glassbox_net.GlassBoxNet``: e2cnn representation → reduction → classifier."""

    _target_: str = key("the net class", "glassbox.models.glassbox_net.GlassBoxNet")
    in_channels: int = key("input channels (follows data.channels)", "${data.channels}", "positive")
    image_size: int = key("input side (follows data.image_size)", "${data.image_size}", "positive")
    num_classes: int = key("logits (follows data.num_classes)", "${data.num_classes}", "positive")
    gspace: GSpace = key(
        "symmetry group: rot (C_N rotations) or fliprot (D_N rotations and flips)", GSpace.rot
    )
    group_order: int = key("N: rotations by multiples of 360°/N", 8, "positive")
    widths: List[int] = key("regular fields per representation block", [8, 16, 32], "positive")
    kernel_sizes: List[int] = key("odd kernel size per block", [5, 5, 5], "positive")
    pool_after: List[bool] = key("2×2 pooling after each block", [True, True, False])
    pooling: Pooling = key(
        "the 2×2 pooling: max, max_antialiased (stride-1 max, Gaussian blur, subsample) or avg",
        Pooling.max_antialiased,
    )
    frequencies_cutoff: float | None = key(
        "e2cnn filter basis: highest angular frequency = cutoff × ring radius "
        "(null: e2cnn's default policy)",
        None,
        "positive",
    )
    maximum_offset: int | None = key(
        "e2cnn filter basis: aliased frequencies kept for finite groups (null: all the cutoff allows)",
        None,
        "non_negative",
    )
    reduction: Reduction = key(
        "dimension reduction: pca (fitted on the training representations at fit start, refitted "
        "on the trained ones at model.pca_refit_fraction) or linear (learned)",
        Reduction.pca,
    )
    reduced_dim: int = key("dimensions after the reduction", 16, "positive")
    reduction_trainable: bool = key("pca: fine-tune the PCA map (false: frozen)", False)
    variance_threshold: float | None = key(
        "pca: keep the fewest components explaining this variance fraction (<= reduced_dim)",
        None,
        "fraction",
    )
    classifier_hidden: List[int] = key(
        "hidden ReLU layer widths of the classifier ([]: linear)", [32], "positive"
    )


@dataclass
class AlexNetConfig:
    """``glassbox.models.alexnet.AlexNet``: torchvision's AlexNet topology (5 conv + 3 FC)."""

    _target_: str = key("the net class", "glassbox.models.alexnet.AlexNet")
    in_channels: int = key("input channels (follows data.channels)", "${data.channels}", "positive")
    image_size: int = key("input side (follows data.image_size)", "${data.image_size}", "positive")
    num_classes: int = key("logits (follows data.num_classes)", "${data.num_classes}", "positive")
    stem: AlexNetStem = key(
        "small: 3×3/1 conv and 2×2 pools (32 px images); imagenet: 11×11/4 conv and 3×3/2 "
        "pools (>= 63 px)",
        AlexNetStem.small,
    )
    width_mult: float = key("multiplies every conv's channel count", 0.5, "positive")
    hidden: int = key("width of the two hidden FC layers", 512, "positive")
    pool_size: int = key("side of the adaptive average pool before the FC layers", 4, "positive")
    dropout: float = key("dropout probability of the FC layers", 0.5, "probability")
    pretrained: bool = key("load ImageNet weights where shapes match (needs network)", False)


@dataclass
class OptimizerConfig:
    """A ``_partial_`` optimizer (called with the parameters). Open: any other argument of the
    ``_target_`` class may be added (``+model.optimizer.momentum=0.9``)."""

    _target_: str = key("the optimizer class", "torch.optim.AdamW")
    _partial_: bool = key("Hydra: build a partial, called with the parameters", True)
    lr: float = key("learning rate", 0.001, "positive")
    weight_decay: float = key("weight decay", 0.0001, "non_negative")


@dataclass
class SchedulerConfig:
    """A ``_partial_`` LR scheduler (called with the optimizer, stepped per epoch); null: none.
    Open: the arguments of the ``_target_`` class."""

    _target_: str = key("the scheduler class", "torch.optim.lr_scheduler.CosineAnnealingLR")
    _partial_: bool = key("Hydra: build a partial, called with the optimizer", True)


@dataclass
class ModelConfig:
    """``glassbox.models.module.ClassificationModule``: cross-entropy training of ``net``. It
    also takes ``pca_fit_samples`` (training images that fit a PCA reduction, default 4096),
    which the model configs leave out: add it with ``+model.pca_fit_samples=N``."""

    _target_: str = key("the LightningModule", "glassbox.models.module.ClassificationModule")
    name: str = key("the model's name, stored in checkpoints and run names", MISSING)
    num_classes: int = key("classes (follows data.num_classes)", "${data.num_classes}", "positive")
    label_smoothing: float = key("label smoothing of the cross-entropy", 0.0, "probability")
    monitor: str = key("metric a plateau scheduler watches", "val/loss")
    net: Any = key("the net (model.net.*)", MISSING)
    optimizer: Any = key("the optimizer (model.optimizer.*)", MISSING)
    scheduler: Any = key("the LR scheduler (model.scheduler.*); null: constant LR", None)


@dataclass
class GlassBoxModelConfig(ModelConfig):
    """``glassbox.models.module.ClassificationModule`` with the glass-box net."""

    net: GlassBoxNetConfig = key("the glass-box net", default_factory=GlassBoxNetConfig)
    pca_refit_fraction: float | None = key(
        "pca: at the start of epoch round(f·trainer.max_epochs) (clamped to 1..max_epochs-1) refit "
        "the PCA on the trained representation, then freeze the representation (and its "
        "BatchNorm statistics) and fine-tune the classifier; null: fit once at fit start only",
        0.8,
        "open_fraction",
    )


@dataclass
class AlexNetModelConfig(ModelConfig):
    """``glassbox.models.module.ClassificationModule`` with the AlexNet net."""

    net: AlexNetConfig = key("the AlexNet net", default_factory=AlexNetConfig)


# --------------------------------------------------------------------------- trainer (open)
@dataclass
class TrainerConfig:
    """``lightning.pytorch.Trainer``. Open: every Trainer argument may be set; the keys listed
    here are the ones glassbox's trainer configs set whose type is fixed."""

    max_epochs: int | None = key("epochs to train (-1: no limit)", None)
    min_epochs: int | None = key("epochs before early stopping may stop", None, "non_negative")
    check_val_every_n_epoch: int | None = key("validate every n epochs", 1, "positive")
    log_every_n_steps: int = key("log training metrics every n steps", 50, "positive")
    gradient_clip_val: float | None = key("clip gradients at this norm (null: off)", None)
    enable_model_summary: bool = key("print the model summary at fit start", True)


# --------------------------------------------------------------------------- paths
@dataclass
class PathsConfig:
    """Where data and runs live."""

    root_dir: str = key("root of the project (the directory you run from)", "${hydra:runtime.cwd}")
    data_dir: str = key(
        "torchvision datasets are stored / looked for here", "${paths.root_dir}/data"
    )
    log_dir: str = key("run directories go under here", "${paths.root_dir}/logs")
    output_dir: str = key(
        "this run's directory (Hydra creates it): checkpoints, metrics.json, reports",
        "${hydra:runtime.output_dir}",
    )


# --------------------------------------------------------------------------- top level
@dataclass
class RotatedTestConfig:
    """Extra test passes after the upright one."""

    random: bool = key(
        "also test on the test split rotated by random angles (test_rotated/*)", False
    )
    angles: List[float] = key("also test at these fixed angles in degrees (test_rot<angle>/*)", [])


@dataclass
class RunConfig:
    """Keys every entry point has."""

    task_name: str = key("names the run directory logs/<task_name>/... and the log file", MISSING)
    tags: List[str] = key("tags of the run (loggers)", ["dev"])
    seed: int | None = key("seed of everything (null: not seeded)", 12345)
    rotated_test: RotatedTestConfig = key(
        "extra rotated test passes", default_factory=RotatedTestConfig
    )
    # the groups: typed by their own schemas, or open where Lightning owns them
    callbacks: Any = key("callbacks group: name → callback config (null entries are skipped)", None)
    logger: Any = key("logger group: name → logger config; null: no logger", None)
    trainer: Any = key("trainer group: the Lightning Trainer's arguments", MISSING)
    paths: PathsConfig = key("paths group", default_factory=PathsConfig)


@dataclass
class TrainConfig(RunConfig):
    """``conf/train.yaml``: ``python train.py``."""

    ckpt_path: str | None = key(
        'resume from this checkpoint, or "last" for <run dir>/checkpoints/last.ckpt', None
    )
    test: bool = key("test the best checkpoint after fitting", True)
    optimized_metric: str | None = key(
        "the metric train.py returns to sweepers (Optuna, ...); null: none", "val/acc"
    )
    data: Any = key("data group", MISSING)
    model: Any = key("model group", MISSING)


@dataclass
class EvaluateConfig(RunConfig):
    """``conf/evaluate.yaml``: ``python evaluate.py ckpt_path=...``."""

    ckpt_path: str | None = key("the checkpoint to evaluate", MISSING)
    model_name: str | None = key(
        "assert the checkpoint holds this model (glassbox, alexnet); null: any", None
    )
    data_overrides: Any = key(
        "merged into the checkpoint's data config, e.g. data_overrides={batch_size: 256}", None
    )
    data: Any = key("data config (default: the checkpoint's)", None)


# --------------------------------------------------------------------------- analysis callbacks
def _omegaconf_type(hint: Any) -> Any:
    """The closest type OmegaConf validates for a constructor's type hint (``Any`` if none)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (bool, int, float, str):
        return hint
    if hint is Path:
        return str
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if set(rest) <= {str, Path}:
            inner = str
        elif len(rest) == 1:
            inner = _omegaconf_type(rest[0])
        else:
            return Any
        return Optional[inner] if type(None) in args and inner is not Any else inner  # noqa: UP045
    if origin in (list, tuple, Sequence, typing.Sequence) and args:
        item = args[0]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return Any
        return List[item] if item in (bool, int, float, str) else Any
    return Any


def _docstring_args(cls: type) -> dict[str, str]:
    """``name → meaning`` from the Google-style ``Args:`` sections of ``cls`` and its bases
    (``a, b:`` and ``a / b:`` share a meaning; ``...; c: text`` starts another entry)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = (klass.__doc__ and inspect.cleandoc(klass.__doc__) or "").splitlines()
        start = next((i for i, ln in enumerate(lines) if re.match(r"\s*Args\b", ln)), None)
        if start is None:
            continue
        while start < len(lines) and not lines[start].rstrip().endswith(":"):
            start += 1  # a header that spans lines: "Args (besides ...\n   ...):"
        entries: list[tuple[list[str], str]] = []
        for line in lines[start + 1 :]:
            if not line.strip():
                break
            m = re.match(r"\s{2,8}(\w+(?:\s*(?:,|/)\s*\w+)*):\s+(.*)", line)
            if m and len(line) - len(line.lstrip()) <= 8:
                entries.append((re.split(r"\s*(?:,|/)\s*", m.group(1)), m.group(2)))
            elif entries:
                names, text = entries[-1]
                entries[-1] = (names, f"{text} {line.strip()}")
        for names, text in entries:
            parts = re.split(r";\s*(\w+):\s+", text)
            for name in names:
                helps[name] = parts[0]
            for name, more in zip(parts[1::2], parts[2::2], strict=True):
                helps[name] = more
    return {k: " ".join(v.replace("``", "`").split()) for k, v in helps.items()}


def callback_schema(cls: type) -> type:
    """A dataclass with ``_target_`` and one field per ``cls.__init__`` argument: its type
    hint mapped to an OmegaConf type, its default, and its meaning from the docstring."""
    target = f"{cls.__module__}.{cls.__qualname__}"
    hints = typing.get_type_hints(cls.__init__)
    helps = _docstring_args(cls)
    fields: list[tuple] = [("_target_", str, key("the callback class", target))]
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        typ = _omegaconf_type(hints.get(name, Any))
        default = param.default
        if default is inspect.Parameter.empty:
            default = MISSING
        elif isinstance(default, Path):
            default = str(default)
        elif isinstance(default, tuple | list):
            default = list(default) if typ is not Any else default
        elif isinstance(default, Mapping):
            default = dict(default)
        if typ is Any and isinstance(default, tuple):
            default = list(default)
        fields.append((name, typ, key(helps.get(name, ""), default, _RANGES.get(name))))
    return dataclasses.make_dataclass(
        f"{cls.__name__}Config", fields, namespace={"__doc__": f"``{target}``."}
    )


# Ranges of analysis-callback arguments, by argument name (the constructors check the rest).
_RANGES = {
    "every_n_epochs": "non_negative",
    "num_images": "positive",
    "fit_fraction": "open_fraction",
    "keep_fraction": "fraction",
    "pca_threshold": "fraction",
    "batch_size": "positive",
    "num_reference": "positive",
    "num_candidates": "positive",
    "interpretations_per_class": "positive",
    "gallery_size": "non_negative",
    "max_galleries": "non_negative",
    "memory_budget_mb": "positive",
    "ridge": "non_negative",
    "min_fit_ratio": "non_negative",
}

# callbacks.<name> → the analysis callback class (imported lazily by :func:`analysis_callbacks`)
ANALYSIS_CALLBACKS = {
    "equivariance": "glassbox.callbacks.equivariance.EquivarianceCallback",
    "separability": "glassbox.callbacks.separability.SeparabilityCallback",
    "interpretation": "glassbox.callbacks.interpretation.RepresentativeInterpretationCallback",
}


def analysis_callbacks() -> dict[str, type]:
    """``callbacks.<name>`` → schema dataclass of every analysis callback."""
    import importlib

    out = {}
    for name, path in ANALYSIS_CALLBACKS.items():
        module, cls = path.rsplit(".", 1)
        out[name] = callback_schema(getattr(importlib.import_module(module), cls))
    return out
