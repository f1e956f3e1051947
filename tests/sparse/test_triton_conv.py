"""The fused Triton sparse-conv kernel against PyTorch's dense conv times the mask.

The kernel tests run on a CUDA device when there is one, else on the CPU under Triton's
interpreter: ``test_kernel_under_interpreter`` re-runs this file in a subprocess with
``TRITON_INTERPRET=1`` (the variable must be set before Triton is imported). On a CUDA machine
the PyTorch paths are checked on the GPU too, in fp32 and fp16.
"""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from argos.executors.gather_scatter import context_of, convert
from argos.sparse import SparseContext, triton_conv
from argos.testing import masked_dense_reference, randomize_bn

HAS_CUDA = torch.cuda.is_available()


def _device() -> torch.device:
    if triton_conv.triton is None:
        pytest.skip("triton is not installed")
    if HAS_CUDA:
        return torch.device("cuda")
    if triton_conv.interpreting():
        return torch.device("cpu")
    pytest.skip("no CUDA device; the interpreter run covers the kernel (test_kernel_under_interpreter)")


def _blob_mask(B: int, H: int, W: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(B, 1, H, W, generator=g) < density / 9
    return (F.max_pool2d(seeds.float(), 3, 1, 1)[:, 0] > 0) | (torch.rand(B, H, W, generator=g) < density / 10)


GEOMETRIES = [  # C_in, C_out, kernel, stride, padding, dilation, bias, activation
    (3, 16, 6, 2, 2, 1, True, nn.SiLU()),
    (20, 40, 3, 2, 1, 1, True, nn.ReLU()),
    (17, 33, 1, 1, 0, 1, False, None),
    (8, 24, 5, 1, 4, 2, True, nn.LeakyReLU(0.1)),
    (40, 16, 3, 1, 1, 1, False, nn.Hardswish()),
    (16, 16, (3, 1), (2, 1), (1, 0), 1, True, None),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "c{}-{}k{}s{}p{}d{}b{}".format(*g[:7]))
def test_kernel_equals_dense_conv_on_active_rows(geometry):
    dev = _device()
    c_in, c_out, k, s, p, d, bias, act = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, s, p, d, bias=bias).to(dev)
    x = torch.randn(2, c_in, 13, 11, device=dev).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(x)
        ref = act(ref) if act is not None else ref
    B, _, h, w = ref.shape
    keep = torch.rand(B, h, w, device=dev) < 0.4
    dst = keep.reshape(-1).nonzero().squeeze(1).to(torch.int32)
    out = torch.full((B * h * w, c_out), -7.0, device=dev)  # untouched rows keep this
    wm = conv.weight.detach().permute(2, 3, 1, 0).reshape(-1, c_out).contiguous()
    kk, ss, pp, dd = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    b = None if conv.bias is None else conv.bias.detach()
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare IEEE fp32 on both sides
    try:
        with torch.no_grad():
            ref = conv(x)
            ref = act(ref) if act is not None else ref
        triton_conv.sparse_conv(x, wm, b, dst, out, (h, w), kk, ss, pp, dd, act)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    got = out.view(B, h, w, c_out).permute(0, 3, 1, 2)
    torch.testing.assert_close(got[keep[:, None].expand_as(got)], ref[keep[:, None].expand_as(ref)],
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    assert bool((got[~keep[:, None].expand_as(got)] == -7.0).all())


def test_kernel_bad_inputs():
    dev = _device()
    x = torch.randn(1, 4, 8, 8, device=dev)  # NCHW, not channels-last
    wm = torch.randn(36, 8, device=dev)
    out = torch.zeros(64, 8, device=dev)
    dst = torch.arange(64, dtype=torch.int32, device=dev)
    geo = ((8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="channels-last"):
        triton_conv.sparse_conv(x, wm, None, dst, out, *geo)
    x = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="weight_matrix"):
        triton_conv.sparse_conv(x, wm[:30], None, dst, out, *geo)
    with pytest.raises(ValueError, match="out must be"):
        triton_conv.sparse_conv(x, wm, None, dst, out[:10], *geo)
    with pytest.raises(ValueError, match="not fused"):
        triton_conv.sparse_conv(x, wm, None, dst, out, *geo, act=nn.GELU())


def _yolo_net(dev: torch.device) -> nn.Module:
    from argos.adapters.yolov5 import YOLOv5Adapter

    torch.manual_seed(0)
    return randomize_bn(YOLOv5Adapter(cfg="yolov5nu.yaml").module, seed=3).to(dev).eval()


@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_network_equals_masked_dense_reference(kernel):
    dev = _device()
    if kernel == "torch" and not HAS_CUDA:
        pytest.skip("the PyTorch paths on the CPU are covered by test_gather_scatter.py")
    model = _yolo_net(dev)
    size = (96, 128) if dev.type == "cpu" else (256, 320)
    x = torch.rand(2, 3, *size, device=dev)
    mask = _blob_mask(2, *size, 0.05, seed=4).to(dev)
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref = masked_dense_reference(model, x, mask)[0]
        sparse = convert(model, context=SparseContext(kernel=kernel))
        ctx = context_of(sparse)
        outs, macs = [], []
        # The second frame of the same shape builds every row plan up front (_prefetch_rows).
        for _ in range(2 if kernel == "triton" else 1):
            with torch.inference_mode(), ctx.activate(mask):
                outs.append(sparse(x)[0])
                macs.append(list(ctx.stats.macs))
                dense_macs = ctx.stats.dense_macs
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    for out in outs:
        torch.testing.assert_close(out, ref, atol=2e-3, rtol=1e-4)
    if kernel == "triton":  # the kernel really skips work (the PyTorch paths' cost model may pick dense)
        assert macs[0][0] < 0.8 * dense_macs and macs[0][1] < 0.8 * dense_macs
        # The resolutions that ran the kernel (coarse maps above triton_dense_above run dense).
        assert len(ctx._row_levels[(tuple(mask.shape), mask.device)]) >= 2
        assert macs[1] == macs[0]  # prefetched plans count the same active cells


@pytest.mark.skipif(not HAS_CUDA, reason="fp16 needs a CUDA device")
@pytest.mark.parametrize("kernel", ["triton", "torch"])
def test_half_precision_network_close_to_fp32(kernel):
    dev = torch.device("cuda")
    model = _yolo_net(dev)
    x = torch.rand(2, 3, 256, 320, device=dev)
    mask = _blob_mask(2, 256, 320, 0.1, seed=5).to(dev)
    ref = masked_dense_reference(model, x, mask)[0]
    sparse = convert(model, context=SparseContext(kernel=kernel)).half()
    with torch.inference_mode(), context_of(sparse).activate(mask):
        out = sparse(x.half())[0].float()
    # Boxes (up to 320 px) and class scores in [0, 1]: fp16 keeps ~3 significant digits.
    torch.testing.assert_close(out, ref, atol=0.5, rtol=2e-2)
    assert (out[:, 4:] - ref[:, 4:]).abs().max() < 0.02


def test_kernel_choice():
    ctx = SparseContext(kernel="torch")
    assert not ctx.use_triton(torch.device("cpu"))
    with pytest.raises(ValueError, match="kernel must be one of"):
        SparseContext(kernel="cuda")
    if not triton_conv.interpreting():
        with pytest.raises(RuntimeError, match="cannot run on cpu"):
            SparseContext(kernel="triton").use_triton(torch.device("cpu"))
        assert not SparseContext().use_triton(torch.device("cpu"))  # auto: the PyTorch paths on the CPU


@pytest.mark.skipif(triton_conv.triton is None, reason="triton is not installed")
@pytest.mark.skipif(triton_conv.interpreting() or HAS_CUDA, reason="this run already exercises the kernel")
def test_kernel_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "not interpreter"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout
