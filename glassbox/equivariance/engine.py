"""Batched computation of every finite-group measure for one layer.

Given a layer's features for the original images and all transformed copies (one
forward pass, (1+m, B, C, H, W)), this computes every measure for all elements with a
few large tensor ops per block of images (:func:`_blocked`):

- a block's features are copied element-major into (1+m, C, n·H·W): each element's
  maps are one (C, columns) matrix, a column per (image, position);
- an exact group element permutes pixels, so S_g φ(x) is one column gather per element,
  shared by the spatial, known-action and best-fit measures; a regular field's fibre
  representation is one row gather;
- every error is one difference written over one of its operands and one norm per
  element; the blocks' norms are combined at the end;
- best fit: one Gram matrix X Xᵀ serves every exact element (a pixel permutation leaves
  it unchanged); it and the cross products of all elements (one batched GEMM per block)
  accumulate over the fit images, all maps are one float64 solve, the held-out
  predictions one batched GEMM per block.

On the CPU a block is about :data:`CHUNK_BYTES` (a core's L2 cache), so the ops of a
block reuse what the previous op left in the cache instead of streaming the whole layer
through memory once per op (AlexNet's wide early maps made the report memory-bound);
elsewhere a block is all fit or all held-out images. Loops run over group elements
(≤ |G|) and blocks, never over single images on other devices. Elements that need
interpolation take a simpler path. The functions in
:mod:`glassbox.equivariance.measures` define the same quantities and serve as the
reference in tests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

import torch

from glassbox.equivariance.actions import FibreAction
from glassbox.equivariance.groups import GroupElement, pixel_permutation, transform_grid
from glassbox.equivariance.measures import fit_channel_map

Value = tuple[GroupElement, str, torch.Tensor]


def _rel(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0/0 = 0 (a dead layer matches perfectly)."""
    return torch.where(num == 0, torch.zeros_like(num), num / den)


