"""Batched computation of every finite-group measure for one layer.

Given a layer's features for the original images and all transformed copies (one
forward pass, (1+m, B, C, H, W)), this computes every measure for all elements with a
few large tensor ops per layer:

- the features are copied once, element-major, into (1+m, C, B·H·W): each element's
  maps are one (C, columns) matrix, a column per (image, position);
- an exact group element permutes pixels, so S_g φ(x) is one column gather per element,
  shared by the spatial, known-action and best-fit measures; a regular field's fibre
  representation is one row gather;
- every error is one difference written into a reused scratch buffer and one norm;
- best fit: one Gram matrix X Xᵀ serves every exact element (a pixel permutation leaves
  it unchanged), the cross products of all elements are one batched GEMM, all maps one
  float64 solve, all held-out predictions one more batched GEMM.

Loops run over group elements (≤ |G|), never over images. Elements that need
interpolation take a simpler path. The functions in :mod:`glassbox.equivariance.measures`
define the same quantities and serve as the reference in tests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

import torch

from glassbox.equivariance.actions import FibreAction
from glassbox.equivariance.groups import GroupElement, pixel_permutation, transform_grid

Value = tuple[GroupElement, str, torch.Tensor]


def _rel(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0/0 = 0 (a dead layer matches perfectly)."""
    return torch.where(num == 0, torch.zeros_like(num), num / den)


def _norms(t: torch.Tensor) -> torch.Tensor:
    """‖t[e]‖ for every element e (leading axis)."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def solve_ridge(gram: torch.Tensor, crosses: torch.Tensor, ridge: float) -> torch.Tensor:
    """W_e = (G + λI)⁻¹ (K_e + λI) for a batch of K_e (E, C, C), in float64, one solve.

    The ridge pulls each map towards the identity (see
    :func:`~glassbox.equivariance.measures.fit_channel_map`); λ = ``ridge`` × mean diag G.
    """
    g = gram.double()
    e, c, _ = crosses.shape
    lam = ridge * torch.clamp(torch.diagonal(g).mean(), min=torch.finfo(torch.float64).tiny)
    eye = torch.eye(c, dtype=g.dtype, device=g.device)
    rhs = crosses.double().permute(1, 0, 2).reshape(c, e * c) + lam * eye.repeat(1, e)
    w = torch.linalg.solve(g + lam * eye, rhs)
    return w.reshape(c, e, c).permute(1, 0, 2).to(crosses.dtype)


@functools.lru_cache(maxsize=256)
def _columns(batch: int, height: int, width: int, element: GroupElement, device: str):
    """Columns of a (C, B·H·W) feature matrix that build S_g φ(x): b·HW + perm_g[p]."""
    perm = pixel_permutation(height, width, element, device)
    offsets = torch.arange(batch, device=device)[:, None] * (height * width)
    return (offsets + perm[None, :]).reshape(-1)


class Workspace:
    """Scratch buffers reused by every layer of a measurement, and across measurements.

    On the CPU each fresh multi-megabyte tensor costs page faults that can outweigh the
    arithmetic done on it; a few reused buffers (sized by the largest layer) avoid that.
    Buffers above ``keep_bytes`` are handed out fresh and not kept.
    """

    def __init__(self, keep_bytes: int | None = None) -> None:
        self.keep_bytes = keep_bytes
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        buf = self._buffers.get(name)
        stale = buf is None or buf.dtype != like.dtype or buf.device != like.device
        if stale or buf.numel() < numel:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            if self.keep_bytes is None or numel * buf.element_size() <= self.keep_bytes:
                self._buffers[name] = buf
        return buf[:numel].view(*shape)

    def release(self) -> None:
        """Free the kept buffers."""
        self._buffers = {}


_SHARED = threading.local()
SHARED_CPU_BYTES = 256 * 2**20  # per buffer; the shared CPU workspace keeps at most 3 of them


def shared_workspace(device: torch.device) -> Workspace:
    """The calling thread's workspace for CPU tensors (kept between calls, each buffer at
    most :data:`SHARED_CPU_BYTES`); a fresh one elsewhere (CUDA's caching allocator already
    recycles memory without page faults)."""
    if torch.device(device).type != "cpu":
        return Workspace()
    if not hasattr(_SHARED, "workspace"):
        _SHARED.workspace = Workspace(keep_bytes=SHARED_CPU_BYTES)
    return _SHARED.workspace


def release_shared_workspace() -> None:
    """Free the calling thread's shared CPU scratch buffers."""
    if hasattr(_SHARED, "workspace"):
        _SHARED.workspace.release()


