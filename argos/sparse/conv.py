"""Sparse-aware convolutions: gather the active inputs, run a dense kernel, scatter back.

Every path is exact to "dense conv output times the layer's mask" (see ``masks.py``):

- **point**: 1x1 unpadded convs without groups. The input rows of the active positions
  (channels-last, ``Tensor[M, C_in]``) are gathered with ``index_select``, multiplied by the
  weight with one ``addmm`` and copied into the zeroed output with ``index_copy_``.
- **tile** (SBNet-style block sparsity): the output map is cut into ``th x tw`` tiles; each
  active tile's input window (with the kernel's halo, ``(t-1)*s + d*(k-1) + 1`` pixels a side)
  is gathered into a dense channels-last batch ``Tensor[n, C_in, tih, tiw]``, one unpadded
  ``F.conv2d`` computes every tile, and the outputs on active cells are scattered back.
- **im2col**: per active position, its ``kh*kw`` input rows are gathered into one row of a
  ``Tensor[M, kh*kw*C_in]`` matrix and one GEMM computes all outputs. No tile rounding, so it
  wins on coarse maps with many channels, where a tile covers a large part of the image.
- **dense**: the whole map, then masked; for masks that cover most of a coarse map.

Each kxk layer picks the cheapest of tile (2, 4, 8, 16 cells), im2col and dense under a small
cost model of its shape and the current mask (once per frame and shape; see
:meth:`_SparseMixin._choose_path`), unless ``tile`` forces one.

Tensors leave a sparse layer channels-last (``Tensor[B, C, h, w]`` viewing ``[B, h, w, C]``
memory), so the next layer's gather reads whole rows without a layout copy.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from argos.fusion import fold_batchnorm_params
from argos.sparse.masks import SparseContext

__all__ = ["SparseConv2d", "SparseConvBlock", "MaskedDense", "ELEMENTWISE_ACTIVATIONS"]

# Activations applied per element: safe to run on tiles or gathered rows.
ELEMENTWISE_ACTIVATIONS = (
    nn.Identity, nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.GELU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
)  # fmt: skip

TileSpec = Union[
    None, str, int, Tuple[int, int], Callable[[int, int, Tuple[int, int], Tuple[int, int]], Tuple[int, int]]
]


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _padding(conv: nn.Conv2d) -> Tuple[int, int]:
    """(top, left) zero padding; bottom/right follow from the output size."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        # 'same': PyTorch puts the smaller half on the top/left.
        return tuple((d * (k - 1)) // 2 for d, k in zip(conv.dilation, conv.kernel_size))  # type: ignore[return-value]
    return _pair(conv.padding)


def _out_size(conv: nn.Conv2d, H: int, W: int) -> Tuple[int, int]:
    if isinstance(conv.padding, str):
        if conv.padding == "same":
            return H, W
        pads = (0, 0)
    else:
        pads = _pair(conv.padding)
    out = []
    for size, p, d, k, s in zip((H, W), pads, conv.dilation, conv.kernel_size, conv.stride):
        out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Tensor[B, C, H, W] -> contiguous Tensor[B*H*W, C] (a view when ``x`` is channels-last)."""
    # reshape alone could return a view with strided rows (e.g. for B=1 NCHW), which gathers slowly.
    x = x.contiguous(memory_format=torch.channels_last)
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


# Cost model of the paths, in multiply-accumulates (MACs) of the dense conv kernel: each path's
# arithmetic throughput relative to that kernel, and the cost of moving one float (gather,
# scatter, mask multiply) or zero-filling one. Fitted to benchmarks/sparse_layers.py on yolov5m
# shapes (x86 AVX-512, MKL/oneDNN, 1 thread): a GEMM of gathered rows runs at ~0.7 of the conv
# kernel's speed with 48 output channels and ~0.9 from 192 up; tiles of 2 / 4 / 8 / 16 cells a
# side at ~0.6 / 0.85 / 0.92 / 0.95. Only the ranking of the candidates matters.
TILE_EFFICIENCY = {2: 0.6, 4: 0.85, 8: 0.92, 16: 0.95}
FLOAT_COST = 30.0
ZERO_COST = 8.0  # zero-filling one float of a sparse layer's output map
ROW_FLOATS = 32  # a gathered row costs like this many more floats (per-row overhead of index_select)


def gemm_efficiency(c_out: int) -> float:
    """Throughput of ``[M, K] @ [K, c_out]`` relative to the dense conv kernel."""
    return min(0.92, max(0.6, 0.7 + 0.1 * math.log2(max(c_out, 1) / 48)))


def _key(t: Optional[torch.Tensor]) -> Optional[tuple]:
    """Identity of a tensor's current contents (storage, dtype, in-place version)."""
    if t is None:
        return None
    return (t.data_ptr(), t.dtype, None if t.is_inference() else t._version)


class _SparseMixin:
    """The sparse forward shared by :class:`SparseConv2d` and :class:`SparseConvBlock`."""

    context: SparseContext
    tile: TileSpec
    # What inactive outputs hold. 0 is the reference semantics; the executor sets a large
    # negative value on detection heads' class-logit convs so inactive cells score 0.
    inactive_value: float = 0.0

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # Device/dtype moves invalidate the folded weights, GEMM weights and output buffers.
        for name in ("_folded", "_folded_key", "_wm", "_out"):
            self.__dict__.pop(name, None)
        return super()._apply(fn, recurse)  # type: ignore[misc]

    def _mask(self, y: torch.Tensor, ctx: SparseContext) -> torch.Tensor:
        """Dense map (a temporary of ours: changed in place) -> masked map (inactive cells set
        to ``inactive_value``)."""
        h, w = y.shape[-2:]
        if y.is_contiguous(memory_format=torch.channels_last):
            # Whole rows of C floats: a broadcast multiply over the innermost dim is slow here.
            _rows(y).index_fill_(0, ctx.inactive_rows(h, w, y.device), self.inactive_value)
            return y
        if self.inactive_value == 0.0:
            return y.mul_(ctx.mask_as(h, w, y))
        m = ctx.mask_at(h, w)[:, None].to(y.device)
        return y.masked_fill_(~m, self.inactive_value)

    def _sparse_forward(
        self,
        conv: nn.Conv2d,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        act: Optional[nn.Module],
        post_act: Optional[nn.Module],
    ) -> torch.Tensor:
        """``act``: elementwise, applied to computed values; ``post_act``: anything else, applied
        to the scattered map, which is then re-masked."""
        ctx = self.context
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects Tensor[B, C, H, W], got shape {tuple(x.shape)}")
        B, C, H, W = x.shape
        h, w = _out_size(conv, H, W)
        c_out = weight.shape[0]
        k = conv.kernel_size
        macs_per_pos = c_out * (C // conv.groups) * k[0] * k[1]
        if ctx.mode == "empty":
            ctx.add_macs(h * w * macs_per_pos, 0, [0] * B)
            return x.new_full((B, h, w, c_out), self.inactive_value).permute(0, 3, 1, 2)
        ctx.check_input(x, h, w, type(self).__name__)
        stats = ctx.stats
        stride, pad, dil = tuple(conv.stride), _padding(conv), tuple(conv.dilation)

        path = self._choose_path(ctx, H, W, h, w, C, c_out, conv, x.device)

        if path[0] == "dense":
            t1 = time.perf_counter()
            y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            if act is not None:
                y = _act_inplace(act, y)
            t2 = time.perf_counter()
            if post_act is not None:
                y = post_act(y)
            y = self._mask(y, ctx)
            t3 = time.perf_counter()
            stats.conv_ms += (t2 - t1) * 1e3
            stats.scatter_ms += (t3 - t2) * 1e3
            ctx.add_macs(h * w * macs_per_pos, h * w * macs_per_pos, [1] * B)
            if ctx.trace is not None:
                ctx.trace.append((path, (C, H, W), (c_out, h, w), k, stride, 0.0, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
            return y

        ta = time.perf_counter()
        out = self._output(ctx, B * h * w, c_out, x)
        zero_ms = (time.perf_counter() - ta) * 1e3
        src = None
        if path[0] == "triton":
            return self._triton_forward(ctx, conv, x, weight, bias, act, post_act, out, (h, w), zero_ms)
        if path[0] == "point":
            plan = ctx.point_plan(H, W, h, w, stride, x.device)
            t0 = time.perf_counter()
            rows = _rows(x)
            g = rows.index_select(0, plan.src)
            t1 = time.perf_counter()
            y = _matmul(g, self._weight_matrix(weight), bias)
            unit = macs_per_pos
        elif path[0] == "im2col":
            plan = ctx.im2col_plan(H, W, h, w, (k, stride, pad, dil), x.dtype, x.device)
            t0 = time.perf_counter()
            rows = _rows(x)
            g = rows.index_select(0, plan.gather)
            if plan.valid is not None:
                g.mul_(plan.valid)
            t1 = time.perf_counter()
            y = _matmul(g.view(-1, k[0] * k[1] * C), self._weight_matrix(weight), bias)
            unit = macs_per_pos
        else:
            th, tw = path[1]
            plan = ctx.tile_plan(H, W, h, w, (k, stride, pad, dil, (th, tw)), x.dtype, x.device)
            t0 = time.perf_counter()
            tih, tiw = plan.tile_in
            rows = _rows(x)
            g = rows.index_select(0, plan.gather)
            if plan.valid is not None:
                g.mul_(plan.valid)
            tiles = g.view(plan.n, tih, tiw, C).permute(0, 3, 1, 2)  # channels-last batch
            t1 = time.perf_counter()
            y = F.conv2d(tiles, weight, bias, conv.stride, 0, conv.dilation, conv.groups)
            src = plan.src
            unit = th * tw * macs_per_pos
        if act is not None:
            y = _act_inplace(act, y)
        t2 = time.perf_counter()
        if y.ndim == 4:
            y = _rows(y)
        if src is not None:
            y = y.index_select(0, src)
        out.index_copy_(0, plan.dst, y)
        t3 = time.perf_counter()
        ctx.add_macs(h * w * macs_per_pos, unit, plan.per_image)
        stats.gather_ms += (t1 - t0) * 1e3
        stats.conv_ms += (t2 - t1) * 1e3
        stats.scatter_ms += (t3 - t2) * 1e3 + zero_ms
        if ctx.trace is not None:
            ctx.trace.append(
                (path, (C, H, W), (c_out, h, w), k, stride, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3 + zero_ms)
            )
        out = out.view(B, h, w, c_out).permute(0, 3, 1, 2)
        if post_act is not None:
            out = self._mask(post_act(out), ctx)
        return out

    def _triton_forward(
        self,
        ctx: SparseContext,
        conv: nn.Conv2d,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        act: Optional[nn.Module],
        post_act: Optional[nn.Module],
        out: torch.Tensor,
        out_hw: Tuple[int, int],
        zero_ms: float,
    ) -> torch.Tensor:
        """Gather, conv, activation and scatter in one Triton kernel (``sparse/triton_conv.py``)."""
        from argos.sparse import triton_conv

        B, C = x.shape[:2]
        h, w = out_hw
        c_out, k = weight.shape[0], conv.kernel_size
        plan = ctx.row_plan(h, w, x.device)
        t0 = time.perf_counter()
        xc = x.contiguous(memory_format=torch.channels_last)
        fused = act if act is None or type(act) in triton_conv.ACTIVATIONS else None
        t1 = time.perf_counter()
        triton_conv.sparse_conv(
            xc, self._weight_matrix(weight), bias, plan.dst, out, out_hw, k, _pair(conv.stride), _padding(conv),
            _pair(conv.dilation), fused,
        )  # fmt: skip
        if act is not None and fused is None:
            idx = plan.dst.long()
            out.index_copy_(0, idx, _act_inplace(act, out.index_select(0, idx)))
        t2 = time.perf_counter()
        macs_per_pos = c_out * C * k[0] * k[1]
        ctx.add_macs(h * w * macs_per_pos, macs_per_pos, plan.per_image)
        stats = ctx.stats
        stats.gather_ms += (t1 - t0) * 1e3
        stats.conv_ms += (t2 - t1) * 1e3
        stats.scatter_ms += zero_ms
        if ctx.trace is not None:
            ctx.trace.append((("triton",), (C,) + tuple(x.shape[-2:]), (c_out, h, w), k, _pair(conv.stride),
                              (t1 - t0) * 1e3, (t2 - t1) * 1e3, zero_ms))  # fmt: skip
        y = out.view(B, h, w, c_out).permute(0, 3, 1, 2)
        if post_act is not None:
            y = self._mask(post_act(y), ctx)
        return y

    def _choose_path(
        self,
        ctx: SparseContext,
        H: int,
        W: int,
        h: int,
        w: int,
        C: int,
        c_out: int,
        conv: nn.Conv2d,
        device: torch.device,
    ) -> tuple:
        """The cheapest path under the cost model above for this layer's shape and the current
        mask (decided once per frame and shape); ``tile`` can force one. Candidates: ``point``
        (1x1 unpadded, no groups) or ``im2col`` (other convs without groups), ``tile`` of 2..16
        cells (not for point convs), and ``dense``.

        With the Triton kernel in use (see :class:`SparseContext` ``kernel``) and ``tile`` left
        to ``None``, groups-1 convs run ``triton`` unless the layer's active share exceeds
        ``ctx.triton_dense_above`` (then ``dense``); grouped convs run ``dense`` there."""
        tile = self.tile
        k, s, d, g = conv.kernel_size, conv.stride, conv.dilation, conv.groups
        pointwise = k == (1, 1) and _padding(conv) == (0, 0) and g == 1
        if tile == "dense":
            return ("dense",)
        if tile is None and ctx.use_triton(device):
            from argos.sparse.triton_conv import supports

            if not supports(conv):
                return ("dense",)
            B = ctx.mask.shape[0]  # type: ignore[union-attr]
            share = ctx.count(h, w, (1, 1)) / float(B * h * w)
            return ("dense",) if share > ctx.triton_dense_above else ("triton",)
        if pointwise:
            if tile is not None:
                return ("point",)
        elif tile == "im2col" and g == 1:
            return ("im2col",)
        elif tile is not None and tile != "im2col":
            return ("tile", _pair(tile(h, w, k, s)) if callable(tile) else _pair(tile))
        key = ("path", H, W, h, w, C, c_out, k, s, d, g)

        def choose() -> tuple:
            macs = c_out * (C // g) * k[0] * k[1]
            row = (C + ROW_FLOATS) * FLOAT_COST  # gathering one input row
            out = c_out * FLOAT_COST  # scattering one output row
            B = ctx.mask.shape[0]  # type: ignore[union-attr]
            zero = B * h * w * c_out * ZERO_COST
            costs = {("dense",): B * h * w * (macs + c_out * FLOAT_COST)}
            if g == 1:
                m = ctx.count(h, w, (1, 1))
                costs[("point",) if pointwise else ("im2col",)] = zero + m * (
                    macs / gemm_efficiency(c_out) + k[0] * k[1] * row + out
                )
            if not pointwise:
                for t, eff in TILE_EFFICIENCY.items():
                    if t > 2 * max(h, w):
                        continue
                    n = ctx.count(h, w, (t, t))
                    tih, tiw = (t - 1) * s[0] + d[0] * (k[0] - 1) + 1, (t - 1) * s[1] + d[1] * (k[1] - 1) + 1
                    costs[("tile", (t, t))] = zero + n * (t * t * (macs / eff + out) + tih * tiw * row)
            return min(costs, key=costs.__getitem__)

        return ctx.cached(key, choose)

    def _output(self, ctx: SparseContext, n: int, c: int, like: torch.Tensor) -> torch.Tensor:
        """Zeroed Tensor[n, c] for the scatter.

        A fresh ``torch.zeros`` of a large map costs mostly page faults (the allocator returns
        big blocks to the OS on free); zeroing last frame's buffer again is several times
        cheaper. The buffer is reused only when nothing else holds its storage any more (no
        output of the previous forward still alive), and always fully re-zeroed, so in-place
        ops of the caller on earlier outputs cannot leak into it.
        """
        buf = self.__dict__.get("_out") if ctx.reuse_buffers else None
        if (
            buf is not None
            and buf.shape == (n, c)
            and buf.dtype == like.dtype
            and buf.device == like.device
            and buf.is_inference() == torch.is_inference_mode_enabled()
            and _unshared(buf)
        ):
            return buf.fill_(self.inactive_value)
        buf = like.new_full((n, c), self.inactive_value)
        if ctx.reuse_buffers and _use_count is not None:
            self.__dict__["_out"] = buf
        return buf

    def _weight_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """Tensor[kh*kw*C_in, C_out] for the GEMM paths, rows in (kh, kw, C_in) order (cached)."""
        cache = self.__dict__.get("_wm")
        # The cache holds ``weight`` itself, so its storage cannot be freed and reused by another.
        if cache is None or cache[0] is not weight or cache[1] != _key(weight):
            wm = weight.detach().permute(2, 3, 1, 0).reshape(-1, weight.shape[0]).contiguous()
            cache = (weight, _key(weight), wm)
            self.__dict__["_wm"] = cache
        return cache[2]


_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _unshared(t: torch.Tensor) -> bool:
    """No tensor but ``t`` (and the temporary storage handle) references ``t``'s storage."""
    return _use_count is not None and _use_count(t.untyped_storage()._cdata) <= 2


def _act_inplace(act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``act(y)`` in place where PyTorch has an in-place form (``y`` is a temporary of ours)."""
    t = type(act)
    if t is nn.SiLU:
        return F.silu(y, inplace=True)
    if t is nn.ReLU:
        return F.relu_(y)
    if t is nn.LeakyReLU:
        return F.leaky_relu_(y, act.negative_slope)
    if t is nn.Hardswish:
        return F.hardswish(y, inplace=True)
    return act(y)


def _matmul(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)


def _check_tile(tile: TileSpec) -> TileSpec:
    if tile is None or callable(tile):
        return tile
    if isinstance(tile, str):
        if tile not in ("im2col", "dense"):
            raise ValueError(f"tile must be None, a size, a callable, 'im2col' or 'dense'; got {tile!r}")
        return tile
    t = _pair(tile)
    if min(t) < 1:
        raise ValueError(f"tile must be >= 1 output cells a side, got {tile}")
    return t


def _split_act(act: Optional[nn.Module]) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
    """(elementwise act fused into the sparse compute, other act applied to the dense map)."""
    if act is None or type(act) is nn.Identity:
        return None, None
    if type(act) in ELEMENTWISE_ACTIVATIONS:
        return act, None
    return None, act


class SparseConv2d(_SparseMixin, nn.Conv2d):
    """An ``nn.Conv2d`` that, under an active :class:`SparseContext`, computes only where the
    layer's mask is active and returns zeros elsewhere. Holds the original's parameters (same
    state-dict keys); outside a sparse context it is the plain ``nn.Conv2d``.

    Build with :meth:`from_conv`. Only ``padding_mode="zeros"``.
    """

    context: SparseContext

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, context: SparseContext, tile: TileSpec = None) -> "SparseConv2d":
        if conv.padding_mode != "zeros":
            raise ValueError(f"SparseConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
        )  # fmt: skip
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        new.context = context
        new.tile = _check_tile(tile)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context.mode in ("off", "dense"):
            return super().forward(x)
        return self._sparse_forward(self, x, self.weight, self.bias, None, None)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tile={'auto' if self.tile is None else self.tile}"


class SparseConvBlock(_SparseMixin, nn.Module):
    """``act(bn(conv(x)))`` (an ultralytics ``Conv`` block) with the BatchNorm folded into the
    convolution on the sparse path.

    The block's output, after the activation, is what gets masked. The dense path (no context
    or an all-active mask) runs the original ``conv``, ``bn`` and ``act`` modules, so it is
    bit-exact. State-dict keys are those of the original block (``conv``, ``bn``).

    Args:
        conv: the block's ``nn.Conv2d`` (``padding_mode="zeros"``).
        bn: its ``BatchNorm2d`` (eval statistics are folded), or ``None`` for a fused block.
        act: the activation module, or ``None``.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: Optional[nn.BatchNorm2d],
        act: Optional[nn.Module],
        context: SparseContext,
        tile: TileSpec = None,
    ) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"SparseConvBlock supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        self.conv = conv
        self.bn = bn
        self.act = act if act is not None else nn.Identity()
        self.context = context
        self.tile = _check_tile(tile)
        self._fused_act, self._post_act = _split_act(self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context.mode in ("off", "dense"):
            y = self.conv(x)
            if self.bn is not None:
                y = self.bn(y)
            return self.act(y)
        if self.training and self.bn is not None:
            raise RuntimeError("SparseConvBlock folds BatchNorm eval statistics: call .eval() before a sparse forward")
        weight, bias = self._fold()
        return self._sparse_forward(self.conv, x, weight, bias, self._fused_act, self._post_act)

    def _fold(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Folded (weight, bias); recomputed when any source tensor changes (load, ``.to``)."""
        conv, bn = self.conv, self.bn
        sources = [conv.weight, conv.bias]
        if bn is not None:
            sources += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        key = tuple(_key(t) for t in sources)
        if key != self.__dict__.get("_folded_key"):
            w, b = conv.weight, conv.bias
            if bn is not None:
                w, b = fold_batchnorm_params(w, b, bn)
            self._folded = (w.detach().contiguous(), None if b is None else b.detach().contiguous())
            self._folded_key = key
        return self._folded


class MaskedDense(nn.Module):
    """Dense fallback for convs the sparse path cannot run (custom ``forward``, non-zero padding
    modes): runs ``module`` on the whole map, then multiplies by the layer's mask. Same result as
    the sparse path, no saving."""

    def __init__(self, module: nn.Module, context: SparseContext) -> None:
        super().__init__()
        self.module = module
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        y = self.module(x)
        if ctx.mode in ("off", "dense"):
            return y
        B, _, h, w = y.shape
        ctx.check_input(x, h, w, f"MaskedDense({type(self.module).__name__})")
        conv = self.module
        k = getattr(conv, "kernel_size", (1, 1))
        macs = y.shape[1] * (x.shape[1] // getattr(conv, "groups", 1)) * k[0] * k[1] * h * w
        ctx.add_macs(macs, macs, [1] * B)
        return y * ctx.mask_as(h, w, y)
