"""Fused gather-conv-scatter in one Triton kernel (implicit GEMM over the active outputs).

For each active output cell ``dst[i]`` (row ``b*h*w + y*w + x`` of the channels-last output
``Tensor[B*h*w, C_out]``) the kernel reads the ``kh x kw`` input rows of its receptive field
straight from the channels-last input (zero outside the map: the conv's padding), multiplies
them with the weight matrix ``Tensor[kh*kw*C_in, C_out]`` (rows in ``(kh, kw, C_in)`` order)
on the tensor cores, adds the bias, applies the activation and writes the row in place. No
gathered copy of the input and no tile rounding: the work is exactly the active cells'.

Runs on CUDA devices; on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, set
before ``triton`` is imported), which the tests use to check the kernel against PyTorch's conv.
Only ``groups == 1``; the caller keeps other convs on the PyTorch paths.

fp32 inputs multiply in TF32 when ``torch.backends.cuda.matmul.allow_tf32`` or
``torch.backends.cudnn.allow_tf32`` is set (PyTorch's dense conv uses TF32 under the latter),
else in IEEE fp32. Accumulation is always fp32.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import nn

from argos.sparse.env import triton_interpreting as interpreting

try:  # Triton ships with PyTorch's CUDA wheels; CPU-only installs may lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

__all__ = ["available", "interpreting", "supports", "sparse_conv", "ACTIVATIONS"]

# Activations fused into the kernel's epilogue: type -> code (see the kernel).
ACTIVATIONS = {nn.SiLU: 1, nn.ReLU: 2, nn.LeakyReLU: 3, nn.Hardswish: 4}


def available(device: torch.device) -> bool:
    """The kernel can run on tensors of ``device``."""
    if triton is None:
        return False
    return device.type == "cuda" or (interpreting() and device.type == "cpu")


def supports(conv: nn.Conv2d) -> bool:
    """The kernel computes this conv's geometry (``groups == 1``, zero padding)."""
    return conv.groups == 1 and conv.padding_mode == "zeros"


