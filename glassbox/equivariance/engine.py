"""Every finite-group measure of one layer, streamed one group element at a time.

:class:`LayerMeasure` is built from a layer's features for the original images and then
fed the features of each transformed copy as its forward pass produces them, so the model
runs the |G| batches it would run anyway (one per element) and nothing but the originals
is kept between them:

- the originals are copied once, channel-major, into a (C, B·H·W) matrix Z: a column per
  (image, position); its norms, and for the best fit its Gram matrix [Z; 1][Z; 1]ᵀ (the
  constant row makes the fitted channel map affine), are computed once;
- per element, a block of images at a time (:func:`_chunks`): the copy's maps are written
  channel-major into one buffer Y; an exact element permutes pixels, so S_g φ(x) is one
  column gather of Z, shared by the spatial, known-action and best-fit measures, and a
  regular field's fibre representation is one row gather; every error is one difference
  written into a scratch buffer and one norm; the best-fit cross products [S_g Z; 1] Yᵀ
  (features centred by the originals' fit mean) accumulate over the fit blocks (one GEMM
  per block), the map is one float64 solve, and
  each held-out block's residual Y − Wᵀ[S_g Z; 1] is one GEMM accumulated onto Y's copy.

On the CPU a block is about :data:`CHUNK_BYTES` (a core's L2 cache), so the ops of a block
reuse what the previous op left in the cache instead of streaming the whole layer through
memory once per op; elsewhere a block is all fit or all held-out images. Loops run over
group elements and blocks, never over single images on other devices. Elements that need
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
from glassbox.equivariance.measures import ChannelMapFit, fit_channel_map

Value = tuple[GroupElement, str, torch.Tensor]


def _rel(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0/0 = 0 (a dead layer matches perfectly)."""
    return torch.where(num == 0, torch.zeros_like(num), num / den)


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
SHARED_CPU_BYTES = 256 * 2**20  # per buffer kept by the shared CPU workspace


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


