"""Separability report: per-layer class separability, analytical classifiers, PCA and pose.

A thin adapter around :mod:`glassbox.analysis`: it reads the train and evaluation splits (the
given data, the datamodule's tensors or datasets, or the split dataloaders' datasets), measures
every layer of the network (and the raw pixels), writes
tables and plots into ``<output_dir>/separability/<tag>/`` and logs them to W&B.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from glassbox.analysis.classifiers import CLASSIFIERS, make_classifier, probe_table
from glassbox.analysis.layers import (
    INPUT,
    collect_dataset_features,
    dataset_inputs,
    is_glassbox,
    iter_batches,
    layer_dims,
    layer_groups,
    resolve_layers,
)
from glassbox.analysis.pca import pca_report
from glassbox.analysis.pose import CLASS_SOURCES, pose_accuracy, rotation_order_of
from glassbox.analysis.results import separability_result
from glassbox.analysis.separability import layerwise_separability, separability_table
from glassbox.callbacks.base import AnalysisCallback
from glassbox.errors import AnalysisInputError
from glassbox.results import Result

log = logging.getLogger(__name__)


class SeparabilityCallback(AnalysisCallback):
    """Per-layer class separability of the net (and raw pixels) with analytical classifiers.

    Args (besides :class:`AnalysisCallback`'s; ``split`` is the evaluation split):
        layers: layers to report: ``named_modules()`` names of the network, or
            ``{row name: named_modules() name}`` (``None``: every glass-box block +
            invariant/reduced/logits, or every conv/linear layer of a plain CNN, read after its
            activation, with the row names ``conv1``…, ``fc1``…, ``logits``).
        include_input: report the raw pixels too.
        max_train_samples: training images used to fit the classifiers, the PCA report and
            the pose templates (a seeded subset; ``None``: all).
        max_eval_samples: images of ``split`` to measure on (``None``: all).
        classifiers: any of ``logreg``, ``svm``, ``lda``; empty to skip them (the
            separability then streams and stores no features).
        probe_max_features: wider layers are PCA-projected (fitted on train) to this many axes
            before the classifiers.
        pca_threshold: variance fraction whose dimension the PCA report picks.
        pose: estimate the orientation of 90°-rotated test images (glass-box nets whose
            rotation order is a multiple of 4, on upright data).
        pose_class_source: which class picks the pose template: ``predicted``, ``true``, ``none``.
        batch_size: forward batch size.
        memory_budget_mb: cap on stored features at once; wider layer sets run in groups.
        model_name: name in the tables (default: the module's ``name``, else the net's class).
    """

    name = "separability"

    def __init__(
        self,
        output_dir: str | Path = ".",
        every_n_epochs: int = 0,
        at_fit_end: bool = False,
        at_test_end: bool = True,
        num_images: int = 64,
        split: str = "test",
        seed: int = 0,
        layers: Sequence[str] | Mapping[str, str] | None = None,
        include_input: bool = True,
        max_train_samples: int | None = 2000,
        max_eval_samples: int | None = 1000,
        classifiers: Sequence[str] = CLASSIFIERS,
        probe_max_features: int | None = 512,
        pca_threshold: float | None = 0.95,
        pose: bool = True,
        pose_class_source: str = "predicted",
        batch_size: int = 256,
        memory_budget_mb: float = 512.0,
        model_name: str | None = None,
        data: Any = None,
        image_key: str | None = None,
        label_key: str | None = None,
        model_attr: str | None = None,
        on_error: str = "skip",
    ) -> None:
        super().__init__(
            output_dir=output_dir, every_n_epochs=every_n_epochs, at_fit_end=at_fit_end,
            at_test_end=at_test_end, num_images=num_images, split=split, seed=seed, data=data,
            image_key=image_key, label_key=label_key, model_attr=model_attr, on_error=on_error,
        )  # fmt: skip
        for clf in classifiers:
            make_classifier(clf)  # unknown names fail at instantiation, not after training
        if pose_class_source not in CLASS_SOURCES:
            raise AnalysisInputError(
                f"pose_class_source must be one of {', '.join(CLASS_SOURCES)}, got {pose_class_source!r}"
            )
        if pca_threshold is not None and not 0 < pca_threshold <= 1:
            raise AnalysisInputError(
                f"pca_threshold must be a fraction in (0, 1] or null, got {pca_threshold}"
            )
        for arg, value in (
            ("max_train_samples", max_train_samples),
            ("max_eval_samples", max_eval_samples),
        ):
            if value is not None and value < 2:
                raise AnalysisInputError(f"{arg} must be >= 2 or null (all samples), got {value}")
        self.layers = (
            dict(layers)
            if isinstance(layers, Mapping)
            else (list(layers) if layers is not None else None)
        )
        self.include_input = include_input
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.classifiers = list(classifiers)
        self.probe_max_features = probe_max_features
        self.pca_threshold = pca_threshold
        self.pose, self.pose_class_source = pose, pose_class_source
        self.batch_size, self.memory_budget_mb = batch_size, memory_budget_mb
        self.model_name = model_name

    needs_labels = True

    def check_model(self, net) -> None:
        resolve_layers(net, self.layers)  # unknown names: one line listing the valid ones

    @staticmethod
    def _upright(datamodule) -> bool:
        rotation = getattr(datamodule, "rotation", None) or {}
        return rotation.get("split", "none") == "none"

    # ------------------------------------------------------------------ analysis
    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> Result:
        net = self.network(pl_module)
        dm = trainer.datamodule
        model = self.model_label(pl_module, net)
        num_classes = getattr(dm, "num_classes", None) or getattr(net, "num_classes", None)
        train = self.split_data(trainer, pl_module, "train", self.max_train_samples)
        evaluation = self.split_data(trainer, pl_module, self.split, self.max_eval_samples)
        resolve_layers(net, self.layers)  # fail early, with the list of valid names
        common = {"batch_size": self.batch_size, "seed": self.seed}

        start = time.perf_counter()
        if self.classifiers:
            sep_rows, probe_rows = self._with_probes(
                net, train, evaluation, model, num_classes, common
            )
        else:
            sep_rows = layerwise_separability(
                net, evaluation, self.layers, num_classes=num_classes, include_input=self.include_input,
                max_samples=self.max_eval_samples, model_name=model, **common,
            )  # fmt: skip
            probe_rows = []
        log.info(
            "separability: %d layers measured in %.1f s", len(sep_rows), time.perf_counter() - start
        )
        pca = pose = None
        if is_glassbox(net):
            start = time.perf_counter()
            pca = self._pca(net, train, common)
            if self.pose:
                pose = self._pose(net, dm, train, evaluation)
            log.info(
                "separability: PCA report and pose readout in %.1f s", time.perf_counter() - start
            )
        return separability_result(sep_rows, probe_rows, pca, pose)

    def _with_probes(self, net, train, evaluation, model, num_classes, common):
        """Separability and classifiers from stored features, one group of layers at a time
        (each group's features fit in ``memory_budget_mb``)."""
        resolved = resolve_layers(net, self.layers)
        example, _ = next(iter_batches(evaluation, batch_size=2))
        dims = layer_dims(net, example, resolved, include_input=False)
        n = (self.max_train_samples or _length(train)) + (
            self.max_eval_samples or _length(evaluation)
        )
        probe = {"model": model, "max_features": self.probe_max_features, "seed": self.seed}
        sep_rows, probe_rows = [], []
        if self.include_input:
            xtr, ytr = dataset_inputs(train, max_samples=self.max_train_samples, **common)
            xev, yev = dataset_inputs(evaluation, max_samples=self.max_eval_samples, **common)
            sep_rows += separability_table({INPUT: xev}, yev, num_classes, model=model)
            probe_rows += probe_table(
                {INPUT: xtr}, ytr, {INPUT: xev}, yev, self.classifiers, **probe
            )
        for group in layer_groups(dims, n, self.memory_budget_mb):
            spec = {name: resolved[name] for name in group}
            kw = {"include_input": False, **common}
            ftr, ytr = collect_dataset_features(
                net, train, spec, max_samples=self.max_train_samples, **kw
            )
            fev, yev = collect_dataset_features(
                net, evaluation, spec, max_samples=self.max_eval_samples, **kw
            )
            sep_rows += separability_table(fev, yev, num_classes, model=model)
            probe_rows += probe_table(ftr, ytr, fev, yev, self.classifiers, **probe)
        return sep_rows, probe_rows

    def _pca(self, net, train, common) -> dict:
        linear = getattr(getattr(net, "reduction", None), "linear", None)
        feats, _ = collect_dataset_features(
            net,
            train,
            ["invariant"],
            include_input=False,
            max_samples=self.max_train_samples,
            **common,
        )
        return pca_report(
            feats["invariant"], self.pca_threshold, getattr(linear, "weight", None)
        ).to_dict()

    def _pose(self, net, dm, train, evaluation) -> dict | None:
        try:
            n = rotation_order_of(net)
        except ValueError:
            return None
        if (
            n % 4
            or not self._upright(dm)
            or not isinstance(train, tuple)
            or not isinstance(evaluation, tuple)
        ):
            log.info(
                "separability: pose readout skipped (needs rotation order %% 4 == 0 and upright tensor data)"
            )
            return None
        (xtr, ytr), (xev, yev) = (
            _subset(train, self.max_train_samples, self.seed),
            _subset(evaluation, self.max_eval_samples, self.seed),
        )
        return pose_accuracy(
            net,
            xtr,
            ytr,
            xev,
            yev,
            class_source=self.pose_class_source,
            rotation_order=n,
            batch_size=self.batch_size,
        )


def _length(data) -> int:
    return int(data[0].shape[0]) if isinstance(data, tuple) else len(data)


def _subset(data: tuple, max_samples: int | None, seed: int):
    import torch

    x, y = data
    if max_samples is None or max_samples >= x.shape[0]:
        return x, y
    idx = (
        torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        .sort()
        .values
    )
    return x[idx], y[idx]