if triton is not None:

    # Sizes and geometry change per layer and frame: specialising on them (divisibility by 16,
    # == 1) would compile a variant per combination. Channel counts stay specialised (aligned
    # row loads).
    @triton.jit(do_not_specialize=["M", "H", "W", "h", "w", "SH", "SW", "PH", "PW", "DH", "DW", "SLOPE"])
    def _sparse_conv_kernel(
        x_ptr, w_ptr, b_ptr, dst_ptr, out_ptr,
        M, H, W, C, h, w, COUT,
        SH, SW, PH, PW, DH, DW, SLOPE,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
        TF32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm < M
        n_ok = rn < COUT
        row = tl.load(dst_ptr + rm, mask=m_ok, other=0)
        hw = h * w
        b = row // hw
        r = row - b * hw
        oy = r // w
        ox = r - oy * w
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kh in tl.static_range(KH):
            iy = oy * SH - PH + kh * DH
            y_ok = (iy >= 0) & (iy < H)
            for kw in tl.static_range(KW):
                ix = ox * SW - PW + kw * DW
                ok = m_ok & y_ok & (ix >= 0) & (ix < W)
                # Clamp so that even masked-off lanes address memory inside the map.
                pix = (b * H + tl.where(ok, iy, 0)) * W + tl.where(ok, ix, 0)
                base = pix.to(tl.int64) * C
                for c0 in range(0, C, BLOCK_K):
                    ck = c0 + rk
                    k_ok = ck < C
                    a = tl.load(x_ptr + base[:, None] + ck[None, :], mask=ok[:, None] & k_ok[None, :], other=0.0)
                    wrow = ((kh * KW + kw) * C + ck).to(tl.int64)
                    wt = tl.load(
                        w_ptr + wrow[:, None] * COUT + rn[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0.0
                    )
                    if TF32:
                        acc += tl.dot(a, wt, input_precision="tf32")
                    else:
                        acc += tl.dot(a, wt, input_precision="ieee")
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if ACT == 1:  # SiLU
            acc = acc * tl.sigmoid(acc)
        elif ACT == 2:  # ReLU
            acc = tl.maximum(acc, 0.0)
        elif ACT == 3:  # LeakyReLU
            acc = tl.where(acc > 0, acc, acc * SLOPE)
        elif ACT == 4:  # Hardswish
            acc = acc * tl.minimum(tl.maximum(acc + 3.0, 0.0), 6.0) / 6.0
        out = out_ptr + row.to(tl.int64)[:, None] * COUT + rn[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    # Block shapes tried on the GPU, per (C_in, C_out, kernel); the interpreter uses the smallest.
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=nw, num_stages=ns)
        for bm, bn, bk, nw, ns in [
            (64, 32, 32, 4, 3), (64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3),
            (128, 128, 32, 8, 3),
        ]
    ]  # fmt: skip
    _tuned_kernel = triton.autotune(configs=_CONFIGS, key=["C", "COUT", "KH", "KW", "TF32"])(_sparse_conv_kernel)


def _use_tf32(x: torch.Tensor) -> bool:
    if x.dtype != torch.float32 or x.device.type != "cuda":
        return False
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def sparse_conv(
    x: torch.Tensor,
    weight_matrix: torch.Tensor,
    bias: Optional[torch.Tensor],
    dst: torch.Tensor,
    out: torch.Tensor,
    out_hw: Tuple[int, int],
    kernel: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    act: Optional[nn.Module] = None,
) -> torch.Tensor:
    """Write ``act(conv(x) + bias)`` at the output rows ``dst`` of ``out``; other rows untouched.

    Args:
        x: Tensor[B, C, H, W] in channels-last memory (``[B, H, W, C]`` contiguous).
        weight_matrix: Tensor[kh*kw*C, C_out], rows in ``(kh, kw, C)`` order, ``x``'s dtype.
        bias: Tensor[C_out] or ``None``.
        dst: Tensor[M] int32/int64 output rows ``b*h*w + y*w + x``.
        out: contiguous Tensor[B*h*w, C_out] of ``x``'s dtype, written in place and returned.
        out_hw, kernel, stride, padding (top, left), dilation: the conv's geometry.
        act: ``None`` or one of :data:`ACTIVATIONS` (a ``LeakyReLU`` keeps its slope).
    """
    if triton is None:
        raise RuntimeError("the Triton sparse-conv kernel needs the 'triton' package (shipped with CUDA PyTorch)")
    if not available(x.device):
        raise RuntimeError(f"the Triton sparse-conv kernel runs on CUDA tensors (got {x.device}); "
                           "on the CPU only under TRITON_INTERPRET=1")  # fmt: skip
    if x.ndim != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("x must be a channels-last Tensor[B, C, H, W]")
    B, C, H, W = x.shape
    h, w = out_hw
    kh, kw = kernel
    cout = weight_matrix.shape[1]
    if weight_matrix.shape[0] != kh * kw * C or weight_matrix.dtype != x.dtype or not weight_matrix.is_contiguous():
        raise ValueError(f"weight_matrix must be a contiguous {x.dtype} Tensor[{kh * kw * C}, C_out], "
                         f"got {weight_matrix.dtype} {tuple(weight_matrix.shape)}")  # fmt: skip
    if out.shape != (B * h * w, cout) or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {x.dtype} Tensor[{B * h * w}, {cout}], got {tuple(out.shape)}")
    code = 0 if act is None or type(act) is nn.Identity else ACTIVATIONS.get(type(act))
    if code is None:
        raise ValueError(f"activation {type(act).__name__} is not fused; one of {[t.__name__ for t in ACTIVATIONS]}")
    m = int(dst.numel())
    if m == 0:
        return out
    slope = float(act.negative_slope) if code == 3 else 0.0
    args = (
        x, weight_matrix, bias if bias is not None else weight_matrix, dst, out,
        m, H, W, C, h, w, cout, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], slope,
    )  # fmt: skip
    flags = dict(KH=kh, KW=kw, HAS_BIAS=bias is not None, ACT=code, TF32=_use_tf32(x))
    if interpreting():
        bm, bn, bk = 32, 32, 16
        grid = (triton.cdiv(m, bm), triton.cdiv(cout, bn))
        _sparse_conv_kernel[grid](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    elif os.environ.get("ARGOS_TRITON_AUTOTUNE", "0") not in ("", "0"):
        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_N"]))

        _tuned_kernel[grid](*args, **flags)
    else:
        bm, bn, warps = block_shape(m, cout)
        grid = (triton.cdiv(m, bm), triton.cdiv(cout, bn))
        _sparse_conv_kernel[grid](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=32, num_warps=warps, num_stages=3)
    return out


def block_shape(m: int, cout: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, warps) without autotuning. Autotuning every layer shape (set
    ``ARGOS_TRITON_AUTOTUNE=1``) compiles and times each candidate on first use, which costs
    seconds per shape; a fixed rule compiles one variant per kernel geometry."""
    bm = 128 if m >= 8192 else 64
    bn = 128 if cout >= 128 and m >= 8192 else 64 if cout >= 48 else 32
    return bm, bn, 8 if bm * bn >= 128 * 128 else 4
