"""Representative interpretations: (P, the images it covers) for a seed, a class, all classes.

:class:`RepresentativeInterpreter` holds a model split at a layer and a reference set
(ψ and predicted classes computed once). Each interpretation samples |Q| candidate
boundaries for its seed, computes the reference images' sides for all of them in one GEMM,
and runs the greedy SCSC. Classes are always the model's *predicted* classes, as in the
method; true labels, when given, only add a label precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from glassbox.errors import AnalysisIndexError, AnalysisInputError
from glassbox.interpret.boundaries import LinearBoundaries, logits_and_pairs
from glassbox.interpret.heatmap import interpretation_heatmaps
from glassbox.interpret.ranking import rank_by_interpretation
from glassbox.interpret.sampling import sample_candidates
from glassbox.interpret.scsc import greedy_scsc, sign_matrix
from glassbox.interpret.split import SplitModel, default_layer, split_model
from glassbox.runtime.devices import full_precision

__all__ = ["Interpretation", "RepresentativeInterpreter", "EmptyClassError"]


class EmptyClassError(AnalysisInputError):
    """No reference image is predicted as the requested class."""


@dataclass
class Interpretation:
    """One representative interpretation.

    Attributes:
        cls: the seed's predicted class.
        seed_index: the seed's index in the reference set.
        boundaries: the chosen boundaries P (oriented: ``pos_class`` = ``cls``).
        seed_sides: (|P|,) bool, the seed's side of each boundary (True: wᵀψ + b ≥ 0).
        covered: indices of the covered reference images.
        n_covered_same / n_covered_other: covered reference images of ``cls`` / of other classes.
        class_size: reference images predicted as ``cls``.
        delta / min_delta: δ used and the smallest feasible δ.
        num_candidates: |Q|.
        label_precision: fraction of covered images whose true label is ``cls`` (when labels known).
        heldout: coverage/precision on held-out images, filled by
            :meth:`RepresentativeInterpreter.evaluate_heldout`.
    """

    cls: int
    seed_index: int
    boundaries: LinearBoundaries
    seed_sides: Tensor
    covered: Tensor
    n_covered_same: int
    n_covered_other: int
    class_size: int
    delta: int
    min_delta: int
    num_candidates: int
    label_precision: float | None = None
    heldout: dict[str, float] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Covered reference images of the class / reference images of the class."""
        return self.n_covered_same / self.class_size

    @property
    def precision(self) -> float:
        """Covered reference images of the class / covered reference images."""
        return self.n_covered_same / max(1, self.n_covered_same + self.n_covered_other)

    def __repr__(self) -> str:  # short: the tensors would drown a notebook cell
        return (
            f"Interpretation(class={self.cls}, seed={self.seed_index}, |P|={len(self.boundaries)}, "
            f"coverage={self.coverage:.2f}, precision={self.precision:.2f}, "
            f"covered={len(self.covered)})"
        )

    @torch.no_grad()
    def covers(self, features: Tensor) -> Tensor:
        """(N,) bool: which images (given by ψ) lie on the seed's side of every h ∈ P."""
        sides = self.boundaries.decision_values(features.to(self.boundaries.weight.device)) >= 0
        return (sides == self.seed_sides.to(sides.device)).all(1)

    def summary(self) -> dict:
        """JSON-friendly numbers (no tensors except the small index list)."""
        return {
            "class": self.cls,
            "seed_index": self.seed_index,
            "num_boundaries": len(self.boundaries),
            "num_candidates": self.num_candidates,
            "boundary_classes": [
                [int(p), int(q)]
                for p, q in zip(
                    self.boundaries.pos_class.tolist(), self.boundaries.neg_class.tolist()
                )
            ],
            "delta": self.delta,
            "min_delta": self.min_delta,
            "class_size": self.class_size,
            "covered_same": self.n_covered_same,
            "covered_other": self.n_covered_other,
            "coverage": self.coverage,
            "precision": self.precision,
            "label_precision": self.label_precision,
            "covered": self.covered.tolist(),
            "heldout": dict(self.heldout),
        }


