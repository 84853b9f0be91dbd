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

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from glassbox.callbacks.base import SPLITS, AnalysisCallback, log_image, log_table
from glassbox.errors import AnalysisInputError
from glassbox.interpret import CAM_METHODS, Interpretation, RepresentativeInterpreter
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
from glassbox.interpret.split import default_layer, split_model


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

    def analyse(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> dict[str, float]:
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

        out = self.out_dir(tag)
        self._write(out, interpreter, by_class, table, suites, consistency)
        galleries = self._galleries(out, interpreter, by_class, ref_x, dm)
        rows = [[p, m, r["AD"], r["AI"]] for p, t in suites.items() for m, r in t.items()]
        log_table(trainer, f"interpretation/{tag}/ad_ai", ["protocol", "method", "AD", "AI"], rows)
        if galleries:
            log_image(
                trainer, f"interpretation/{tag}/galleries", galleries, [p.stem for p in galleries]
            )
        scalars = self._scalars(interpreter, by_class, its, table)
        for protocol, t in suites.items():
            for method, row in t.items():
                for measure, value in row.items():
                    scalars[f"interpretation/{protocol}/{method}/{measure}"] = float(value)
        for name, value in consistency.items():
            scalars[f"interpretation/{name}"] = value
        return scalars

    def _scalars(self, interpreter, by_class, its: list[Interpretation], table) -> dict[str, float]:
        def mean(values):
            values = [v for v in values if v == v]  # drop NaN (no held-out image covered)
            return float(sum(values) / len(values)) if values else float("nan")

        counts = interpreter.class_counts()
        class_cov = []
        for c, group in by_class.items():
            covered = set()
            for it in group:
                covered.update(
                    i for i in it.covered.tolist() if int(interpreter.predictions[i]) == c
                )
            class_cov.append(len(covered) / counts[c])
        s = {
            "interpretation/num_interpretations": float(len(its)),
            "interpretation/num_boundaries": mean([len(it.boundaries) for it in its]),
            "interpretation/coverage": mean([it.coverage for it in its]),
            "interpretation/precision": mean([it.precision for it in its]),
            "interpretation/class_coverage": mean(class_cov),
            "interpretation/heldout_coverage": mean([it.heldout["coverage"] for it in its]),
            "interpretation/heldout_precision": mean([it.heldout["precision"] for it in its]),
        }
        for method, row in table.items():
            s[f"interpretation/{method}/AD"] = row["AD"]
            s[f"interpretation/{method}/AI"] = row["AI"]
        return s

    # ------------------------------------------------------------------ files
    def _write(self, out: Path, interpreter, by_class, table, suites, consistency) -> None:
        records = [it.summary() for c in sorted(by_class) for it in by_class[c]]
        meta = {
            "layer": interpreter.layer,
            "feature_shape": list(interpreter.feature_shape),
            "reference_split": self.reference_split,
            "num_reference": len(interpreter.features),
            "held_out_split": self.split,
            "num_candidates": self.num_candidates,
            "delta": self.delta,
            "interpretations": records,
        }
        (out / "interpretations.json").write_text(json.dumps(_json_safe(meta), indent=2))
        (out / "evaluation.json").write_text(
            json.dumps(
                _json_safe(
                    {
                        "keep_fraction": self.keep_fraction,
                        "layer": interpreter.layer,
                        "protocol": self.protocols[0],
                        "methods": table,
                        "reuse_k": self.reuse_k,
                        "keep_fractions": self.keep_fractions,
                        "road_percentiles": self.road_percentiles,
                        "protocols": suites,
                        **consistency,
                    }
                ),
                indent=2,
            )
        )
        torch.save(
            [
                {
                    "class": it.cls,
                    "seed_index": it.seed_index,
                    "weight": it.boundaries.weight.cpu(),
                    "bias": it.boundaries.bias.cpu(),
                    "pos_class": it.boundaries.pos_class.cpu(),
                    "neg_class": it.boundaries.neg_class.cpu(),
                    "seed_sides": it.seed_sides.cpu(),
                    "feature_shape": it.boundaries.feature_shape,
                }
                for c in sorted(by_class)
                for it in by_class[c]
            ],
            out / "boundaries.pt",
        )

    def _galleries(self, out: Path, interpreter, by_class, ref_x, dm) -> list[Path]:
        if len(interpreter.feature_shape) != 3 or self.max_galleries <= 0:
            return []
        from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

        # first interpretation of every class, then the second ones, ...
        depth = max(len(v) for v in by_class.values())
        order = [(c, j) for j in range(depth) for c in sorted(by_class) if j < len(by_class[c])]
        paths = []
        for c, j in order[: self.max_galleries]:
            it = by_class[c][j]
            ranked, dist = interpreter.rank(it)
            idx = ranked[: self.gallery_size + 1].cpu()  # the seed ranks first (Dist 0, covered)
            covered = torch.zeros(len(dist), dtype=torch.bool)
            covered[it.covered] = True
            maps = interpreter.heatmaps(
                it, features=interpreter.features[idx.to(interpreter.features.device)]
            ).cpu()
            grid = _gallery_grid(_display(ref_x[idx].cpu(), dm), maps)
            labels = [
                "seed"
                if i == it.seed_index
                else f"{'cov' if covered[i] else 'unc'} {float(dist[i]):.2g}"
                for i in idx.tolist()
            ]
            # One axes holding a composed grid: far cheaper to draw than an axes per image.
            h, w = grid.shape[0] // 2, grid.shape[1] / len(idx)
            fig = Figure(figsize=(1.3 * len(idx), 2.9))
            ax = fig.subplots()
            ax.imshow(grid, interpolation="nearest")
            ax.set_xticks([w * (k + 0.5) for k in range(len(idx))], labels, fontsize=7)
            ax.set_yticks([h * 0.5, h * 1.5], ["image", "RI map"], fontsize=7)
            ax.tick_params(length=0)
            ax.set_title(
                f"class {c} interpretation {j}: |P|={len(it.boundaries)}, coverage {it.coverage:.2f}, "
                f"precision {it.precision:.2f} (ranked by Dist, covered first)",
                fontsize=8,
            )
            path = out / f"gallery_class{c}_{j}.png"
            fig.savefig(path, dpi=100)
            paths.append(path)
        return paths


def _json_safe(obj):
    """NaN (e.g. held-out precision when no held-out image is covered) → null."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


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


def _gallery_grid(images: torch.Tensor, maps: torch.Tensor, pad: int = 2):
    """Row 1: the images; row 2: the heat maps (jet) blended over the grey images."""
    from matplotlib import colormaps

    n, h, w, _ = images.shape
    rgb = images.expand(-1, -1, -1, 3) if images.shape[-1] == 1 else images[..., :3]
    heat = torch.from_numpy(colormaps["jet"](maps.numpy())[..., :3]).float()
    grey = rgb.mean(-1, keepdim=True).expand(-1, -1, -1, 3)
    blend = 0.5 * grey + 0.5 * heat
    grid = torch.ones(2 * h + 3 * pad, n * (w + pad) + pad, 3)
    for k in range(n):  # a handful of tiles
        x0 = pad + k * (w + pad)
        grid[pad : pad + h, x0 : x0 + w] = rgb[k]
        grid[2 * pad + h : 2 * pad + 2 * h, x0 : x0 + w] = blend[k]
    return grid.numpy()


def _display(images: torch.Tensor, dm) -> torch.Tensor:
    """(N, H, W, C) images in [0, 1] for plotting (un-normalised when mean/std are known)."""
    mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
    x = images.float()
    if mean is not None and std is not None:
        x = x * torch.as_tensor(std).reshape(1, -1, 1, 1) + torch.as_tensor(mean).reshape(
            1, -1, 1, 1
        )
    else:
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.clamp(0, 1).permute(0, 2, 3, 1)
