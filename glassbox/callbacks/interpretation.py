"""Representative interpretations of the network: boundaries, coverage, galleries, AD/AI.

A thin adapter around :mod:`glassbox.interpret`. It builds ``interpretations_per_class``
representative interpretations per predicted class from reference images of
``reference_split``, measures their coverage and precision there and on held-out images of
``split``, scores RI heat maps against the grad-cam package's Grad-CAM, Grad-CAM++ and
Score-CAM (AD/AI on the held-out images, same layer), and writes into
``<output_dir>/interpretation/<tag>/``:

* ``interpretations.json``: one record per interpretation (class, seed, |P|, δ, coverage,
  precision, held-out coverage/precision, covered reference indices, boundary class pairs);
* ``evaluation.json``: the AD/AI table;
* ``boundaries.pt``: the boundaries (w, b, classes) and seeds' sides of every interpretation;
* ``gallery_class<c>_<j>.png``: the seed, the top-ranked covered images and their heat maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from glassbox.callbacks.base import SPLITS, AnalysisCallback
from glassbox.errors import AnalysisInputError
from glassbox.interpret import CAM_METHODS, RepresentativeInterpreter
from glassbox.interpret.consistency import rotation_consistency
from glassbox.interpret.faithfulness import (
    DEFAULT_KEEP_FRACTIONS,
    DEFAULT_ROAD_PERCENTILES,
    check_keep_fractions,
    check_road_percentiles,
    faithfulness_suite,
)
from glassbox.interpret.protocols import (
    check_k,
    check_protocols,
    per_image_protocol,
    reuse_protocol,
)
from glassbox.interpret.results import display_images, interpretation_result
from glassbox.interpret.split import default_layer, split_model
from glassbox.results import Result


class RepresentativeInterpretationCallback(AnalysisCallback):
    """Representative interpretations (Lam et al., ICCV 2021) of the net at the end of fit.

    Args (besides :class:`AnalysisCallback`'s; ``split``/``num_images`` pick the held-out
    images used for held-out coverage and AD/AI):
        layer: ψ layer, a ``named_modules()`` name of the network, which must be an
            ``nn.Sequential`` (nested ones are flattened) or have a ``sequential()`` method
            returning one; the head G after it must be piecewise linear (``None``: the last
            convolution and its ReLU; AlexNet → ``features.11``, glass-box → ``group_pool``,
            the invariant maps before pooling).
        reference_split / num_reference: images the interpretations are built from.
        interpretations_per_class: k, interpretations per predicted class.
        num_candidates: |Q| per interpretation.
        delta: max covered images of other predicted classes (``None``: smallest feasible).
        backend: ``packed`` or ``bool`` greedy.
        baselines: grad-cam package methods to compare with (``gradcam``, ``gradcam++``,
            ``scorecam``); empty to skip AD/AI of the baselines.
        keep_fraction: fraction of most important pixels kept for AD/AI (the paper's 0.2).
        protocols: comparison protocols, ``reuse`` (the paper's: explanations computed on
            each interpretation's seed and reused on k new images) and/or ``per_image``
            (each baseline explains every image from the image itself).
        reuse_k: k, new images per interpretation in the reuse protocol (at most
            ``num_images``).
        keep_fractions: extra keep fractions of the faithfulness suite (AD/AI at each).
        road_percentiles: percentiles of the grad-cam package's ROAD MoRF/LeRF averages
            (``null`` skips ROAD).
        road_images: ROAD on the first this many images of each method (``null``: all; the
            package's imputer solves a sparse system per image and percentile, slow on CPUs).
        deletion_steps: steps of the deletion/insertion curves.
        rotation_consistency: also measure whether rotated images keep their interpretation
            and whether heat maps rotate with the image.
        gallery_size: ranked images per gallery; max_galleries: galleries written (first
            interpretation of each class first).
        batch_size: forward batch size.
    """

    name = "interpretation"
    needs_grad = True  # the grad-cam baselines backpropagate

    def __init__(
        self,
        output_dir: str | Path = ".",
        every_n_epochs: int = 0,
        at_fit_end: bool = True,
        at_test_end: bool = False,
        num_images: int = 64,
        split: str = "val",
        seed: int = 0,
        layer: str | None = None,
        reference_split: str = "train",
        num_reference: int = 1000,
        interpretations_per_class: int = 2,
        num_candidates: int = 50,
        delta: int | None = None,
        backend: str = "packed",
        baselines: Sequence[str] = CAM_METHODS,
        keep_fraction: float = 0.2,
        protocols: Sequence[str] = ("reuse", "per_image"),
        reuse_k: int = 10,
        keep_fractions: Sequence[float] = DEFAULT_KEEP_FRACTIONS,
        road_percentiles: Sequence[float] | None = DEFAULT_ROAD_PERCENTILES,
        road_images: int | None = 20,
        deletion_steps: int = 10,
        rotation_consistency: bool = True,
        gallery_size: int = 8,
        max_galleries: int = 10,
        batch_size: int = 256,
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
        if reference_split not in SPLITS:
            raise AnalysisInputError(
                f"reference_split must be one of {', '.join(SPLITS)}, got {reference_split!r}"
            )
        unknown = [b for b in baselines if b not in CAM_METHODS]
        if unknown:
            raise AnalysisInputError(
                f"unknown baselines {unknown}; choose from {', '.join(CAM_METHODS)}"
            )
        if interpretations_per_class < 1:
            raise AnalysisInputError(
                f"interpretations_per_class must be >= 1, got {interpretations_per_class}"
            )
        if num_reference < 2:
            raise AnalysisInputError(f"num_reference must be >= 2, got {num_reference}")
        if backend not in ("packed", "bool"):
            raise AnalysisInputError(f"backend must be 'packed' or 'bool', got {backend!r}")
        if not 0 < keep_fraction <= 1:
            raise AnalysisInputError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        self.protocols = check_protocols(protocols)
        if "reuse" in self.protocols and not 1 <= reuse_k <= num_images:
            check_k(reuse_k, num_images)
        self.reuse_k = reuse_k
        self.keep_fractions = check_keep_fractions(keep_fractions)
        self.road_percentiles = (
            None if road_percentiles is None else check_road_percentiles(road_percentiles)
        )
        if deletion_steps < 1:
            raise AnalysisInputError(f"deletion_steps must be >= 1, got {deletion_steps}")
        self.deletion_steps = deletion_steps
        if road_images is not None and road_images < 1:
            raise AnalysisInputError(f"road_images must be >= 1 or null, got {road_images}")
        self.road_images = road_images
        self.rotation_consistency = rotation_consistency
        self.layer = layer
        self.reference_split, self.num_reference = reference_split, num_reference
        self.k = interpretations_per_class
        self.num_candidates, self.delta, self.backend = num_candidates, delta, backend
        self.baselines = list(baselines)
        self.keep_fraction = keep_fraction
        self.gallery_size, self.max_galleries = gallery_size, max_galleries
        self.batch_size = batch_size

    # ------------------------------------------------------------------ analysis
    def check_model(self, net) -> None:
        # unknown layer, a model that cannot be split, a head that is not piecewise linear:
        # one line naming the module, before training starts
        split_model(net, self.layer or default_layer(net))

    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> Result:
        dm = trainer.datamodule
        net = self.network(pl_module)
        device = pl_module.device
        ref_x, ref_y = self.images(trainer, pl_module, self.reference_split, self.num_reference)
        held_x, _ = self.analysis_batch(trainer, pl_module)
        interpreter = RepresentativeInterpreter(
            net,
            ref_x.to(device),
            layer=self.layer,
            reference_labels=ref_y,
            num_candidates=self.num_candidates,
            delta=self.delta,
            backend=self.backend,
            seed=self.seed,
            batch_size=self.batch_size,
        )
        by_class = interpreter.cover_all(k=self.k)
        its = [it for c in sorted(by_class) for it in by_class[c]]
        interpreter.evaluate_heldout(its, held_x)
        fill = _black(dm, ref_x)
        model = interpreter.split.model
        suites: dict[str, dict[str, dict[str, float]]] = {}
        for protocol in self.protocols:
            if protocol == "reuse":
                sets, _ = reuse_protocol(
                    interpreter, its, ref_x, held_x, k=self.reuse_k, methods=self.baselines,
                    seed=self.seed,
                )  # fmt: skip
            else:
                sets, info = per_image_protocol(
                    interpreter, its, held_x, methods=self.baselines, seed=self.seed
                )
            suites[protocol] = faithfulness_suite(
                model, sets, keep=self.keep_fraction, keeps=self.keep_fractions, fill=fill,
                road_percentiles=self.road_percentiles, steps=self.deletion_steps,
                road_images=self.road_images,
                seed=self.seed, batch_size=self.batch_size,
            )  # fmt: skip
            if protocol == "per_image":
                suites[protocol]["RI"]["covered"] = 100.0 * float(info["covered"].float().mean())
        consistency = (
            rotation_consistency(interpreter, its, held_x)
            if self.rotation_consistency and held_x.shape[-1] == held_x.shape[-2]
            else {}
        )
        # the paper's table (AD/AI at keep_fraction) of the first protocol
        table = {m: {"AD": r["AD"], "AI": r["AI"]} for m, r in suites[self.protocols[0]].items()}

        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        result = interpretation_result(
            interpreter,
            by_class,
            table,
            display_images(ref_x.cpu(), mean, std) if self.max_galleries > 0 else None,
            meta={
                "reference_split": self.reference_split,
                "held_out_split": self.split,
                "num_candidates": self.num_candidates,
                "delta": self.delta,
            },
            evaluation={
                "keep_fraction": self.keep_fraction,
                "protocol": self.protocols[0],
                "reuse_k": self.reuse_k,
                "keep_fractions": self.keep_fractions,
                "road_percentiles": self.road_percentiles,
                "protocols": suites,
                **consistency,
            },
            gallery_size=self.gallery_size,
            max_galleries=self.max_galleries,
        )
        # every protocol's suite: interpretation/<protocol>/<method>/<measure>
        rows = []
        for protocol, suite in suites.items():
            for method, row in suite.items():
                rows.append({"protocol": protocol, "method": method, **row})
                for measure, value in row.items():
                    result.scalars[result.key(protocol, method, measure)] = float(value)
        result.add_table("faithfulness", rows)
        for name, value in consistency.items():
            result.scalars[result.key(name)] = float(value)
        return result


def _black(dm, images: torch.Tensor) -> torch.Tensor | float:
    """The normalised value of a black pixel (what removed pixels become for AD/AI)."""
    mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
    if mean is None or std is None:
        return 0.0
    mean = torch.as_tensor(mean, dtype=images.dtype).flatten()
    std = torch.as_tensor(std, dtype=images.dtype).flatten()
    if mean.numel() == 1 and images.shape[1] > 1:
        mean, std = mean.expand(images.shape[1]), std.expand(images.shape[1])
    return (-mean / std).to(images.device)
