"""Mask <-> box conversion and region dilation, shared by structures and proposers.

Pixel convention: pixel ``(r, c)`` spans ``[c, c+1) x [r, r+1)``. A box ``x1, y1, x2, y2``
produced here covers whole pixels, so rasterizing it back gives exactly the component's extent.
"""
from __future__ import annotations

from typing import Tuple, Union

import cv2
import numpy as np
import torch

__all__ = ["mask_to_boxes", "boxes_to_mask", "dilate_boxes", "adaptive_margin", "Dilation"]

Dilation = Union[int, float, str]


def _to_numpy_mask(mask) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    return mask.astype(bool, copy=False)


def adaptive_margin(
    widths: torch.Tensor, heights: torch.Tensor, ratio: float = 0.15, minimum: float = 4.0, maximum: float = 96.0
) -> torch.Tensor:
    """Margin in pixels that grows with a region's size: ``clip(ratio * sqrt(w*h), minimum, maximum)``.

    Large objects need more context for a detector to see them whole; specks need only a little.
    """
    return (ratio * torch.sqrt(widths.clamp(min=0) * heights.clamp(min=0))).clamp(min=minimum, max=maximum)


def dilate_boxes(
    boxes: torch.Tensor, dilation: Dilation, image_size: Tuple[int, int], **adaptive_kwargs
) -> torch.Tensor:
    """Grow boxes (Tensor[K, 4] xyxy) by a fixed margin in pixels or ``"adaptive"``, clipped to the image.

    Fixed margins are whole pixels, so boxes stay on the pixel grid; adaptive margins are rounded up.
    """
    boxes = boxes.to(torch.float32).reshape(-1, 4)
    h, w = image_size
    if isinstance(dilation, str):
        if dilation != "adaptive":
            raise ValueError(f"dilation must be a number of pixels or 'adaptive', got {dilation!r}")
        margin = adaptive_margin(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], **adaptive_kwargs)
        margin = torch.ceil(margin - 1e-4)  # 30.000001 from float error is a 30-pixel margin
        margin = margin[:, None]
    else:
        if dilation < 0:
            raise ValueError(f"dilation must be >= 0 pixels, got {dilation}")
        margin = torch.full((boxes.shape[0], 1), float(np.ceil(dilation)))
    out = torch.cat([boxes[:, :2] - margin, boxes[:, 2:] + margin], dim=1)
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def mask_to_boxes(
    mask, dilation: Dilation = 0, min_area: int = 0, connectivity: int = 8, **adaptive_kwargs
) -> torch.Tensor:
    """Connected components of a mask -> their boxes (Tensor[K, 4] float32, xyxy pixels).

    Args:
        mask: (H, W) bool array or tensor.
        dilation: margin added to every box: pixels (int) or ``"adaptive"`` (see :func:`adaptive_margin`).
        min_area: components with fewer active pixels are dropped (specks).
        connectivity: 4 or 8.
    """
    m = _to_numpy_mask(mask)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if not m.any():
        return torch.zeros(0, 4)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=connectivity)
    stats = stats[1:]  # row 0 is the background
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= max(min_area, 1)]
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    boxes = np.stack([x, y, x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]], axis=1)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if dilation != 0:
        boxes = dilate_boxes(boxes, dilation, m.shape, **adaptive_kwargs)
    return boxes


def boxes_to_mask(boxes, image_size: Tuple[int, int]) -> torch.Tensor:
    """Rasterize xyxy boxes (Tensor[K, 4], pixels) -> Tensor[H, W] bool.

    A pixel is active when its area overlaps a box: rows ``floor(y1) .. ceil(y2)-1``.
    """
    h, w = image_size
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if boxes.numel() == 0:
        return torch.zeros(h, w, dtype=torch.bool)
    out = np.zeros((h, w), dtype=bool)  # numpy slicing: ~10x less overhead per box than torch
    x1 = boxes[:, 0].floor().clamp(0, w).long()
    y1 = boxes[:, 1].floor().clamp(0, h).long()
    x2 = boxes[:, 2].ceil().clamp(0, w).long()
    y2 = boxes[:, 3].ceil().clamp(0, h).long()
    for a, b, c, d in zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist()):
        # Degenerate boxes still mark the pixel they sit on, so no object vanishes.
        c, d = max(c, min(a + 1, w)), max(d, min(b + 1, h))
        out[b:d, a:c] = True
    return torch.from_numpy(out)
