"""Folding a BatchNorm into the convolution before it: shared by adapters and sparse convolution."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["fold_batchnorm_params"]


def fold_batchnorm_params(
    weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of one conv computing ``bn(conv(x))`` with ``bn``'s eval statistics.

    Per output channel ``s = g / sqrt(v + eps)``: ``w' = w * s``, ``b' = beta + (b - m) * s``.
    Computed in fp32 (rounding the scale first would cost half models accuracy) and returned in
    ``weight``'s dtype, detached.
    """
    with torch.no_grad():
        scale = bn.running_var.float().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.float()
        shift = -bn.running_mean.float() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.float()
        if bias is not None:
            shift = shift + bias.float() * scale
        return (weight.float() * scale.view(-1, 1, 1, 1)).to(weight.dtype), shift.to(weight.dtype)