class RepresentativeInterpreter:
    """Build representative interpretations of ``model`` on a reference set.

    Args:
        model: an ``nn.Sequential`` or a model with ``sequential()`` (in eval mode).
        reference_images: (N, C, H, W) images the interpretations are built from.
        layer: dotted name of the ψ layer; ``None``: :func:`default_layer` (AlexNet: the ReLU
            after the last conv; glass-box: ``group_pool``, the invariant maps before pooling).
        reference_labels: optional true labels (N,), only for ``label_precision``.
        num_candidates: |Q|, candidate boundaries sampled per interpretation (paper: 50).
        delta: max covered images of other predicted classes; ``None``: smallest feasible.
        eps / eps_prime: ε, ε′ of the greedy ratio.
        backend: ``"packed"`` (bit-packed numpy greedy) or ``"bool"`` (torch bool matrices).
        seed: seeds the choice of segment end points and of seeds within a class.
        batch_size: images per forward pass.
    """

    @full_precision()  # exact arithmetic even inside a 16-mixed autocast region
    def __init__(
        self,
        model: nn.Module,
        reference_images: Tensor,
        layer: str | None = None,
        reference_labels: Tensor | None = None,
        num_candidates: int = 50,
        delta: int | None = None,
        eps: float = 1e-6,
        eps_prime: float = 1e-6,
        backend: str = "packed",
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        if backend not in ("packed", "bool"):
            raise AnalysisInputError(f"backend must be 'packed' or 'bool', got {backend!r}")
        if num_candidates < 1:
            raise AnalysisInputError(f"num_candidates must be >= 1, got {num_candidates}")
        self.layer = layer or default_layer(model)
        self.split: SplitModel = split_model(model, self.layer)
        self.split.check_head()
        if not isinstance(reference_images, Tensor) or reference_images.dim() != 4:
            shape = (
                tuple(reference_images.shape)
                if isinstance(reference_images, Tensor)
                else reference_images
            )
            raise AnalysisInputError(f"reference_images must be a (N, C, H, W) tensor, got {shape}")
        self.image_shape = tuple(reference_images.shape[1:])
        self.num_candidates = num_candidates
        self.delta = delta
        self.eps, self.eps_prime = eps, eps_prime
        self.backend = backend
        self.seed = seed
        self.batch_size = batch_size
        self.features = self.split.features(reference_images, batch_size)
        self.feature_shape = tuple(self.features.shape[1:])
        logits, _, _ = logits_and_pairs(self.split.head, self.features)
        self.predictions = logits.argmax(1)
        self.labels = (
            None
            if reference_labels is None
            else torch.as_tensor(reference_labels).to(self.predictions.device)
        )
        self._flat = self.features.reshape(len(self.features), -1)

    # ------------------------------------------------------------------ helpers
    def _check_images(self, images: Tensor) -> None:
        if (
            not isinstance(images, Tensor)
            or images.dim() != 4
            or tuple(images.shape[1:]) != self.image_shape
        ):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise AnalysisInputError(
                f"images must have shape (N, {', '.join(map(str, self.image_shape))}) like the reference "
                f"images, got {shape}"
            )

    def features_of(self, images: Tensor) -> Tensor:
        """ψ(images), after checking their shape against the reference images."""
        self._check_images(images)
        return self.split.features(images.to(self.features.device), self.batch_size)

    def predict(self, images: Tensor) -> Tensor:
        feats = self.features_of(images)
        return logits_and_pairs(self.split.head, feats)[0].argmax(1)

    def class_counts(self) -> dict[int, int]:
        vals, counts = torch.unique(self.predictions, return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}

    def _require_class(self, cls: int) -> Tensor:
        members = self.predictions == cls
        if not bool(members.any()):
            raise EmptyClassError(
                f"no reference image is predicted as class {cls} (predicted class counts: "
                f"{self.class_counts()}); add reference images the model assigns to it, or skip it"
            )
        if bool(members.all()):
            raise EmptyClassError(
                f"all reference images are predicted as class {cls}, so there is no decision boundary "
                "to sample; add reference images of other classes"
            )
        return members

    # ------------------------------------------------------------------ core
    @full_precision()  # exact arithmetic even inside a 16-mixed autocast region
    def interpret(self, seed_index: int, delta: int | None = None) -> Interpretation:
        """The representative interpretation seeded from reference image ``seed_index``."""
        n = len(self.features)
        if not 0 <= seed_index < n:
            raise AnalysisIndexError(f"seed_index must be in [0, {n}), got {seed_index}")
        cls = int(self.predictions[seed_index])
        same = self._require_class(cls)
        others = torch.nonzero(~same).squeeze(1)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + seed_index)
        pick = torch.randperm(len(others), generator=gen)[: self.num_candidates]
        ends = others[pick.to(others.device)]
        cands = sample_candidates(
            self.split.head, self.features[seed_index], cls, self.features[ends]
        )
        signs = sign_matrix(self._flat, cands, pack=self.backend == "packed")
        seed_sides = signs.row(seed_index)
        res = greedy_scsc(
            signs,
            seed_sides,
            same.cpu().numpy(),
            delta=self.delta if delta is None else delta,
            eps=self.eps,
            eps_prime=self.eps_prime,
        )
        covered = torch.from_numpy(np.flatnonzero(res.covered))
        label_precision = None
        if self.labels is not None and len(covered):
            label_precision = float(
                (self.labels[covered.to(self.labels.device)] == cls).float().mean()
            )
        sel = torch.from_numpy(res.selected)
        return Interpretation(
            cls=cls,
            seed_index=int(seed_index),
            boundaries=cands[sel.to(cands.weight.device)],
            seed_sides=torch.from_numpy(seed_sides[res.selected]),
            covered=covered,
            n_covered_same=res.n_same,
            n_covered_other=res.n_other,
            class_size=int(same.sum()),
            delta=res.delta,
            min_delta=res.min_delta,
            num_candidates=len(cands),
            label_precision=label_precision,
        )

    def cover_class(self, cls: int, k: int = 1, delta: int | None = None) -> list[Interpretation]:
        """Up to ``k`` interpretations of class ``cls``, each seeded from a reference image of
        the class that no earlier one covers (stops early once all are covered)."""
        uncovered = self._require_class(cls).cpu().clone()
        gen = torch.Generator().manual_seed(self.seed * 7919 + int(cls))
        out: list[Interpretation] = []
        for _ in range(k):
            pool = torch.nonzero(uncovered).squeeze(1)
            if len(pool) == 0:
                break
            seed_index = int(pool[torch.randint(len(pool), (1,), generator=gen)])
            interp = self.interpret(seed_index, delta=delta)
            out.append(interp)
            uncovered[interp.covered] = False
        return out

    def cover_all(
        self, k: int = 1, classes: list[int] | None = None, delta: int | None = None
    ) -> dict[int, list[Interpretation]]:
        """``k`` interpretations per class (default: every class the model predicts on the
        reference set)."""
        classes = sorted(self.class_counts()) if classes is None else [int(c) for c in classes]
        return {c: self.cover_class(c, k, delta=delta) for c in classes}

    # ------------------------------------------------------------------ held-out, ranking, maps
    def evaluate_heldout(
        self, interpretations: list[Interpretation], images: Tensor
    ) -> list[dict[str, float]]:
        """Coverage and precision of each interpretation on held-out images (by predicted
        class); also stored in ``interpretation.heldout``."""
        feats = self.features_of(images)
        preds = logits_and_pairs(self.split.head, feats)[0].argmax(1)
        out = []
        for it in interpretations:
            cov = it.covers(feats).to(preds.device)
            members = preds == it.cls
            n_cov = int(cov.sum())
            n_same = int((cov & members).sum())
            it.heldout = {
                "images": len(feats),
                "class_size": int(members.sum()),
                "covered": n_cov,
                "coverage": n_same / max(1, int(members.sum())),
                "precision": n_same / n_cov if n_cov else float("nan"),
            }
            out.append(it.heldout)
        return out

    def rank(self, interp: Interpretation, images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rank reference images (or ``images``) against ``interp``: covered first, then by Dist
        to the seed. Returns ``(order, distance)``."""
        feats = self.features if images is None else self.features_of(images)
        covered = interp.covers(feats)
        return rank_by_interpretation(
            interp.boundaries, self.features[interp.seed_index], feats, covered
        )

    def heatmaps(
        self, interp: Interpretation, images: Tensor | None = None, features: Tensor | None = None
    ) -> Tensor:
        """Heat maps (N, H, W) in [0, 1] of ``images`` under ``interp``."""
        if features is None:
            features = self.features_of(images)
        return interpretation_heatmaps(interp.boundaries, features, self.image_shape[-2:])

    def assign(
        self, interpretations: list[Interpretation], images: Tensor
    ) -> tuple[Tensor, Tensor]:
        """For each image, the interpretation that explains it: the first of its predicted
        class that covers it, else the one of its class whose seed is nearest in Dist.

        Returns ``(index into interpretations or -1 if its class has none, covered flag)``.
        """
        feats = self.features_of(images)
        preds = logits_and_pairs(self.split.head, feats)[0].argmax(1).cpu()
        n = len(feats)
        best = torch.full((n,), -1, dtype=torch.long)
        best_cost = torch.full((n,), float("inf"), dtype=torch.float64)
        covered = torch.zeros(n, dtype=torch.bool)
        for i, it in enumerate(interpretations):
            members = preds == it.cls
            cov = it.covers(feats).cpu() & members
            dist = rank_by_interpretation(it.boundaries, self.features[it.seed_index], feats, cov)[
                1
            ].cpu()
            # covered beats uncovered; among covered the earliest interpretation wins
            cost = torch.where(cov, float(i - len(interpretations)), dist.double())
            better = members & (cost < best_cost)
            best[better] = i
            best_cost[better] = cost[better]
            covered |= cov
        return best, covered