class LayerMeasure:
    """All finite measures of one layer: built from the originals' features, then fed each
    transformed copy's features with :meth:`add`; :meth:`values` returns the results.

    Args:
        f0: (B, ...) features of the original images (copied: the caller's tensor may be
            overwritten by a later in-place op).
        elements: the group elements, in the order their copies will be added.
        n_fit: images fitting the best-fit map (the first ``n_fit``); 0 without best fit.
        fibre: element → fibre action of a GeometricTensor layer (``None`` result: g ∉ G),
            or ``None`` for a plain tensor layer.
        custom_action: a user-given known action on (B, ...) features.
        workspace: scratch buffers to reuse across layers (a fresh one if ``None``).
        slot: the key of this layer's copy of the originals in ``workspace`` (one per layer
            that is alive at the same time).
    """

    def __init__(
        self,
        f0: torch.Tensor,
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
        slot: str = "z0",
    ) -> None:
        self.elements = list(elements)
        self.want = set(measures)
        self.exact, self.ridge, self.fibre, self.custom = exact, ridge, fibre, custom_action
        self.is_output, self.what = is_output, what
        self.ws = workspace or Workspace()
        self.notes: list[str] = []
        self.out: list[tuple[int, str, torch.Tensor]] = []
        self.maps = f0.dim() == 4
        if not self.maps:
            self.f0 = f0.detach().clone()
            self.ref = torch.linalg.vector_norm(self.f0)
            return
        b, c, h, w = f0.shape
        if "best_fit" in self.want and n_fit * h * w < min_fit_ratio * c:
            # too few fitting rows (images × positions) per channel: the least-squares map would
            # over-fit and the held-out error would measure the over-fitting instead
            self.want.discard("best_fit")
            self.notes.append(
                f"best_fit ({n_fit}×{h}×{w} fitting rows < {min_fit_ratio:g} × {c} channels)"
            )
        self.known = "equivariance" in self.want and fibre is not None and custom_action is None
        # measures that transform φ(x)
        self.transforms = bool({"spatial", "best_fit"} & self.want or self.known)
        self.n_fit = n_fit if "best_fit" in self.want else 0
        hw = h * w
        z0 = self.ws.get(slot, (c, b * hw), f0)  # originals, channel-major: (C, B·H·W)
        z0.view(c, b, hw).copy_(f0.reshape(b, c, hw).transpose(0, 1))
        self.z0 = z0
        self.f0 = z0.view(c, b, h, w).transpose(0, 1)  # (B, C, H, W) view of the copy
        self.ref = torch.linalg.vector_norm(z0)
        # small blocks on the CPU for plain layers (AlexNet's wide early maps are memory-bound);
        # GeometricTensor layers stay in one block per split: small ones measured slower for
        # the glass-box net
        small = f0.device.type == "cpu" and fibre is None
        self.bounds = _chunks(b, self.n_fit, 3 * c * hw * f0.element_size(), small)
        if self.n_fit:
            split = self.n_fit * hw
            zf = z0[:, :split]
            # the fit is computed on features centred by the originals' fit mean μ (the same
            # for S_g φ(x): a pixel permutation keeps every channel's sum), which makes the
            # affine system block-diagonal and as well conditioned as a linear one
            self.mean = zf.mean(1, keepdim=True)
            zc = zf - self.mean
            gram = torch.empty(c + 1, c + 1, dtype=f0.dtype, device=f0.device)
            gram[:c, :c] = zc @ zc.T
            gram[:c, c] = gram[c, :c] = zc.sum(1)
            gram[c, c] = split
            self.gram = gram  # of [S_g Z − μ; 1] for every exact g
            self.solver: ChannelMapFit | None = None  # factored at the first element's fit
            self.test_ref = torch.linalg.vector_norm(z0[:, split:])

    def _emit(self, i: int, measure: str, num: torch.Tensor, den: torch.Tensor) -> None:
        self.out.append((i, measure, _rel(num, den)))

    def add(self, i: int, fg: torch.Tensor) -> None:
        """Measure the features ``fg`` (B, ...) of the copy transformed by ``elements[i]``."""
        el = self.elements[i]
        if "equivariance" in self.want and self.custom is not None:
            pred = self.custom(self.f0, el)
            self._emit(i, "equivariance", torch.linalg.vector_norm(fg - pred), self.ref)
        if not self.maps:
            if "invariance" in self.want:
                self._emit(i, "invariance", torch.linalg.vector_norm(fg - self.f0), self.ref)
            if "consistency" in self.want and self.is_output and fg.dim() == 2 and fg.shape[1] > 1:
                same = (fg.argmax(-1) == self.f0.argmax(-1)).float().mean()
                self.out.append((i, "consistency", same))
            return
        exact_el = self.transforms and el.is_exact_on(*fg.shape[-2:])
        self._blocked(i, el, fg, exact_el)
        if self.transforms and not exact_el:
            self._interpolated(i, el, fg)

    def _blocked(self, i: int, el: GroupElement, fg: torch.Tensor, exact_el: bool) -> None:
        b, c, h, w = fg.shape
        hw = h * w
        ws, z0, like = self.ws, self.z0, self.z0
        action, trivial = None, False
        if exact_el and self.known:
            action = self.fibre(el)
            if action is None:
                self.notes.append(f"equivariance@{el.name} (not in the layer's e2cnn group)")
            else:
                trivial = action.is_identity  # trivial fields: the known action is the spatial one
        twisted = action is not None and not trivial
        spatial = exact_el and ("spatial" in self.want or trivial)
        fit = exact_el and self.n_fit > 0
        inv = "invariance" in self.want
        rows = torch.zeros(4, len(self.bounds), dtype=fg.dtype, device=fg.device)
        r_inv, r_spatial, r_equi, r_fit = rows.unbind(0)
        cross = weights = None
        if fit:
            cross = torch.zeros(c + 1, c, dtype=fg.dtype, device=fg.device)
        if exact_el:
            columns = _columns(b, h, w, el, str(fg.device))
        for r, (s, t) in enumerate(self.bounds):
            n = t - s
            cols = n * hw
            y = ws.get("y", (c, cols), like)  # φ(g·x), channel-major
            y.view(c, n, hw).copy_(fg[s:t].reshape(n, c, hw).transpose(0, 1))
            tmp = ws.get("tmp", (c, cols), like)
            if inv:  # φ(g·x) − φ(x)
                torch.linalg.vector_norm(
                    torch.sub(y, z0[:, s * hw : t * hw], out=tmp), out=r_inv[r]
                )
            if not exact_el:
                continue
            # [S_g φ(x); 1]: one column gather, and a constant row for the best fit's intercept
            xs1 = ws.get("xs", (c + 1, cols), like)
            xs = xs1[:c]
            torch.index_select(z0, 1, columns[s * hw : t * hw], out=xs)
            if twisted:  # ρ(g) S_g φ(x) − φ(g·x), on the channel rows
                if action.index is not None:
                    torch.index_select(xs, 0, action.index, out=tmp)
                else:
                    torch.mm(action.matrix, xs, out=tmp)
                torch.linalg.vector_norm(tmp.sub_(y), out=r_equi[r])
            if spatial:  # φ(g·x) − S_g φ(x)
                torch.linalg.vector_norm(torch.sub(y, xs, out=tmp), out=r_spatial[r])
            if fit:  # [S_g φ(x) − μ; 1]: centred, and a constant row for the intercept
                xs.sub_(self.mean)
                xs1[c].fill_(1)
            if fit and s < self.n_fit:  # Y ≈ Wᵀ (X − μ) + b: cross products [X − μ; 1] Yᵀ
                cross.addmm_(xs1, y.T)
            if fit and s >= self.n_fit:  # held out: Y − Wᵀ(X − μ) − b, over Y (its last use)
                if weights is None:
                    if self.solver is None:
                        self.solver = ChannelMapFit(self.gram, self.ridge)
                    weights = self.solver(cross).T.contiguous()
                torch.linalg.vector_norm(y.addmm_(weights, xs1, alpha=-1), out=r_fit[r])
        if inv:
            self._emit(i, "invariance", torch.linalg.vector_norm(r_inv), self.ref)
        if spatial and "spatial" in self.want:
            self._emit(i, "spatial", torch.linalg.vector_norm(r_spatial), self.ref)
        if action is not None:
            source = r_spatial if trivial else r_equi
            self._emit(i, "equivariance", torch.linalg.vector_norm(source), self.ref)
        if fit:
            self._emit(i, "best_fit", torch.linalg.vector_norm(r_fit), self.test_ref)

    def _interpolated(self, i: int, el: GroupElement, fg: torch.Tensor) -> None:
        """An element the layer's grid cannot represent: the measures on interpolated maps."""
        b, c, h, w = fg.shape
        xg = transform_grid(self.f0, el, self.exact, what=self.what)  # (B, C, H, W)
        if "spatial" in self.want:
            self._emit(i, "spatial", torch.linalg.vector_norm(fg - xg), self.ref)
        if self.known:
            action = self.fibre(el)
            if action is None:
                self.notes.append(f"equivariance@{el.name} (not in the layer's e2cnn group)")
            else:
                self._emit(i, "equivariance", torch.linalg.vector_norm(fg - action(xg)), self.ref)
        if "best_fit" in self.want:  # an affine map: a constant-1 row makes the intercept
            cols, split = b * h * w, self.n_fit * h * w
            x = xg.transpose(0, 1).reshape(c, cols)
            x = torch.cat([x - x[:, :split].mean(1, keepdim=True), xg.new_ones(1, cols)])
            y = fg.transpose(0, 1).reshape(c, cols)
            x_fit, y_fit = x[:, :split], y[:, :split]
            weights = fit_channel_map(x_fit @ x_fit.T, x_fit @ y_fit.T, self.ridge)
            resid = y[:, split:] - weights.T @ x[:, split:]
            self._emit(i, "best_fit", torch.linalg.vector_norm(resid), self.test_ref)

    def values(self) -> tuple[list[Value], list[str]]:
        """([(element, measure, 0-d value)] by measure then element, notes on what was left
        out and why)."""
        order = {m: k for k, m in enumerate(("invariance", "equivariance", "spatial", "best_fit"))}
        out = sorted(self.out, key=lambda v: (order.get(v[1], len(order)), v[0]))
        return [(self.elements[i], m, v) for i, m, v in out], list(dict.fromkeys(self.notes))


def _chunks(batch: int, n_fit: int, per_image: int, small: bool) -> list[tuple[int, int]]:
    """Image ranges processed together: the fit images first, then the held-out ones (never
    mixed), each range's working set about :data:`CHUNK_BYTES` if ``small`` (one range per
    split otherwise)."""
    size = max(1, CHUNK_BYTES // max(per_image, 1)) if small else batch
    bounds = []
    for lo, hi in ((0, n_fit), (n_fit, batch)) if n_fit else ((0, batch),):
        bounds += [(s, min(hi, s + size)) for s in range(lo, hi, size)]
    return bounds