def measure_layer(
    feats: torch.Tensor,
    elements: Sequence[GroupElement],
    measures: Sequence[str],
    *,
    exact: str,
    n_fit: int,
    ridge: float,
    min_fit_ratio: float,
    fibre: Callable[[GroupElement], FibreAction | None] | None,
    custom_action: Callable[[torch.Tensor, GroupElement], torch.Tensor] | None,
    is_output: bool,
    what: str,
    workspace: Workspace | None = None,
) -> tuple[list[Value], list[str]]:
    """All finite measures of one layer.

    Args:
        feats: (1 + len(elements), B, ...) features: the originals first, then one block
            per element in order.
        fibre: element → fibre action of a GeometricTensor layer (``None`` result: g ∉ G),
            or ``None`` for a plain tensor layer.
        custom_action: a user-given known action on (B, ...) features.
        workspace: scratch buffers to reuse across layers (a fresh one if ``None``).

    Returns:
        ([(element, measure, 0-d value)], notes on what was left out and why).
    """
    f0 = feats[0]
    m = len(elements)
    want = set(measures)
    out: list[Value] = []
    notes: list[str] = []
    ref = torch.linalg.vector_norm(f0)

    def emit(measure: str, idx: Sequence[int], values: torch.Tensor) -> None:
        out.extend((elements[i], measure, v) for i, v in zip(idx, values.unbind(0)))

    everyone = list(range(m))
    if "equivariance" in want and custom_action is not None:
        pred = torch.stack([custom_action(f0, el) for el in elements])
        emit("equivariance", everyone, _rel(_norms(feats[1:] - pred), ref))
    if f0.dim() != 4:
        if "invariance" in want:
            emit("invariance", everyone, _rel(_norms(feats[1:] - f0), ref))
        if "consistency" in want and is_output and f0.dim() == 2 and f0.shape[1] > 1:
            same = (feats[1:].argmax(-1) == f0.argmax(-1)).float().mean(1)
            emit("consistency", everyone, same)
        return out, notes

    b, c, h, w = f0.shape
    cols = b * h * w  # one column per (image, position); the fit images' columns come first
    split = n_fit * h * w
    ws = workspace or Workspace()
    # one element-major copy (1+m, C, B·H·W): every element's maps become one (C, cols)
    # matrix, so each measure below is a handful of large ops (few parallel regions,
    # GEMMs with long inner dimensions) rather than many small per-image ones
    z = ws.get("z", (m + 1, c, cols), feats)
    z.view(m + 1, c, b, h * w).copy_(feats.reshape(m + 1, b, c, h * w).transpose(1, 2))
    z0, z_all = z[0], z[1:]
    if "invariance" in want:
        diff = torch.sub(z_all, z0, out=ws.get("diff", (m, c, cols), z))
        emit("invariance", everyone, _rel(_norms(diff), ref))
    if "best_fit" in want and split < min_fit_ratio * c:
        # too few fitting rows (images × positions) per channel: the least-squares map would
        # over-fit and the held-out error would measure the over-fitting instead
        want.discard("best_fit")
        notes.append(f"best_fit ({n_fit}×{h}×{w} fitting rows < {min_fit_ratio:g} × {c} channels)")
    known = "equivariance" in want and fibre is not None and custom_action is None
    if not ({"spatial", "best_fit"} & want or known):
        return out, notes

    exact_idx = [i for i, el in enumerate(elements) if el.is_exact_on(h, w)]
    test_ref = torch.linalg.vector_norm(z0[:, split:]) if "best_fit" in want else None
    if exact_idx:
        e = len(exact_idx)
        xs = ws.get("xs", (e, c, cols), z)  # S_g φ(x): a column gather per element
        for j, i in enumerate(exact_idx):
            torch.index_select(z0, 1, _columns(b, h, w, elements[i], str(z.device)), out=xs[j])
        ys = z_all if e == m else z_all[exact_idx]
        scratch = ws.get("diff", (e, c, cols), z)
        spatial = None
        if "spatial" in want or known:
            spatial = _norms(torch.sub(ys, xs, out=scratch))
        if "spatial" in want:
            emit("spatial", exact_idx, _rel(spatial, ref))
        if known:
            _known_action(elements, exact_idx, fibre, xs, ys, spatial, scratch, ref, emit, notes)
        if "best_fit" in want:
            # Y ≈ Wᵀ X per element, X = S_g φ(x) and Y = φ(g·x) as (C, cols) matrices; the
            # Gram X Xᵀ of a pixel permutation is that of φ(x): one for all elements
            gram = z0[:, :split] @ z0[:, :split].T
            cross = torch.bmm(xs[:, :, :split], ys[:, :, :split].transpose(1, 2))
            weights = solve_ridge(gram, cross, ridge)
            pred = scratch[:, :, : cols - split]
            torch.bmm(weights.transpose(1, 2), xs[:, :, split:], out=pred)
            emit("best_fit", exact_idx, _rel(_norms(pred.sub_(ys[:, :, split:])), test_ref))

    for i, el in enumerate(elements):  # elements that need interpolation, one by one
        if i in exact_idx:
            continue
        xg = transform_grid(feats[0], el, exact, what=what)  # (B, C, H, W)
        yg = feats[i + 1]
        if "spatial" in want:
            out.append((el, "spatial", _rel(torch.linalg.vector_norm(yg - xg), ref)))
        if known:
            action = fibre(el)
            if action is None:
                notes.append(f"equivariance@{el.name} (not in the layer's e2cnn group)")
            else:
                num = torch.linalg.vector_norm(yg - action(xg))
                out.append((el, "equivariance", _rel(num, ref)))
        if "best_fit" in want:
            x = xg.transpose(0, 1).reshape(c, cols)
            y = z[i + 1]
            x_fit, y_fit = x[:, :split], y[:, :split]
            weights = solve_ridge(x_fit @ x_fit.T, (x_fit @ y_fit.T)[None], ridge)[0]
            resid = y[:, split:] - weights.T @ x[:, split:]
            out.append((el, "best_fit", _rel(torch.linalg.vector_norm(resid), test_ref)))
    return out, notes