def _norms(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖t[e]‖ for every element e (leading axis)."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1, out=out)


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
CHUNK_BYTES = 2 * 2**20  # working set of one block of images on the CPU (about a core's L2)
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
    if "best_fit" in want and n_fit * h * w < min_fit_ratio * c:
        # too few fitting rows (images × positions) per channel: the least-squares map would
        # over-fit and the held-out error would measure the over-fitting instead
        want.discard("best_fit")
        notes.append(f"best_fit ({n_fit}×{h}×{w} fitting rows < {min_fit_ratio:g} × {c} channels)")
    known = "equivariance" in want and fibre is not None and custom_action is None
    maps = bool({"spatial", "best_fit"} & want or known)  # measures that transform φ(x)
    exact_idx = [i for i, el in enumerate(elements) if maps and el.is_exact_on(h, w)]
    invariance_at = len(out)
    ws = workspace or Workspace()
    norms = _blocked(feats, elements, exact_idx, want, known, n_fit, ridge, fibre, ws, notes)
    ref, test_ref = norms["ref"], norms.get("test_ref")  # summed blockwise: more exact
    if "invariance" in want:
        values = _rel(norms["invariance"], ref).unbind(0)
        out[invariance_at:invariance_at] = [
            (el, "invariance", v) for el, v in zip(elements, values)
        ]
    if "spatial" in norms and "spatial" in want:
        emit("spatial", exact_idx, _rel(norms["spatial"], ref))
    if "equivariance" in norms:
        idx, values = norms["equivariance"]
        emit("equivariance", idx, _rel(values, ref))
    if "best_fit" in norms:
        emit("best_fit", exact_idx, _rel(norms["best_fit"], test_ref))
    cols, split = b * h * w, n_fit * h * w
    for i, el in enumerate(elements):  # elements that need interpolation, one by one
        if not maps or i in exact_idx:
            continue
        xg = transform_grid(f0, el, exact, what=what)  # (B, C, H, W)
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
        if "best_fit" in want:  # an affine map: a constant-1 row makes the intercept
            x = torch.cat([xg.transpose(0, 1).reshape(c, cols), xg.new_ones(1, cols)])
            y = yg.transpose(0, 1).reshape(c, cols)
            x_fit, y_fit = x[:, :split], y[:, :split]
            weights = fit_channel_map(x_fit @ x_fit.T, x_fit @ y_fit.T, ridge)
            resid = y[:, split:] - weights.T @ x[:, split:]
            out.append((el, "best_fit", _rel(torch.linalg.vector_norm(resid), test_ref)))
    return out, notes


def _chunks(batch: int, n_fit: int, per_image: int, small: bool) -> list[tuple[int, int]]:
    """Image ranges processed together: the fit images first, then the held-out ones (never
    mixed), each range's working set about :data:`CHUNK_BYTES` if ``small`` (one range per
    split otherwise)."""
    size = max(1, CHUNK_BYTES // max(per_image, 1)) if small else batch
    bounds = []
    for lo, hi in ((0, n_fit), (n_fit, batch)) if n_fit else ((0, batch),):
        bounds += [(s, min(hi, s + size)) for s in range(lo, hi, size)]
    return bounds


def _blocked(feats, elements, exact_idx, want, known, n_fit, ridge, fibre, ws, notes) -> dict:
    """Numerators of every finite measure of a (B, C, H, W) layer, a block of images at a time.

    Each block's features are copied element-major into (1+m, C, n·H·W), so an element's
    maps are one (C, columns) matrix, a column per (image, position); an exact element's
    S_g φ(x) is one column gather; a regular field's ρ(g) one row gather. Every difference
    is written over one of its operands and reduced to one norm per element; the best-fit
    Gram matrix (one for all exact elements: a pixel permutation leaves it unchanged) and
    cross products accumulate over the fit blocks, all maps are one float64 solve, and the
    held-out blocks are predicted with one batched GEMM each. Blocks of about
    :data:`CHUNK_BYTES` stay in the CPU's cache between these ops instead of streaming the
    whole layer through memory once per op.

    Returns ``{measure: per-element norms}`` (``"equivariance"``: (indices, norms)).
    """
    m = len(elements)
    k1, b, c, h, w = feats.shape
    hw = h * w
    e = len(exact_idx)
    fit = "best_fit" in want
    actions, keep, trivial = {}, [], False
    if known and exact_idx:
        actions = {j: fibre(elements[i]) for j, i in enumerate(exact_idx)}
        for j, action in actions.items():
            if action is None:
                notes.append(
                    f"equivariance@{elements[exact_idx[j]].name} (not in the layer's e2cnn group)"
                )
        keep = [j for j, a in actions.items() if a is not None]
        trivial = bool(keep) and all(actions[j].is_identity for j in keep)
    spatial = e and ("spatial" in want or trivial)
    twisted = bool(keep) and not trivial  # a non-trivial ρ(g): its own prediction
    per_image = (k1 + 2 * e) * c * hw * feats.element_size()
    # small blocks on the CPU for plain layers (AlexNet's wide early maps are memory-bound);
    # GeometricTensor layers stay in one block: small ones measured slower for the glass-box net
    small = feats.device.type == "cpu" and fibre is None
    bounds = _chunks(b, n_fit if fit else 0, per_image, small)
    like = feats
    rows = {
        name: torch.zeros(len(bounds), n, dtype=feats.dtype, device=feats.device)
        for name, n in (
            ("invariance", m),
            ("spatial", e),
            ("equivariance", len(keep)),
            ("best_fit", e),
            ("ref", 1),
        )
    }
    gram = cross = weights = None
    if fit and e:  # products of [S_g φ(x); 1]: the constant row makes the fitted map affine
        gram = torch.zeros(c + 1, c + 1, dtype=feats.dtype, device=feats.device)
        cross = torch.zeros(e, c + 1, c, dtype=feats.dtype, device=feats.device)
    for r, (s, t) in enumerate(bounds):
        n = t - s
        cols = n * hw
        if n == 1:  # one image's maps are already (C, H·W) matrices: read them in place
            z = feats[:, s].reshape(k1, c, hw)
        else:
            z = ws.get("z", (k1, c, cols), like)
            z.view(k1, c, n, hw).copy_(feats[:, s:t].reshape(k1, n, c, hw).transpose(1, 2))
        z0, z_all = z[0], z[1:]
        torch.linalg.vector_norm(z0, out=rows["ref"][r, 0])
        if e:
            # [S_g φ(x); 1]: a column gather per element, and a constant row for the intercept
            xs1 = ws.get("xs", (e, c + 1, cols), like)
            xs = xs1[:, :c]
            xs1[:, c].fill_(1)
            for j, i in enumerate(exact_idx):
                torch.index_select(z0, 1, _columns(n, h, w, elements[i], str(z.device)), out=xs[j])
            ys = z_all if e == m else z_all[exact_idx]
            if twisted:  # ρ(g) S_g φ(x) − φ(g·x), before the spatial errors overwrite xs
                pred = ws.get("pred", (len(keep), c, cols), like)
                for q, j in enumerate(keep):  # ρ(g) on the channel rows
                    action = actions[j]
                    if action.index is not None:
                        torch.index_select(xs[j], 0, action.index, out=pred[q])
                    else:
                        torch.mm(action.matrix, xs[j], out=pred[q])
                _norms(pred.sub_(ys if len(keep) == e else ys[keep]), out=rows["equivariance"][r])
            if fit and s < n_fit:  # Y ≈ Wᵀ X + b, X = S_g φ(x) and Y = φ(g·x) as (C, columns)
                gram.addmm_(xs1[0], xs1[0].T)  # a pixel permutation leaves the Gram unchanged
                cross.baddbmm_(xs1, ys.transpose(1, 2))
            elif fit:
                if weights is None:
                    weights = fit_channel_map(gram, cross, ridge).transpose(1, 2)
                pred = ws.get("pred", (e, c, cols), like)
                torch.bmm(weights, xs1, out=pred)
                _norms(pred.sub_(ys), out=rows["best_fit"][r])
            if spatial:  # φ(g·x) − S_g φ(x), written over S_g φ(x)
                _norms(torch.sub(ys, xs, out=xs), out=rows["spatial"][r])
        if "invariance" in want:  # φ(g·x) − φ(x), over the block's copy of φ(g·x) (last use)
            diff = (
                z_all if n > 1 else ws.get("diff", z_all.shape, like)
            )  # never over the layer's output
            _norms(torch.sub(z_all, z0, out=diff), out=rows["invariance"][r])
    result = {"ref": torch.linalg.vector_norm(rows["ref"])}
    if fit:
        result["test_ref"] = torch.linalg.vector_norm(rows["ref"][[s >= n_fit for s, _ in bounds]])
    for name in ("invariance", "best_fit"):
        if name in want and (name == "invariance" or e):
            result[name] = torch.linalg.vector_norm(rows[name], dim=0)
    if spatial:
        result["spatial"] = torch.linalg.vector_norm(rows["spatial"], dim=0)
    if keep:
        source = rows["spatial"] if trivial else rows["equivariance"]
        picked = keep if trivial else list(range(len(keep)))
        result["equivariance"] = (
            [exact_idx[j] for j in keep],
            torch.linalg.vector_norm(source[:, picked], dim=0),
        )
    return result
