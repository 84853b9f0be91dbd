"""Sign matrices and the greedy submodular-cost-submodular-cover (SCSC) co-clustering.

An image x′ is *covered* by a set P of boundaries when ψ(x′) lies on the seed's side of
every h ∈ P. SCSC picks P ⊆ Q maximising the covered images of the seed's (predicted)
class subject to at most δ covered images of other classes. The greedy adds, while more
than δ other-class images are covered, the candidate minimising

    (same-class images newly excluded + ε) / (other-class images newly excluded + ε′)

over candidates that still exclude at least one covered other-class image (one that
excludes none cannot help meet the constraint), then prunes boundaries whose removal
changes neither count.

The side of every reference image for every candidate is computed once (one GEMM per
row block → an N × M sign matrix). Two backends run the same greedy, step by step with
the same tie-breaking, so they return identical results:

* ``"packed"`` (default, CPU): per candidate, the images' "disagrees with the seed" bits
  packed 64 per ``uint64`` word. Every candidate's exclusion counts are computed once
  (AND + ``np.bitwise_count`` over the whole matrix) and then updated, for all candidates
  at once, with only the words holding the images the last step removed: each image is
  removed once, so late steps touch a handful of words.
* ``"bool"`` (torch, any device): the same on a dense boolean matrix, shrunk to the
  covered rows and the live columns after each step.

Neither loops in Python over images or candidates within a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glassbox.errors import AnalysisInputError
from glassbox.interpret.boundaries import LinearBoundaries

__all__ = [
    "InfeasibleDeltaError",
    "ScscResult",
    "SignMatrix",
    "greedy_scsc",
    "pack_bits",
    "sign_matrix",
    "unpack_bits",
]

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


class InfeasibleDeltaError(AnalysisInputError):
    """δ is below the smallest achievable number of covered other-class images."""


def pack_bits(mask: np.ndarray | Tensor) -> np.ndarray:
    """Pack booleans along the last axis, 64 per little-endian ``uint64`` word (zero padded):
    bit ``i % 64`` of word ``i // 64`` holds element i."""
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.ascontiguousarray(mask, dtype=bool)
    n = mask.shape[-1]
    pad = (-n) % 64
    if pad:
        mask = np.concatenate([mask, np.zeros(mask.shape[:-1] + (pad,), dtype=bool)], axis=-1)
    return np.packbits(mask, axis=-1, bitorder="little").view("<u8").astype(np.uint64, copy=False)


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` (first ``n`` bits along the last axis)."""
    words = np.ascontiguousarray(words, dtype="<u8")
    return np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :n].astype(bool)


@dataclass
class SignMatrix:
    """Sides of N images for M boundaries (True where wᵀψ + b ≥ 0).

    Exactly one of ``packed`` ((M, ⌈N/64⌉) uint64, images along bits) or ``dense``
    ((N, M) bool tensor) is set.
    """

    n: int
    m: int
    packed: np.ndarray | None = None
    dense: Tensor | None = None

    def row(self, i: int) -> np.ndarray:
        """The sides (M,) of image i."""
        if self.dense is not None:
            return self.dense[i].cpu().numpy()
        return ((self.packed[:, i // 64] >> np.uint64(i % 64)) & np.uint64(1)).astype(bool)

    def columns(self, idx) -> SignMatrix:
        """The sub-matrix of some boundaries (columns)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.dense is not None:
            return SignMatrix(
                self.n,
                len(idx),
                dense=self.dense[:, torch.as_tensor(idx, device=self.dense.device)],
            )
        return SignMatrix(self.n, len(idx), packed=self.packed[idx])

    def to_dense(self) -> Tensor:
        if self.dense is not None:
            return self.dense
        return torch.from_numpy(unpack_bits(self.packed, self.n).T.copy())


@torch.no_grad()
def sign_matrix(
    features: Tensor,
    boundaries: LinearBoundaries,
    pack: bool = True,
    block_rows: int = 4096,
) -> SignMatrix:
    """Sides of every image for every boundary: ``features @ Wᵀ + b ≥ 0`` as one GEMM per
    block of ``block_rows`` images (the blocks only bound memory).

    Args:
        features: (N, D) or (N, *feature_shape) ψ of the images.
        boundaries: M boundaries in the same feature space.
        pack: return the bit-packed form (for the ``"packed"`` greedy) or a dense bool tensor.
    """
    n = features.shape[0]
    flat = features.reshape(n, -1)
    w = boundaries.weight.to(flat.device, flat.dtype)
    if flat.shape[1] != w.shape[1]:
        raise AnalysisInputError(
            f"features have {flat.shape[1]} dimensions but the boundaries live in {w.shape[1]}; "
            "use features of the layer the boundaries were extracted at"
        )
    b = boundaries.bias.to(flat.device, flat.dtype)
    block_rows = max(64, block_rows - block_rows % 64)  # whole words per block when packing
    parts = []
    for start in range(0, n, block_rows):
        block = flat[start : start + block_rows]
        if pack:  # (M, rows) output: images already along the axis the bits are packed on
            parts.append(pack_bits(torch.addmm(b[:, None], w, block.T) >= 0))
        else:
            parts.append(torch.addmm(b, block, w.T) >= 0)
    if pack:
        return SignMatrix(n, w.shape[0], packed=np.concatenate(parts, axis=1))
    return SignMatrix(n, w.shape[0], dense=torch.cat(parts))


@dataclass
class ScscResult:
    """Outcome of the greedy.

    Attributes:
        selected: indices (into the candidates) of the chosen boundaries P, in order of addition.
        covered: (N,) bool, images on the seed's side of every h ∈ P.
        n_same / n_other: covered images of the seed's class / of other classes.
        delta: the δ used; min_delta: the smallest feasible δ (others covered with all of Q).
        steps: greedy additions before pruning.
    """

    selected: np.ndarray
    covered: np.ndarray
    n_same: int
    n_other: int
    delta: int
    min_delta: int
    steps: int


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)


def _check_delta(delta: int | None, min_delta: int) -> int:
    if delta is None:
        return min_delta
    if delta < 0:
        raise InfeasibleDeltaError(
            f"delta must be >= 0 (or None for the smallest feasible value), got {delta}"
        )
    if delta < min_delta:
        raise InfeasibleDeltaError(
            f"delta={delta} is infeasible: even with all candidate boundaries, {min_delta} images of "
            f"other classes stay on the seed's side; use delta >= {min_delta}, delta=None (smallest "
            "feasible), or sample more candidates"
        )
    return int(delta)


def _ratio(s: np.ndarray, o: np.ndarray, eps: float, eps_prime: float) -> np.ndarray:
    return (s.astype(np.float64) + eps) / (o.astype(np.float64) + eps_prime)


def _greedy_packed(bits, seed_sides, same, other, delta, eps, eps_prime, prune):
    flip = np.where(seed_sides, _ALL_ONES, np.uint64(0))
    valid = same | other
    dis = (bits ^ flip[:, None]) & valid  # bit set: image on the other side than the seed
    covered_all = valid & ~np.bitwise_or.reduce(dis, axis=0)
    min_delta = int(_popcount_rows(covered_all & other))
    delta = _check_delta(delta, min_delta)

    # Exclusion counts of every candidate, computed once over all words, then updated with
    # only the images each step removes (each image is removed once, so late steps touch
    # a handful of words instead of the whole matrix). Words × candidates layout: a step
    # gathers whole contiguous rows (the words it touched).
    o = _popcount_rows(dis & other)
    s = _popcount_rows(dis & same)
    cov = valid.copy()
    n_other = int(_popcount_rows(other))
    cols = np.arange(bits.shape[0])
    live = np.ascontiguousarray(dis.T)  # (W, M)
    selected: list[int] = []
    while n_other > delta:
        alive = o > 0  # a candidate excluding no covered other-class image never helps again
        if alive.sum() * 2 < len(cols):  # compact now and then; copying every step costs more
            live, cols, o, s = np.ascontiguousarray(live[:, alive]), cols[alive], o[alive], s[alive]
        ratio = _ratio(s, o, eps, eps_prime)
        ratio[o == 0] = np.inf
        j = int(np.argmin(ratio))
        selected.append(int(cols[j]))
        removed = cov & live[:, j]
        cov &= ~live[:, j]
        words = np.flatnonzero(removed)
        hit = live[words] & removed[words, None]
        o = o - np.bitwise_count(hit & other[words, None]).sum(axis=0, dtype=np.int64)
        s = s - np.bitwise_count(hit & same[words, None]).sum(axis=0, dtype=np.int64)
        n_other -= int(_popcount_rows(removed & other))
    steps = len(selected)
    if prune:
        selected = _prune(
            selected, lambda p: valid & ~np.bitwise_or.reduce(dis[p], axis=0), cov, np.array_equal
        )
    return selected, cov, delta, min_delta, steps


def _greedy_bool(dense, seed_sides, same, other, delta, eps, eps_prime, prune):
    dev = dense.device
    dis = dense ^ torch.as_tensor(seed_sides, device=dev)[None, :]
    same_t = torch.as_tensor(same, device=dev)
    other_t = torch.as_tensor(other, device=dev)
    valid = same_t | other_t
    covered_all = valid & ~dis.any(1)
    min_delta = int((covered_all & other_t).sum())
    delta = _check_delta(delta, min_delta)

    rows = torch.nonzero(valid).squeeze(1)  # covered images
    cols = torch.arange(dis.shape[1], device=dev)
    live = dis[rows]
    row_other = other_t[rows]
    selected: list[int] = []
    while int(row_other.sum()) > delta:
        o = live[row_other].sum(0)
        keep = o > 0
        live, cols, o = live[:, keep], cols[keep], o[keep]
        s = live[~row_other].sum(0)
        j = int(np.argmin(_ratio(s.cpu().numpy(), o.cpu().numpy(), eps, eps_prime)))
        selected.append(int(cols[j]))
        stay = ~live[:, j]
        live, rows, row_other = live[stay], rows[stay], row_other[stay]
    cov = torch.zeros(dis.shape[0], dtype=torch.bool, device=dev)
    cov[rows] = True
    steps = len(selected)
    if prune:
        selected = _prune(
            selected,
            lambda p: valid & ~dis[:, torch.as_tensor(p, device=dev)].any(1),
            cov,
            torch.equal,
        )
    return selected, cov.cpu().numpy(), delta, min_delta, steps


def _prune(selected, coverage_of, cov, equal):
    """Drop boundaries (earliest first) whose removal leaves the covered set unchanged — then
    neither count changes, since removing a boundary can only add covered images."""
    kept = list(selected)
    for h in list(selected):
        rest = [g for g in kept if g != h]
        if rest and equal(coverage_of(np.asarray(rest)), cov):
            kept = rest
    return kept


def greedy_scsc(
    signs: SignMatrix,
    seed_sides: np.ndarray | Tensor,
    same_class: np.ndarray | Tensor,
    other_class: np.ndarray | Tensor | None = None,
    delta: int | None = None,
    eps: float = 1e-6,
    eps_prime: float = 1e-6,
    prune: bool = True,
) -> ScscResult:
    """Greedy SCSC on a precomputed sign matrix.

    Args:
        signs: sides of the N reference images for the M candidates (:func:`sign_matrix`).
        seed_sides: (M,) the seed's side of each candidate (e.g. ``signs.row(seed_index)``).
        same_class: (N,) bool, reference images of the seed's predicted class.
        other_class: (N,) bool, images of other predicted classes (default ``~same_class``);
            images in neither mask are ignored.
        delta: max covered other-class images; ``None``: the smallest feasible value.
        eps / eps_prime: the ε, ε′ of the greedy ratio (break ties, avoid 0/0).
        prune: drop boundaries whose removal changes neither count.

    Raises:
        InfeasibleDeltaError: ``delta`` is below the smallest feasible value.
    """
    same = np.asarray(
        same_class.cpu() if isinstance(same_class, Tensor) else same_class, dtype=bool
    )
    other = (
        ~same
        if other_class is None
        else np.asarray(
            other_class.cpu() if isinstance(other_class, Tensor) else other_class, dtype=bool
        )
    )
    sides = np.asarray(
        seed_sides.cpu() if isinstance(seed_sides, Tensor) else seed_sides, dtype=bool
    )
    if same.shape != (signs.n,) or other.shape != (signs.n,):
        raise AnalysisInputError(
            f"class masks must have shape ({signs.n},), got {same.shape} and {other.shape}"
        )
    if sides.shape != (signs.m,):
        raise AnalysisInputError(f"seed_sides must have shape ({signs.m},), got {sides.shape}")
    if (same & other).any():
        raise AnalysisInputError("an image cannot be both of the seed's class and of another class")
    args = (sides, None, None, delta, eps, eps_prime, prune)
    if signs.packed is not None:
        args = (sides, pack_bits(same), pack_bits(other), delta, eps, eps_prime, prune)
        selected, cov, delta, min_delta, steps = _greedy_packed(signs.packed, *args)
        cov = unpack_bits(cov, signs.n)
    else:
        args = (sides, same, other, delta, eps, eps_prime, prune)
        selected, cov, delta, min_delta, steps = _greedy_bool(signs.dense, *args)
    return ScscResult(
        selected=np.asarray(selected, dtype=np.int64),
        covered=cov,
        n_same=int((cov & same).sum()),
        n_other=int((cov & other).sum()),
        delta=delta,
        min_delta=min_delta,
        steps=steps,
    )
