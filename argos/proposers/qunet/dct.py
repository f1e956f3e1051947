"""8x8 block DCT-II (orthonormal, as in JPEG) as a strided convolution, and its inverse.

``block_dct`` maps ``Tensor[B, C, H, W]`` to ``Tensor[B, C*64, H/8, W/8]``: channel ``c*64 + 8u + v``
holds coefficient ``(u, v)`` (vertical, horizontal frequency) of input channel ``c``; ``(0, 0)``
is the DC term, ``8 x`` the block mean.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.nn import functional as F

__all__ = ["dct_matrix", "dct_basis", "block_dct", "block_idct", "BLOCK"]

BLOCK = 8


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (Tensor[n, n]): ``X = D x`` transforms a length-n signal."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


@lru_cache(maxsize=8)
def _basis(n: int, dtype: torch.dtype) -> torch.Tensor:
    d = dct_matrix(n)
    # basis[u, v, i, j] = D[u, i] * D[v, j]: the 2-D coefficient (u, v) is sum_ij basis * x[i, j].
    return torch.einsum("ui,vj->uvij", d, d).reshape(n * n, 1, n, n).to(dtype)


def dct_basis(n: int = BLOCK, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``n*n`` 2-D DCT-II basis images as conv kernels, Tensor[n*n, 1, n, n]."""
    return _basis(n, dtype).clone()


def _check(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} expects Tensor[B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating-point tensor, got {x.dtype}")


def block_dct(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Blockwise 2-D DCT-II.

    Args:
        x (Tensor[B, C, H, W] float): H and W multiples of ``block``.

    Returns:
        Tensor[B, C * block^2, H / block, W / block].
    """
    _check(x, "block_dct")
    b, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"block_dct needs H and W that are multiples of {block}, got {h}x{w}")
    kernel = _basis(block, x.dtype).to(x.device).repeat(c, 1, 1, 1)
    return F.conv2d(x, kernel, stride=block, groups=c)


def block_idct(coeffs: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Inverse of :func:`block_dct`: Tensor[B, C * block^2, h, w] -> Tensor[B, C, h * block, w * block]."""
    _check(coeffs, "block_idct")
    b, cc, h, w = coeffs.shape
    if cc % (block * block):
        raise ValueError(f"block_idct needs a multiple of {block * block} channels, got {cc}")
    c = cc // (block * block)
    # The basis is orthonormal, so the inverse is its transpose: a transposed conv with the same kernels.
    kernel = _basis(block, coeffs.dtype).to(coeffs.device).repeat(c, 1, 1, 1)
    return F.conv_transpose2d(coeffs, kernel, stride=block, groups=c)
