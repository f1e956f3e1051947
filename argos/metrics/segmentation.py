"""Semantic segmentation metrics from an accumulated confusion matrix.

Conventions:

- Pixels whose ground truth is ``ignore_index`` (or outside ``[0, num_classes)``) are skipped.
- A predicted label outside ``[0, num_classes)`` (e.g. the executors' default background,
  ``ignore_index``, off the proposed mask) is "no class": for a ground-truth class ``c`` it is
  a miss (it adds to ``c``'s union, never to its intersection) and it counts as wrong for
  pixel accuracy. Such pixels are kept in :attr:`ConfusionMatrix.missed`.
- IoU of class ``c`` = TP / (GT pixels of ``c`` + pixels predicted ``c`` - TP), over the
  evaluated pixels; NaN when ``c`` is in neither the ground truth nor the prediction.
  mIoU is the mean over the classes present in the ground truth or the prediction (the non-NaN
  ones), over the whole data set (one matrix for all images, as Cityscapes does).
- ``region``: evaluate only the pixels of a bool mask (e.g. the proposed regions).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from argos.structures import SegmentationMap

__all__ = [
    "ConfusionMatrix", "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "evaluate_segmentation",
]  # fmt: skip

LabelMap = Union[SegmentationMap, torch.Tensor, np.ndarray]


def _labels(x: LabelMap, what: str) -> torch.Tensor:
    if isinstance(x, SegmentationMap):
        return x.labels.cpu()
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).cpu()
    if t.ndim != 2 or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(
            f"{what} must be an integer label map [H, W] or a SegmentationMap, got {t.dtype} {tuple(t.shape)}"
        )
    return t.long()


class ConfusionMatrix:
    """Accumulates ``matrix[gt, pred]`` pixel counts over images.

    Args:
        num_classes: classes ``0 .. num_classes - 1``.
        ignore_index: ground-truth label of pixels that are not evaluated.

    Attributes:
        matrix (Tensor[C, C] int64): rows ground truth, columns prediction.
        missed (Tensor[C] int64): pixels of each ground-truth class predicted as no class.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.missed = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, pred: LabelMap, gt: LabelMap, region: Optional[Any] = None) -> "ConfusionMatrix":
        """Add one image: ``pred`` and ``gt`` label maps (Tensor[H, W] int or SegmentationMap),
        ``region`` an optional Tensor[H, W] bool of the pixels to evaluate."""
        p, g = _labels(pred, "pred"), _labels(gt, "gt")
        if p.shape != g.shape:
            raise ValueError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} differ in size")
        c = self.num_classes
        valid = (g >= 0) & (g < c) & (g != self.ignore_index)
        if region is not None:
            r = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region).cpu()
            if r.shape != g.shape:
                raise ValueError(f"region {tuple(r.shape)} does not fit the {tuple(g.shape)} label maps")
            valid &= r.bool()
        g, p = g[valid], p[valid]
        p = torch.where((p >= 0) & (p < c), p, torch.full_like(p, c))  # column c: no class
        counts = torch.bincount(g * (c + 1) + p, minlength=c * (c + 1)).view(c, c + 1)
        self.matrix += counts[:, :c]
        self.missed += counts[:, c]
        return self

    def iou(self) -> torch.Tensor:
        """Tensor[C] float64: per-class IoU, NaN for classes in neither ground truth nor prediction."""
        return iou_per_class(self.matrix, self.missed)

    def compute(self) -> Dict[str, Any]:
        """See :func:`evaluate_segmentation`."""
        iou = self.iou()
        gt_pixels = self.matrix.sum(1) + self.missed
        acc = self.matrix.diag().double() / gt_pixels.double()
        present = ~torch.isnan(iou)
        return {
            "miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
            "pixel_accuracy": pixel_accuracy(self.matrix, self.missed),
            "mean_accuracy": float(acc[gt_pixels > 0].mean()) if bool((gt_pixels > 0).any()) else math.nan,
            "iou_per_class": [None if math.isnan(v) else float(v) for v in iou.tolist()],
            "classes_present": int(present.sum()),
            "pixels": int(gt_pixels.sum()),
        }


def confusion_matrix(
    pred: LabelMap, gt: LabelMap, num_classes: int, ignore_index: int = 255, region: Optional[Any] = None
) -> torch.Tensor:
    """Tensor[C, C] int64 ``matrix[gt, pred]`` of one image (predictions outside the classes are
    left out; see :class:`ConfusionMatrix` to keep them)."""
    return ConfusionMatrix(num_classes, ignore_index).update(pred, gt, region).matrix


def iou_per_class(matrix: torch.Tensor, missed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Tensor[C, C] confusion matrix (rows ground truth) -> Tensor[C] float64 IoU; NaN where a
    class is in neither ground truth nor prediction. ``missed`` (Tensor[C]): ground-truth pixels
    predicted as no class, added to each class's union."""
    m = matrix.double()
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    if missed is not None:
        union = union + missed.double()
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def mean_iou(matrix: torch.Tensor, missed: Optional[torch.Tensor] = None) -> float:
    """Mean IoU over the classes present in the ground truth or the prediction; NaN if none."""
    iou = iou_per_class(matrix, missed)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else math.nan


def pixel_accuracy(matrix: torch.Tensor, missed: Optional[torch.Tensor] = None) -> float:
    """Correct pixels / evaluated pixels; NaN when no pixel was evaluated."""
    total = int(matrix.sum()) + (int(missed.sum()) if missed is not None else 0)
    return float(matrix.diag().sum()) / total if total else math.nan


def evaluate_segmentation(
    preds: Sequence[LabelMap],
    gts: Sequence[LabelMap],
    num_classes: int,
    ignore_index: int = 255,
    regions: Optional[Sequence[Any]] = None,
    names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Data-set metrics of predicted against ground-truth label maps.

    Args:
        preds, gts: one label map per image (Tensor/ndarray[H, W] int or SegmentationMap).
        num_classes: classes ``0 .. num_classes - 1``; other ground-truth labels are ignored.
        ignore_index: ground-truth label that is not evaluated.
        regions: optional bool mask per image; only those pixels are evaluated.
        names: optional class names, to add ``"iou_by_name"``.

    Returns:
        dict (JSON-ready): ``miou``, ``pixel_accuracy``, ``mean_accuracy`` (mean per-class
        recall over the classes in the ground truth), ``iou_per_class`` (list, ``None`` for absent
        classes), ``classes_present``, ``pixels`` (evaluated), ``images``; NaN where undefined.
    """
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths")
    if regions is not None and len(regions) != len(gts):
        raise ValueError(f"got {len(regions)} regions for {len(gts)} images")
    if names is not None and len(names) != num_classes:
        raise ValueError(f"got {len(names)} names for {num_classes} classes")
    cm = ConfusionMatrix(num_classes, ignore_index)
    for k, (p, g) in enumerate(zip(preds, gts)):
        cm.update(p, g, None if regions is None else regions[k])
    out = cm.compute()
    out["images"] = len(gts)
    if names is not None:
        out["iou_by_name"] = dict(zip(names, out["iou_per_class"]))
    return out

