"""Layerwise equivariance report during training and evaluation.

A thin adapter around :func:`glassbox.equivariance.measure_layerwise`: on a fixed held-out
batch it measures every default layer (or the configured ones, by ``named_modules()`` name)
of the network (see :class:`~glassbox.callbacks.base.AnalysisCallback`), logs
one scalar per (layer, measure) (the mean over the group's elements), a W&B table and the
error-vs-depth plot, and writes ``equivariance.{csv,json}``, ``equivariance_summary.csv``
and ``equivariance.png`` into ``<output_dir>/equivariance/<tag>/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from glassbox.callbacks.base import AnalysisCallback
from glassbox.equivariance import MEASURES, Workspace, get_group, measure_layerwise
from glassbox.equivariance.groups import check_exact_policy
from glassbox.equivariance.layerwise import resolve_layer_names
from glassbox.equivariance.results import equivariance_result
from glassbox.errors import AnalysisInputError, ConfigError
from glassbox.results import Result


class EquivarianceCallback(AnalysisCallback):
    """Per-layer invariance / known-action / spatial / best-fit errors, prediction consistency
    and (optionally) the Lie derivative of the network.

    Args (besides :class:`~glassbox.callbacks.base.AnalysisCallback`'s):
        group: ``"C4"`` (default: exact on square grids), ``"D4"``, ``"flip"``, ``"C8"``
            (needs ``exact`` other than ``"error"``), ``"SO2"`` (Lie derivative only).
        measures: subset of ``invariance, equivariance, spatial, best_fit, consistency,
            lie_derivative``; ``None``: every finite measure (+ Lie derivative for ``SO2``).
        layers: ``named_modules()`` names of the network plus ``"output"``; ``None``: every conv or
            equivariant block, every pooling layer and the output.
        exact: ``error`` | ``warn`` | ``interpolate``: elements the grid cannot represent.
        fit_fraction: share of the batch that fits the best-fit channel maps (the error is
            reported on the rest).
        ridge: relative ridge of the best-fit least squares (towards the identity map).
        min_fit_ratio: leave ``best_fit`` out for layers with fewer fitting rows (images ×
            positions) per channel than this (it would over-fit).
        model_name: label in the tables and plots (default: the module's ``name``, else the
            net's class).
    """

    name = "equivariance"

    def __init__(
        self,
        output_dir: str | Path = ".",
        every_n_epochs: int = 0,
        at_fit_end: bool = True,
        at_test_end: bool = True,
        num_images: int = 64,
        split: str = "val",
        seed: int = 0,
        group: str = "C4",
        measures: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        exact: str = "error",
        fit_fraction: float = 0.5,
        ridge: float = 1e-8,
        min_fit_ratio: float = 4.0,
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
        # fail at instantiation, not after an epoch of training
        self.group = get_group(group)
        check_exact_policy(exact)
        inexact = [e.name for e in self.group.elements if not e.is_exact_on(2, 2)]
        if inexact and exact == "error":
            raise ConfigError(
                f"group {self.group.name} has elements the pixel grid cannot represent exactly "
                f"({', '.join(inexact)}), and exact=error refuses them; set exact to warn or "
                "interpolate, or use C4, D4 or flip"
            )
        if measures is not None:
            measures = [measures] if isinstance(measures, str) else list(measures)
            bad = [m for m in measures if m not in MEASURES]
            if bad:
                raise AnalysisInputError(
                    f"unknown equivariance measure(s) {bad}; choose from {MEASURES}"
                )
        if not 0.0 < fit_fraction < 1.0:
            raise AnalysisInputError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
        if num_images < 2:
            raise AnalysisInputError(
                f"num_images must be >= 2 (the best-fit measure holds images out), got {num_images}"
            )
        self.measures = measures
        self.layers = None if layers is None else list(layers)
        self.exact = exact
        self.fit_fraction = fit_fraction
        self.ridge = ridge
        self.min_fit_ratio = min_fit_ratio
        self.model_name = model_name
        self._workspace = Workspace()  # scratch buffers kept between runs

    def check_model(self, net) -> None:
        if self.layers is not None:
            resolve_layer_names(net, self.layers)  # unknown names: one line listing the valid ones

    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> Result:
        x, _ = self.analysis_batch(trainer, pl_module)
        net = self.network(pl_module)
        model = self.model_label(pl_module, net)
        records = measure_layerwise(
            net,
            x,
            self.group,
            layers=self.layers,
            measures=self.measures,
            exact=self.exact,
            fit_fraction=self.fit_fraction,
            ridge=self.ridge,
            min_fit_ratio=self.min_fit_ratio,
            model_name=model,
            workspace=self._workspace,
        )
        return equivariance_result(
            records,
            title=f"{model}: layerwise equivariance, {self.group.name} ({tag})",
            caption=f"{model} {tag}",
        )
