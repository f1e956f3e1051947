"""Helpers for tests of adapters and executors (argos's own, and users' adapters)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["randomize_bn", "reference_layer_mask", "masked_dense_reference", "blocky_image"]


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0, spread: float = 0.2) -> nn.Module:
    """Give every ``BatchNorm2d`` non-trivial statistics and affine parameters, in place.

    A freshly built network has mean 0 / variance 1 / weight 1 / bias 0, which makes BN folding
    and many shape bugs invisible. Means and biases are drawn with standard deviation ``spread``,
    variances and weights uniformly from [0.5, 1.5). Returns ``model`` in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * spread)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * spread)
    return model.eval()


def reference_layer_mask(mask: torch.Tensor, h: int, w: int, halo: float = 0.0) -> torch.Tensor:
    """A slow, loop-by-cell reference of a layer's mask, for testing the sparse executor.

    Bool Tensor[B, H, W] -> [B, h, w]: cell (i, j) is active if any pixel of its span
    [floor(i*H/h), ceil((i+1)*H/h)) x (same for columns) is; then a (2r+1)^2 box dilation with
    r = ceil(halo * h / H) rows (and the same for columns). Written independently of
    :mod:`argos.sparse.masks`, which it checks.
    """
    m = mask.numpy()
    B, H, W = m.shape
    out = np.zeros((B, h, w), dtype=bool)
    for i in range(h):
        y0, y1 = (i * H) // h, -((-(i + 1) * H) // h)
        for j in range(w):
            x0, x1 = (j * W) // w, -((-(j + 1) * W) // w)
            out[:, i, j] = m[:, y0:y1, x0:x1].any(axis=(1, 2))
    ry, rx = (math.ceil(halo * h / H - 1e-9), math.ceil(halo * w / W - 1e-9)) if halo > 0 else (0, 0)
    if ry or rx:
        grown = np.zeros_like(out)
        for dy in range(-ry, ry + 1):
            for dx in range(-rx, rx + 1):
                src = out[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
                grown[:, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] |= src
        out = grown
    return torch.from_numpy(out)


def masked_dense_reference(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, halo: float = 0.0):
    """The gather-scatter reference semantics for an ultralytics/YOLOv5 network: run the original
    ``model`` with every conv output (each ultralytics ``Conv`` block's output, BN and activation
    included; ``DFL``'s conv aside) multiplied by its layer's :func:`reference_layer_mask`.
    ``mask``: bool Tensor[B, H, W] at the network input, on any device."""
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.modules.conv import Conv

    cpu_mask = mask.cpu()

    def hook(m, inputs, out):
        keep = reference_layer_mask(cpu_mask, out.shape[-2], out.shape[-1], halo)
        return out * keep[:, None].to(out.device, out.dtype)

    blocks = [m for m in model.modules() if isinstance(m, Conv) and type(m).forward is Conv.forward]
    skip = {id(b.conv) for b in blocks} | {id(m.conv) for m in model.modules() if isinstance(m, DFL)}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in skip]
    handles = [m.register_forward_hook(hook) for m in blocks + convs]
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def blocky_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB test image: random 8x8-pixel blocks plus noise (structure at two scales,
    so segmentation and detection models give non-uniform outputs)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    big = np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w]
    big = np.pad(big, ((0, h - big.shape[0]), (0, w - big.shape[1]), (0, 0)), mode="edge")
    noise = rng.integers(0, 40, (h, w, 3))
    return np.clip(big.astype(np.int64) + noise, 0, 255).astype(np.uint8)