def _known_action(elements, exact_idx, fibre, xs, ys, spatial, scratch, ref, emit, notes) -> None:
    """Known-action errors ‖φ(g·x) − ρ(g) S_g φ(x)‖ of a GeometricTensor layer."""
    actions = {j: fibre(elements[i]) for j, i in enumerate(exact_idx)}
    for j, action in actions.items():
        if action is None:
            name = elements[exact_idx[j]].name
            notes.append(f"equivariance@{name} (not in the layer's e2cnn group)")
    keep = [j for j, a in actions.items() if a is not None]
    if not keep:
        return
    if all(actions[j].is_identity for j in keep):  # trivial fields: the spatial action
        emit("equivariance", [exact_idx[j] for j in keep], _rel(spatial[keep], ref))
        return
    pred = scratch[: len(keep)]
    for k, j in enumerate(keep):  # ρ(g) on the channel rows: a row gather for regular fields
        action = actions[j]
        if action.index is not None:
            torch.index_select(xs[j], 0, action.index, out=pred[k])
        else:
            torch.mm(action.matrix, xs[j], out=pred[k])
    target = ys if len(keep) == len(exact_idx) else ys[keep]
    emit("equivariance", [exact_idx[j] for j in keep], _rel(_norms(pred.sub_(target)), ref))
