"""Quantizers of QU-Net: binary weights and DoReFa activations, both with straight-through gradients.

Both are written as ``x + (q(x) - x).detach()``: the forward value is ``q(x)`` and the backward
pass sees the identity (times the clip's 0/1 derivative for activations). That keeps them plain
tensor ops, which trace and export to ONNX without custom autograd functions.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["binarize_weight", "binary_scale", "dorefa_activation", "BinaryConv2d", "ActQuant", "FULL_PRECISION"]

#: Bit-width that means "not quantized" (float32) in configs.
FULL_PRECISION = 32


def binary_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per-layer scale of a binary weight: ``mean(|w|)`` over the whole tensor (a 0-dim tensor).

    Accumulated in float64: a weight rebuilt as ``sign * s`` then gets exactly ``s`` back (n
    copies of a float32 sum exactly in float64), so a loaded checkpoint reproduces outputs bit for bit.
    """
    return weight.abs().double().mean().to(weight.dtype)


def _sign(weight: torch.Tensor) -> torch.Tensor:
    # torch.sign(0) == 0 would give a third level; zeros count as +1, as in the packed format.
    return torch.where(weight >= 0, torch.ones_like(weight), -torch.ones_like(weight))


def binarize_weight(weight: torch.Tensor) -> torch.Tensor:
    """``sign(w) * mean(|w|)`` forward; straight-through (identity) gradient to ``w``.

    Args:
        weight (Tensor[...]): latent full-precision weight.

    Returns:
        Tensor of the same shape holding two values, ``+s`` and ``-s`` with ``s = mean(|w|)``.
    """
    q = _sign(weight) * binary_scale(weight)
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return q  # inference: the straight-through arithmetic would only cost time
    return weight + (q - weight).detach()


def dorefa_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa activation quantizer: clip to [0, 1], then ``round((2^k - 1) a) / (2^k - 1)``.

    The gradient is straight-through inside [0, 1] and zero outside (the clip's derivative).
    ``bits >= 32`` only clips.

    Args:
        x (Tensor[...]): activations.
        bits (int): k >= 1; the output takes ``2^k`` levels in [0, 1].
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise ValueError(f"bits must be an int >= 1, got {bits!r}")
    a = x.clamp(0.0, 1.0)
    if bits >= FULL_PRECISION:
        return a
    n = float(2**bits - 1)
    q = torch.round(a * n) / n
    if not (torch.is_grad_enabled() and x.requires_grad):
        return q
    return a + (q - a).detach()


class ActQuant(nn.Module):
    """Input activation of a conv: DoReFa with ``bits`` levels, or ReLU when ``bits`` is None/32.

    Full-precision blocks keep the U-Net's ReLU; quantized blocks use the clip to [0, 1] as their
    non-linearity, as DoReFa-Net does.
    """

    def __init__(self, bits: Optional[int]) -> None:
        super().__init__()
        if bits is not None and (not isinstance(bits, int) or bits < 1 or bits > FULL_PRECISION):
            raise ValueError(f"activation bits must be in 1..{FULL_PRECISION} or None, got {bits!r}")
        self.bits = FULL_PRECISION if bits is None else int(bits)

    @property
    def quantized(self) -> bool:
        return self.bits < FULL_PRECISION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dorefa_activation(x, self.bits) if self.quantized else F.relu(x)

    def extra_repr(self) -> str:
        return f"bits={self.bits}" if self.quantized else "relu"


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is binarized on the fly (``binary=True``) with one scale per layer.

    The latent float weight is what the optimizer updates; :meth:`effective_weight` is what the
    convolution uses. With ``binary=False`` it is a plain ``Conv2d``.
    """

    def __init__(self, *args, binary: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.binary = bool(binary)
        self._cache: Optional[Tuple[Tuple[int, int, torch.device], torch.Tensor]] = None

    @property
    def weight_bits(self) -> int:
        return 1 if self.binary else FULL_PRECISION

    def effective_weight(self) -> torch.Tensor:
        if not self.binary:
            return self.weight
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return binarize_weight(self.weight)
        # Inference: binarize once per weight version (load_state_dict/optimizer steps bump it).
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, binarize_weight(self.weight))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", binary={self.binary}"
