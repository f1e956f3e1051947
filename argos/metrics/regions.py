"""How well a proposed mask covers the ground-truth objects, and how much of the frame it keeps.

Pixel convention: a box ``(x1, y1, x2, y2)`` covers pixel ``(r, c)`` when the pixel's unit
square overlaps the box, i.e. rows ``floor(y1)..ceil(y2)-1`` and columns
``floor(x1)..ceil(x2)-1``, clipped to the image.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["box_coverage", "regions_detected", "RegionStats"]

MaskLike = Union[torch.Tensor, np.ndarray]


def _as_mask(mask: MaskLike) -> torch.Tensor:
    mask = torch.as_tensor(mask).detach().cpu()
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {tuple(mask.shape)}")
    return mask.bool()


def _as_boxes(boxes) -> torch.Tensor:
    boxes = torch.as_tensor(boxes).detach().cpu().to(torch.float64)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (M, 4), got {tuple(boxes.shape)}")
    return boxes


def _coverage_counts(mask: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(active pixels, box pixels) per box, both Tensor[M] int64; degenerate boxes count 1 pixel."""
    h, w = mask.shape
    integral = torch.zeros(h + 1, w + 1, dtype=torch.int64)
    integral[1:, 1:] = mask.to(torch.int64).cumsum(0).cumsum(1)
    x1 = boxes[:, 0].clamp(0, w)
    y1 = boxes[:, 1].clamp(0, h)
    x2 = boxes[:, 2].clamp(0, w)
    y2 = boxes[:, 3].clamp(0, h)
    c0, c1 = x1.floor().long(), x2.ceil().long()
    r0, r1 = y1.floor().long(), y2.ceil().long()
    area = (c1 - c0).clamp(min=0) * (r1 - r0).clamp(min=0)
    active = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]

    degenerate = area <= 0
    if degenerate.any():
        # Zero-area boxes (lines, points, boxes outside the image): judge them by the pixel
        # nearest their centre, so a tiny object is not "covered" vacuously.
        col = ((x1 + x2) / 2).floor().long().clamp(0, w - 1)
        row = ((y1 + y2) / 2).floor().long().clamp(0, h - 1)
        active = torch.where(degenerate, mask[row, col].long(), active)
        area = torch.where(degenerate, torch.ones_like(area), area)
    return active, area


def box_coverage(mask: MaskLike, boxes) -> torch.Tensor:
    """Share of each box's pixels that are active in ``mask``.

    Args:
        mask (Tensor[H, W] bool): proposed regions.
        boxes (Tensor[M, 4]): ``xyxy`` in pixels (see the module's pixel convention).

    Returns:
        Tensor[M] float32 in [0, 1]. A box with zero area after clipping scores 1.0 if the
        pixel nearest its centre is active, else 0.0. Costs O(HW + M) (integral image).
    """
    active, area = _coverage_counts(_as_mask(mask), _as_boxes(boxes))
    return (active.double() / area.double()).float()


def regions_detected(
    mask: MaskLike, boxes, thresholds: Sequence[float] = (1.0, 0.95, 0.9)
) -> Dict[float, Tuple[int, int]]:
    """Boxes whose coverage by ``mask`` reaches each threshold.

    Returns:
        ``{threshold: (covered, total)}``, e.g. ``{1.0: (7, 9), 0.95: (8, 9), 0.9: (8, 9)}``.
    """
    active, area = _coverage_counts(_as_mask(mask), _as_boxes(boxes))
    total = int(area.numel())
    # Compare counts, not float ratios: 0.95 in float32 is below 0.95 in float64.
    return {float(t): (int((active >= torch.tensor(float(t), dtype=torch.float64) * area - 1e-9).sum()), total)
            for t in thresholds}


class RegionStats:
    """Accumulates region metrics over images.

    Regions detected pools all boxes of all images (the share of objects covered), so pass
    the boxes that should count, e.g. non-crowd ground truth. Area processed is the mean over
    images of the active-pixel fraction.

    Example::

        stats = RegionStats()
        for mask, gt_boxes in ...:
            stats.update(mask, gt_boxes)
        stats.summary()  # {"regions_detected": 0.93, "regions_detected@0.95": ..., ...}
    """

    def __init__(self, thresholds: Sequence[float] = (1.0, 0.95, 0.9)) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.reset()

    def reset(self) -> None:
        self.covered = {t: 0 for t in self.thresholds}
        self.regions = 0
        self.images = 0
        self._area_sum = 0.0

    def update(self, mask: MaskLike, boxes) -> Dict[float, Tuple[int, int]]:
        """Add one image; returns its :func:`regions_detected` counts."""
        mask = _as_mask(mask)
        counts = regions_detected(mask, boxes, self.thresholds)
        for t, (covered, total) in counts.items():
            self.covered[t] += covered
        self.regions += int(_as_boxes(boxes).shape[0])
        self.images += 1
        self._area_sum += float(mask.float().mean())
        return counts

    @staticmethod
    def key(threshold: float) -> str:
        """``"regions_detected"`` for 1.0, else ``"regions_detected@0.95"`` style."""
        return "regions_detected" if threshold == 1.0 else f"regions_detected@{threshold:g}"

    def summary(self) -> Dict[str, float]:
        """Shares in [0, 1] (1.0 with no regions), ``area_processed`` (0.0 with no images),
        and the ``images`` and ``regions`` counts."""
        out: Dict[str, float] = {}
        for t in self.thresholds:
            out[self.key(t)] = self.covered[t] / self.regions if self.regions else 1.0
        out["area_processed"] = self._area_sum / self.images if self.images else 0.0
        out["images"] = self.images
        out["regions"] = self.regions
        return out

    def __repr__(self) -> str:
        s = self.summary()
        return f"RegionStats(images={self.images}, regions={self.regions}, " + ", ".join(
            f"{k}={v:.3f}" for k, v in s.items() if k not in ("images", "regions")
        ) + ")"
