"""Class separability of a feature space, as a streaming, DDP-synced torchmetrics ``Metric``.

The glass-box paper claims its representation *lowers* intra-class distance and *raises*
inter-class distance. This metric measures both on any feature tensor, so the claim can be
checked layer by layer and compared with AlexNet and the raw pixels.

Definitions (``P`` = classes with at least one sample, ``K' = |P|``, class ``k`` has ``n_k``
samples ``x_i`` with centroid ``μ_k``; ``μ`` is the global mean, ``N = Σ n_k``):

- ``intra``  = (1/K') Σ_k sqrt( (1/n_k) Σ_{i∈k} ‖x_i − μ_k‖² )
  — the RMS distance of a sample to its class centroid, averaged over classes (each class
  counts once, whatever its size);
- ``inter``  = mean over pairs k < l of ‖μ_k − μ_l‖ — the mean pairwise centroid distance;
- ``ratio``  = inter / intra — higher means better separated;
- ``fisher`` = trace(S_B) / trace(S_W) with S_B = Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ and
  S_W = Σ_k Σ_{i∈k} (x_i − μ_k)(x_i − μ_k)ᵀ — Fisher's trace criterion, higher is better.

Every quantity is a function of per-class counts ``n_k``, feature sums ``s_k = Σ x_i`` and
sums of squared norms ``q_k = Σ ‖x_i‖²`` (``trace`` of a scatter needs no covariance:
``Σ ‖x_i − μ_k‖² = q_k − ‖s_k‖²/n_k``). So the state is O(K·D), it is streamed exactly, and
the DDP sync is a plain sum. The state is float64 so that the subtraction keeps its digits.

Degenerate values are defined rather than raised: ``ratio`` is ``inf`` when every class is a
single point and the centroids differ, ``nan`` when additionally all centroids coincide;
``fisher`` likewise. Fewer than two classes with samples is an error (there is nothing to
separate).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from glassbox.errors import AnalysisInputError, AnalysisTypeError

MEASURES = ("intra", "inter", "ratio", "fisher")


def flatten_features(features: Any) -> Tensor:
    """Return ``features`` as a (batch, D) tensor; GeometricTensors are unwrapped.

    Raises:
        TypeError: not a tensor (or an object with a ``.tensor`` tensor, like e2cnn's
            ``GeometricTensor``), or a complex/bool tensor.
        ValueError: fewer than two dimensions (no batch axis plus feature axes), or D = 0.
    """
    if not isinstance(features, Tensor) and isinstance(getattr(features, "tensor", None), Tensor):
        features = features.tensor  # e2cnn GeometricTensor, without importing e2cnn
    if not isinstance(features, Tensor):
        raise AnalysisTypeError(
            f"features must be a torch.Tensor of shape (batch, ...), got {type(features).__name__}"
        )
    if features.is_complex() or features.dtype == torch.bool:
        raise AnalysisTypeError(
            f"features must be real numbers, got dtype {features.dtype}; cast them with .float()"
        )
    if features.ndim < 2:
        raise AnalysisInputError(
            f"features must be (batch, ...) so that they flatten to 2-D (batch, D); got shape "
            f"{tuple(features.shape)}. For one scalar feature per sample pass x.unsqueeze(1)."
        )
    flat = features.reshape(features.shape[0], -1)
    if flat.shape[1] == 0:
        raise AnalysisInputError(
            f"features have no entries per sample (shape {tuple(features.shape)})"
        )
    return flat


def check_labels(labels: Any, batch: int, num_classes: int | None = None) -> Tensor:
    """Validate integer class labels of shape (batch,) and return them as int64."""
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise AnalysisTypeError(
            f"labels must be integer class indices, got dtype {labels.dtype}; "
            "pass y.long() (not one-hot or probabilities)"
        )
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise AnalysisInputError(
            f"labels must have shape ({batch},) to match the features' batch, got {tuple(labels.shape)}"
        )
    labels = labels.long()
    if labels.numel() and (
        int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)
    ):
        raise AnalysisInputError(
            f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]; "
            "raise num_classes or remap the labels"
        )
    return labels


def separability_from_stats(counts: Tensor, sums: Tensor, sumsq: Tensor) -> dict[str, Tensor]:
    """The four measures from per-class counts (K,), feature sums (K, D) and Σ‖x‖² (K,)."""
    present = counts > 0
    k_present = int(present.sum())
    if k_present < 2:
        raise AnalysisInputError(
            f"class separability needs samples of at least two classes, got {k_present}; "
            "feed features of two or more classes before compute()"
        )
    n = counts[present].to(torch.float64)
    s = sums[present].to(torch.float64)
    q = sumsq[present].to(torch.float64)
    centroids = s / n[:, None]
    # Σ_i ‖x_i − μ_k‖² = q_k − n_k ‖μ_k‖²; clamp the round-off of a zero-spread class.
    within = (q - n * centroids.pow(2).sum(1)).clamp_min(0.0)
    intra = (within / n).sqrt().mean()
    pair = torch.cdist(
        centroids[None], centroids[None], compute_mode="donot_use_mm_for_euclid_dist"
    )[0]
    iu = torch.triu_indices(k_present, k_present, offset=1, device=pair.device)
    inter = pair[iu[0], iu[1]].mean()
    mean = s.sum(0) / n.sum()
    between = (n * (centroids - mean).pow(2).sum(1)).sum()
    return {
        "intra": intra,
        "inter": inter,
        "ratio": _safe_ratio(inter, intra),
        "fisher": _safe_ratio(between, within.sum()),
    }


def _as_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise AnalysisTypeError(f"{name} must be an int, got {value!r}") from None


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    # num/0 -> inf (perfectly tight classes), 0/0 -> nan (nothing to measure): defined, not raised.
    if den > 0:
        return num / den
    return torch.full_like(num, float("inf") if num > 0 else float("nan"))


class ClassSeparability(Metric):
    """Intra-/inter-class distances, their ratio and Fisher's criterion of a feature space.

    See the module docstring for the exact definitions. Features of any shape (batch, ...)
    are flattened to (batch, D); an e2cnn ``GeometricTensor`` is accepted as is.

    Args:
        num_classes: number of class labels (labels must lie in ``[0, num_classes)``);
            classes that never occur are ignored.
        num_features: D, if known. If ``None`` the state is sized at the first update; under
            DDP a rank that saw no data then takes its size from the others when syncing.

    Example:
        >>> m = ClassSeparability(num_classes=10)
        >>> for x, y in loader:            # doctest: +SKIP
        ...     m.update(net.features(x), y)
        >>> m.compute()["fisher"]          # doctest: +SKIP
    """

    is_differentiable = False
    higher_is_better = None  # intra: lower is better; the others: higher
    full_state_update = False

    counts: Tensor
    sums: Tensor
    sumsq: Tensor

    def __init__(self, num_classes: int, num_features: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        num_classes = _as_int(num_classes, "num_classes")
        if num_classes < 2:
            raise AnalysisInputError(
                f"num_classes must be >= 2 (separability compares classes), got {num_classes}"
            )
        if num_features is not None:
            num_features = _as_int(num_features, "num_features")
            if num_features < 1:
                raise AnalysisInputError(
                    f"num_features must be >= 1 or None (sized lazily), got {num_features}"
                )
        self.num_classes = num_classes
        self.num_features = num_features
        d = num_features or 0
        self.add_state(
            "counts", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "sums", torch.zeros(num_classes, d, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("sumsq", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Any, labels: Tensor) -> None:
        """Accumulate a batch: ``features`` (batch, ...) and integer ``labels`` (batch,)."""
        x = flatten_features(features)
        y = check_labels(labels, x.shape[0], self.num_classes).to(x.device)
        d = x.shape[1]
        if self.sums.shape[1] == 0:  # lazily sized state, first data
            self.sums = torch.zeros(
                self.num_classes, d, dtype=torch.float64, device=self.sums.device
            )
        elif self.sums.shape[1] != d:
            raise AnalysisInputError(
                f"features have {d} entries per sample but earlier updates had {self.sums.shape[1]}; "
                "use one ClassSeparability per layer (or call reset())"
            )
        x = x.to(device=self.sums.device, dtype=torch.float64)
        y = y.to(self.sums.device)
        self.counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        self.sums.index_add_(0, y, x)
        self.sumsq.index_add_(0, y, x.pow(2).sum(1))

    def compute(self) -> dict[str, Tensor]:
        """``{"intra", "inter", "ratio", "fisher"}`` as float64 scalars."""
        return separability_from_stats(self.counts, self.sums, self.sumsq)

    # ------------------------------------------------------------------ lazy state size
    # A lazily sized state that saw no data is (K, 0): give it the size of the other state
    # before torchmetrics sums the two (in forward() and merge_state()) or the ranks (in sync).
    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        incoming = dict(incoming_state)
        theirs, ours = incoming["sums"], self.sums
        if theirs.shape != ours.shape:
            if theirs.shape[1] == 0:
                incoming["sums"] = torch.zeros_like(ours)
            elif ours.shape[1] == 0:
                self.sums = torch.zeros_like(theirs)
            else:
                raise AnalysisInputError(
                    f"cannot merge separability states of {theirs.shape[1]} and {ours.shape[1]} features"
                )
        super()._reduce_states(incoming)

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        if self.num_features is None:
            size = torch.tensor([self.sums.shape[1]], device=self.sums.device)
            sizes = dist_sync_fn(size, group=process_group or self.process_group)
            d = int(max(int(s.item()) for s in sizes))
            if self.sums.shape[1] == 0 and d > 0:
                self.sums = torch.zeros(
                    self.num_classes, d, dtype=torch.float64, device=self.sums.device
                )
        super()._sync_dist(dist_sync_fn, process_group)
