"""Helpers for tests of adapters and executors (argos's own, and users' adapters)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_bn"]


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
