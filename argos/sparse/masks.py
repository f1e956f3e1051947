"""Per-frame state of a sparse forward: the mask pyramid and the gather/scatter plans.

One :class:`SparseContext` is shared by every sparse layer of a converted module. The executor
(or the user) activates it with the network-input mask around a forward; each layer then asks
for the mask at its own output resolution and for the indices of its geometry. Both are built
once per forward and cached, so layers with the same resolution and geometry share them.

Mask at a layer (the reference semantics): the input mask ``Tensor[B, H, W]`` is max-pooled to
the layer's output ``(h, w)`` (a cell is active when any input pixel it covers is; the cell
spans are those of ``adaptive_max_pool2d``), then dilated by ``ceil(halo / stride)`` cells,
``stride = H / h``. A layer's output is that of the dense layer times this mask.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from argos.sparse.env import triton_interpreting

__all__ = ["SparseContext", "TilePlan", "PointPlan", "Im2colPlan", "layer_mask", "KERNELS"]

KERNELS = ("auto", "torch", "triton")


def _or_pool(mask: torch.Tensor, ky: int, kx: int) -> torch.Tensor:
    """Bool Tensor[B, H, W] -> Tensor[B, H/ky, W/kx]: OR over ``ky x kx`` blocks (H, W multiples).

    ``ky + kx`` elementwise ORs of strided views: on a 640x640 mask about 15x faster than a
    max pool, which first converts the whole mask to float.
    """
    B, H, W = mask.shape
    h, w = H // ky, W // kx
    rows = mask.reshape(B, h, ky, W)
    out = rows[:, :, 0]
    for i in range(1, ky):
        out = out | rows[:, :, i]
    cols = out.reshape(B, h, w, kx)
    out = cols[..., 0]
    for j in range(1, kx):
        out = out | cols[..., j]
    return out


def _pool_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bool Tensor[B, H, W] -> Tensor[B, h, w]: a cell is active if any pixel it spans is."""
    H, W = mask.shape[-2:]
    if (H, W) == (h, w):
        return mask
    if H % h == 0 and W % w == 0:  # the same cells as adaptive pooling here
        return _or_pool(mask, H // h, W // w)
    return F.adaptive_max_pool2d(mask[:, None].to(torch.float32), (h, w))[:, 0] > 0


def _dilate(mask: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    """Box dilation by ``ry`` rows and ``rx`` columns (separable ORs of shifted views)."""
    if ry == 0 and rx == 0:
        return mask
    B, H, W = mask.shape
    out = mask
    if ry:
        padded = out.new_zeros(B, H + 2 * ry, W)
        padded[:, ry : ry + H] = out
        out = padded[:, 0:H]
        for i in range(1, 2 * ry + 1):
            out = out | padded[:, i : i + H]
    if rx:
        padded = out.new_zeros(B, H, W + 2 * rx)
        padded[:, :, rx : rx + W] = out
        out = padded[:, :, 0:W]
        for j in range(1, 2 * rx + 1):
            out = out | padded[:, :, j : j + W]
    return out


def _pad_to_tiles(mask: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Bool Tensor[B, h, w] padded with inactive cells to whole ``th x tw`` tiles."""
    B, h, w = mask.shape
    nty, ntx = -(-h // th), -(-w // tw)
    if (nty * th, ntx * tw) == (h, w):
        return mask
    padded = mask.new_zeros(B, nty * th, ntx * tw)
    padded[:, :h, :w] = mask
    return padded


def _tile_any(mask: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Bool Tensor[B, h, w] -> Tensor[B, ceil(h/th), ceil(w/tw)]: tiles holding an active cell."""
    return _or_pool(_pad_to_tiles(mask, th, tw), th, tw)


def _halo_cells(halo: float, H: int, W: int, h: int, w: int) -> Tuple[int, int]:
    """Dilation radius in cells of an ``(h, w)`` map for ``halo`` input pixels."""
    if halo <= 0:
        return 0, 0
    return math.ceil(halo * h / H - 1e-9), math.ceil(halo * w / W - 1e-9)


def layer_mask(mask: torch.Tensor, h: int, w: int, halo: float = 0.0) -> torch.Tensor:
    """The mask of a layer with output ``(h, w)``: bool Tensor[B, H, W] -> Tensor[B, h, w]."""
    H, W = mask.shape[-2:]
    return _dilate(_pool_mask(mask, h, w), *_halo_cells(halo, H, W, h, w))


@dataclass
class TilePlan:
    """Gather/scatter indices of a block-sparse conv (one geometry, one forward).

    Attributes:
        n (int): active tiles; the gathered batch is ``Tensor[n, C, tile_in[0], tile_in[1]]``.
        gather (Tensor[n * tih * tiw] int64): input rows (``b*H*W + y*W + x``) of the tiles.
        valid (Tensor[n * tih * tiw, 1], optional): 0 where a tile reaches into the conv's zero
            padding (its gather index was clamped); ``None`` when no tile does.
        src (Tensor[M] int64, optional): rows of the tile outputs that land on active cells;
            ``None`` when all of them do.
        dst (Tensor[M] int64): output rows (``b*h*w + y*w + x``) they go to.
        per_image (list[int]): active tiles per image.
    """

    n: int
    tile_in: Tuple[int, int]
    gather: torch.Tensor
    valid: Optional[torch.Tensor]
    src: Optional[torch.Tensor]
    dst: torch.Tensor
    per_image: List[int]


@dataclass
class PointPlan:
    """Indices of a per-position (1x1, unpadded) conv: ``out[dst] = conv(in[src])``; ``per_image``
    counts active positions."""

    src: torch.Tensor
    dst: torch.Tensor
    per_image: List[int]


@dataclass
class Im2colPlan:
    """Indices of a per-position kxk conv: row ``i`` of the gathered matrix
    ``Tensor[M, kh*kw*C]`` is the input window of output ``dst[i]`` (clamped indices, ``valid``
    zeroes the padding as in :class:`TilePlan`)."""

    gather: torch.Tensor
    valid: Optional[torch.Tensor]
    dst: torch.Tensor
    per_image: List[int]


@dataclass
class SparseStats:
    """What the last sparse forward did. Times in ms; MACs per image."""

    index_ms: float = 0.0
    gather_ms: float = 0.0
    conv_ms: float = 0.0
    scatter_ms: float = 0.0
    layers: int = 0
    dense_macs: float = 0.0  # MACs of the converted convs if they ran densely, per image
    macs: List[float] = field(default_factory=list)  # MACs they executed, per image


class SparseContext:
    """Mask and plan cache shared by the layers of a converted module.

    Args:
        halo: extra context around active pixels, in network-input pixels; each layer's mask is
            dilated by ``ceil(halo / stride)`` cells. The gather always adds the kernel's own
            halo; this only widens the region that is computed.
        reuse_buffers: each sparse layer keeps its output buffer (re-zeroed each frame) for the
            next frame when no tensor of the previous forward still uses it; saves the page
            faults of fresh allocations at the price of holding one map per layer.
        kernel: ``"auto"``: the fused Triton kernel (``sparse/triton_conv.py``) for ``groups == 1``
            convs on CUDA tensors when Triton is installed, the PyTorch paths otherwise;
            ``"torch"``: always the PyTorch paths (any device); ``"triton"``: always the kernel
            (CUDA, or the CPU under ``TRITON_INTERPRET=1``; an error elsewhere).
        triton_dense_above: with the Triton kernel, a layer whose active share of its output
            cells exceeds this runs its dense conv instead (then masked).

    Outside :meth:`activate` the converted module runs exactly as the original.
    """

    def __init__(
        self, halo: float = 0.0, reuse_buffers: bool = True, kernel: str = "auto", triton_dense_above: float = 0.7
    ) -> None:
        if halo < 0:
            raise ValueError(f"halo must be >= 0 pixels, got {halo}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if not 0.0 <= triton_dense_above <= 1.0:
            raise ValueError(f"triton_dense_above must be in [0, 1], got {triton_dense_above}")
        self.halo = float(halo)
        self.reuse_buffers = bool(reuse_buffers)
        self.kernel = kernel
        self.triton_dense_above = float(triton_dense_above)
        self.mode = "off"  # off | dense | empty | sparse
        self.trace: Optional[List[tuple]] = None  # set to [] to record one entry per layer call
        self.mask: Optional[torch.Tensor] = None
        self.stats = SparseStats()
        self._masks: Dict[tuple, torch.Tensor] = {}
        self._plans: Dict[tuple, object] = {}
        # Resolutions whose row plans the last forward of each (mask shape, device) used; the
        # next forward builds them all up front (see _prefetch_rows).
        self._row_levels: Dict[tuple, List[Tuple[int, int]]] = {}
        self._rows_built: List[Tuple[int, int]] = []
        self._triton_ok: Dict[torch.device, bool] = {}

    @contextlib.contextmanager
    def activate(self, mask: torch.Tensor) -> Iterator["SparseContext"]:
        """Run the converted module under ``mask`` (bool Tensor[B, H, W] or [H, W], the network
        input's size) for the duration of the ``with`` block.

        An all-active mask runs the original layers (bit-exact); an all-inactive one computes
        nothing and every converted conv returns zeros.
        """
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool Tensor[B, H, W], got {getattr(mask, 'dtype', type(mask).__name__)}")
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3 or mask.shape[1] == 0 or mask.shape[2] == 0:
            raise ValueError(f"mask must have shape (B, H, W) or (H, W), got {tuple(mask.shape)}")
        if self.mode != "off":
            raise RuntimeError("this SparseContext is already active (nested or concurrent forwards)")
        self.mask = mask
        self._masks, self._plans = {}, {}
        self.stats = SparseStats(macs=[0.0] * mask.shape[0])
        self.mode = "dense" if bool(mask.all()) else "sparse" if bool(mask.any()) else "empty"
        level_key = (tuple(mask.shape), mask.device)
        self._rows_built = []
        try:
            if self.mode == "sparse" and level_key in self._row_levels and self.use_triton(mask.device):
                self._prefetch_rows(self._row_levels[level_key], mask.device)
            yield self
            if self._rows_built:
                self._row_levels[level_key] = list(self._rows_built)
        finally:
            self.mode = "off"
            self.mask = None
            self._masks, self._plans = {}, {}

    # ---- per-resolution masks ----

    def check_input(self, x: torch.Tensor, h: int, w: int, name: str) -> None:
        """Refuse layers whose maps do not fit the mask (batch size, or not an image grid)."""
        assert self.mask is not None
        B, H, W = self.mask.shape
        if x.shape[0] != B:
            raise ValueError(f"{name}: batch of {x.shape[0]} but the active mask holds {B} frames")
        sy, sx = H / h, W / w
        if max(sy, sx) > 1.5 * min(sy, sx) + 1:
            raise RuntimeError(
                f"{name}: output map {h}x{w} is not a down-sampled grid of the {H}x{W} mask; this conv "
                "does not run on image positions (exclude it from convert())"
            )

    def mask_at(self, h: int, w: int) -> torch.Tensor:
        """Bool Tensor[B, h, w]: the mask of a layer whose output is ``h x w`` (cached)."""
        key = (h, w)
        m = self._masks.get(key)
        if m is None:
            t0 = time.perf_counter()
            assert self.mask is not None
            H, W = self.mask.shape[-2:]
            m = _dilate(self._pooled(h, w), *_halo_cells(self.halo, H, W, h, w))
            self._masks[key] = m
            self.stats.index_ms += (time.perf_counter() - t0) * 1e3
        return m

    def mask_as(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 1, h, w] of ``like``'s dtype and device: the layer mask as multiplier (cached)."""
        key = ("as", h, w, like.dtype, like.device)
        m = self._masks.get(key)
        if m is None:
            m = self.mask_at(h, w)[:, None].to(device=like.device, dtype=like.dtype)
            self._masks[key] = m
        return m

    def inactive_rows(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Tensor[K] int64: rows ``b*h*w + y*w + x`` of the inactive cells at ``(h, w)`` (cached)."""
        key = ("off", h, w, device)
        m = self._masks.get(key)
        if m is None:
            m = (~self.mask_at(h, w)).reshape(-1).nonzero().squeeze(1).to(device)
            self._masks[key] = m
        return m

    def _pooled(self, h: int, w: int) -> torch.Tensor:
        """The undilated mask at ``(h, w)``; pooled from the coarsest cached finer level that
        divides evenly (cheaper than from the input, same cells), else from the input."""
        assert self.mask is not None
        key = ("pooled", h, w)
        m = self._masks.get(key)
        if m is None:
            H, W = self.mask.shape[-2:]
            src = self.mask
            if H % h == 0 and W % w == 0:
                for k, v in self._masks.items():
                    if k[0] == "pooled" and k[1] % h == 0 and k[2] % w == 0 and H % k[1] == 0 and W % k[2] == 0:
                        if v.shape[-2] < src.shape[-2]:
                            src = v
            m = _pool_mask(src, h, w)
            self._masks[key] = m
        return m

    # ---- plans ----

    def _cached_plan(self, key: tuple, h: int, w: int, build):
        """The plan for ``key``, built from the mask at ``(h, w)`` on first use in this frame."""
        plan = self._plans.get(key)
        if plan is None:
            t0 = time.perf_counter()
            plan = build(self.mask_at(h, w))
            self._plans[key] = plan
            self.stats.index_ms += (time.perf_counter() - t0) * 1e3
        return plan

    def point_plan(self, H: int, W: int, h: int, w: int, stride: Tuple[int, int], device: torch.device) -> PointPlan:
        key = ("point", H, W, h, w, stride, device)
        return self._cached_plan(key, h, w, lambda m: _point_plan(m.to(device), H, W, stride))

    def row_plan(self, h: int, w: int, device: torch.device) -> PointPlan:
        """The active output rows ``b*h*w + y*w + x`` at ``(h, w)`` as int32 ``dst`` (``src`` is
        the same tensor): what the Triton kernel computes."""
        key = ("rows", h, w, device)

        def build(m: torch.Tensor) -> PointPlan:
            self._rows_built.append((h, w))
            m = m.to(device)
            dst = m.reshape(-1).nonzero().squeeze(1).to(torch.int32)  # row-major: b*h*w + y*w + x
            return PointPlan(dst, dst, m.reshape(m.shape[0], -1).sum(1).tolist())

        return self._cached_plan(key, h, w, build)

    def _prefetch_rows(self, levels: List[Tuple[int, int]], device: torch.device) -> None:
        """Build the row plans (and active counts) of all ``levels`` at once: one count and one
        ``nonzero`` for the whole pyramid. Each lazily built plan would wait for the GPU to
        drain its queue (the index count must reach the host) in the middle of the forward;
        here both waits happen before the first layer is launched."""
        t0 = time.perf_counter()
        assert self.mask is not None
        B = self.mask.shape[0]
        masks = [self.mask_at(h, w).to(device) for h, w in levels]
        per_image = torch.stack([m.reshape(B, -1).sum(1) for m in masks]).tolist()
        active = torch.cat([m.reshape(-1) for m in masks]).nonzero().squeeze(1)
        start = offset = 0
        for (h, w), m, counts in zip(levels, masks, per_image):
            n = int(sum(counts))
            dst = (active[start : start + n] - offset).to(torch.int32)
            self._plans[("rows", h, w, device)] = PointPlan(dst, dst, [int(c) for c in counts])
            self._plans[("count", h, w, (1, 1))] = n
            start, offset = start + n, offset + m.numel()
        self._rows_built = list(levels)
        self.stats.index_ms += (time.perf_counter() - t0) * 1e3

    def use_triton(self, device: torch.device) -> bool:
        """Whether groups-1 convs on ``device`` run the Triton kernel under this context."""
        if self.kernel == "torch":
            return False
        ok = self._triton_ok.get(device)
        if ok is None:
            if device.type == "cuda" or triton_interpreting():
                from argos.sparse import triton_conv  # imports triton: only when it can run

                ok = triton_conv.available(device)
                missing = triton_conv.triton is None
            else:
                ok, missing = False, False
            if self.kernel == "triton" and not ok:
                raise RuntimeError(
                    f"kernel='triton' cannot run on {device}: "
                    + ("triton is not installed" if missing else
                       "the kernel needs a CUDA device (or TRITON_INTERPRET=1 on the CPU)")
                )  # fmt: skip
            self._triton_ok[device] = ok
        return ok

    def tile_plan(
        self,
        H: int,
        W: int,
        h: int,
        w: int,
        geometry: Tuple[Tuple[int, int], ...],
        dtype: torch.dtype,
        device: torch.device,
    ) -> TilePlan:
        """``geometry``: ``(kernel, stride, padding (top, left), dilation, tile)``, each ``(y, x)``."""
        key = ("tile", H, W, h, w, geometry, dtype, device)
        return self._cached_plan(key, h, w, lambda m: _tile_plan(m.to(device), H, W, geometry, dtype))

    def im2col_plan(
        self,
        H: int,
        W: int,
        h: int,
        w: int,
        geometry: Tuple[Tuple[int, int], ...],
        dtype: torch.dtype,
        device: torch.device,
    ) -> Im2colPlan:
        """``geometry``: ``(kernel, stride, padding (top, left), dilation)``, each ``(y, x)``."""
        key = ("im2col", H, W, h, w, geometry, dtype, device)
        return self._cached_plan(key, h, w, lambda m: _im2col_plan(m.to(device), H, W, geometry, dtype))

    def count(self, h: int, w: int, tile: Tuple[int, int]) -> int:
        """Active ``tile``-sized tiles of the ``(h, w)`` mask, all frames together (cached)."""
        key = ("count", h, w, tile)
        n = self._plans.get(key)
        if n is None:
            m = self.mask_at(h, w)
            t0 = time.perf_counter()
            n = int(m.sum()) if tile == (1, 1) else int(_tile_any(m, *tile).sum())
            self._plans[key] = n
            self.stats.index_ms += (time.perf_counter() - t0) * 1e3
        return n  # type: ignore[return-value]

    def cached(self, key: tuple, make):
        """A per-forward cache for layers' own decisions (e.g. the chosen path)."""
        value = self._plans.get(key)
        if value is None:
            value = make()
            self._plans[key] = value
        return value

    def add_macs(self, dense: float, per_unit: float, per_image: List[int]) -> None:
        s = self.stats
        s.layers += 1
        s.dense_macs += dense
        for b, n in enumerate(per_image):
            s.macs[b] += per_unit * n


def _point_plan(m: torch.Tensor, H: int, W: int, stride: Tuple[int, int]) -> PointPlan:
    B, h, w = m.shape
    b, y, x = m.nonzero(as_tuple=True)
    dst = (b * h + y) * w + x
    if (H, W) == (h, w) and stride == (1, 1):
        src = dst
    else:
        src = (b * H + y * stride[0]) * W + x * stride[1]
    return PointPlan(src, dst, torch.bincount(b, minlength=B).tolist())


def _tile_plan(
    m: torch.Tensor, H: int, W: int, geometry: Tuple[Tuple[int, int], ...], dtype: torch.dtype
) -> TilePlan:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (th, tw) = geometry
    B, h, w = m.shape
    dev = m.device
    mp = _pad_to_tiles(m, th, tw)
    tiles = _or_pool(mp, th, tw)  # [B, nty, ntx]
    b, ty, tx = tiles.nonzero(as_tuple=True)
    n = int(b.numel())
    tih, tiw = (th - 1) * sh + dh * (kh - 1) + 1, (tw - 1) * sw + dw * (kw - 1) + 1

    # Input window of each tile; positions in the conv's zero padding are clamped and zeroed.
    iy = (ty * (th * sh) - ph)[:, None] + torch.arange(tih, device=dev)  # [n, tih]
    ix = (tx * (tw * sw) - pw)[:, None] + torch.arange(tiw, device=dev)  # [n, tiw]
    vy, vx = (iy >= 0) & (iy < H), (ix >= 0) & (ix < W)
    gather = ((b * H)[:, None, None] + iy.clamp(0, H - 1)[:, :, None]) * W + ix.clamp(0, W - 1)[:, None, :]
    valid = None
    if not (bool(vy.all()) and bool(vx.all())):
        valid = (vy[:, :, None] & vx[:, None, :]).reshape(-1, 1).to(dtype)

    # Tile outputs that land on active cells (inside the map; mp is False beyond it).
    oy = (ty * th)[:, None] + torch.arange(th, device=dev)  # [n, th]
    ox = (tx * tw)[:, None] + torch.arange(tw, device=dev)  # [n, tw]
    sel = mp[b[:, None, None], oy[:, :, None], ox[:, None, :]]  # [n, th, tw]
    dst = ((b * h)[:, None, None] + oy[:, :, None]) * w + ox[:, None, :]
    if bool(sel.all()):
        src, dst = None, dst.reshape(-1)
    else:
        sel = sel.reshape(-1)
        src, dst = sel.nonzero().squeeze(1), dst.reshape(-1)[sel]
    return TilePlan(n, (tih, tiw), gather.reshape(-1), valid, src, dst, torch.bincount(b, minlength=B).tolist())


def _im2col_plan(
    m: torch.Tensor, H: int, W: int, geometry: Tuple[Tuple[int, int], ...], dtype: torch.dtype
) -> Im2colPlan:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    B, h, w = m.shape
    dev = m.device
    b, y, x = m.nonzero(as_tuple=True)
    iy = (y * sh - ph)[:, None] + torch.arange(kh, device=dev) * dh  # [M, kh]
    ix = (x * sw - pw)[:, None] + torch.arange(kw, device=dev) * dw  # [M, kw]
    vy, vx = (iy >= 0) & (iy < H), (ix >= 0) & (ix < W)
    gather = ((b * H)[:, None, None] + iy.clamp(0, H - 1)[:, :, None]) * W + ix.clamp(0, W - 1)[:, None, :]
    valid = None
    if not (bool(vy.all()) and bool(vx.all())):
        valid = (vy[:, :, None] & vx[:, None, :]).reshape(-1, 1).to(dtype)
    dst = (b * h + y) * w + x
    return Im2colPlan(gather.reshape(-1), valid, dst, torch.bincount(b, minlength=B).tolist())
