"""The QU-Net training loss: class-weighted cross-entropy plus soft Dice, on stride-cell targets."""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["downsample_target", "class_weights", "qunet_loss"]


def downsample_target(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """Tensor[B, H, W] bool -> Tensor[B, H/stride, W/stride] int64: a cell is foreground if any pixel is.

    "Any" rather than majority because a proposer must not miss the edge of an object.
    """
    if stride == 1:
        return masks.long()
    return F.max_pool2d(masks[:, None].float(), stride)[:, 0].long()


def class_weights(targets: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    """Inverse pixel frequency, Tensor[C]: ``N / (C * n_c)`` (1.0 for balanced classes; absent classes get 0)."""
    counts = torch.bincount(targets.reshape(-1), minlength=num_classes).double()
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.float()


def qunet_loss(logits: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None,
               dice_weight: float = 1.0, eps: float = 1.0) -> torch.Tensor:
    """Class-weighted cross-entropy + ``dice_weight`` x soft Dice loss (mean over classes).

    Args:
        logits (Tensor[B, C, H, W]), target (Tensor[B, H, W] int64 in 0..C-1).
        weights (Tensor[C], optional): cross-entropy class weights (see :func:`class_weights`).
        eps: Dice smoothing, in pixels.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    ce = F.cross_entropy(logits, target, weight=None if weights is None else weights.to(logits.device))
    if dice_weight == 0:
        return ce
    c = logits.shape[1]
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, c).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return ce + dice_weight * dice.mean()
