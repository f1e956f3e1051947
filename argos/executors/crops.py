"""Crops between a letterboxed frame and the canvases they are packed on.

- :class:`FrameGeometry`: where a frame lies in its full-frame network input;
- :class:`CropPlan`: each crop's box in its frame and its place on a canvas;
- :func:`assign_to_crops` and :func:`filter_crop_detections`: which crop a canvas detection
  belongs to, and which detections cut by a crop border another crop holds whole;
- instance masks from canvases back to the frame.

Used by :class:`~argos.executors.packed_crops.PackedCropsExecutor`; the packing itself (which
canvases, where each crop goes) is :mod:`argos.executors.packing`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["FrameGeometry", "frame_geometry", "CropPlan", "filter_crop_detections", "assign_to_crops",
           "crop_masks_to_frame"]


@dataclass(frozen=True)
class FrameGeometry:
    """Where a frame lies in its full-frame network input (YOLOv5 ``letterbox``, see adapters.yolov5).

    Attributes:
        orig_size: ``(h, w)`` of the original image.
        resized: ``(h, w)`` after resizing the long side to ``img_size``.
        ratio: ``(rw, rh)`` network pixels per original pixel.
        pad: ``(left, top)`` letterbox padding, network pixels.
        input_size: ``(h, w)`` of the letterboxed frame (multiples of the stride).
    """

    orig_size: Tuple[int, int]
    resized: Tuple[int, int]
    ratio: Tuple[float, float]
    pad: Tuple[int, int]
    input_size: Tuple[int, int]

    @property
    def content_box(self) -> Tuple[int, int, int, int]:
        """xyxy of the image (not padding) in the letterboxed frame."""
        (left, top), (h, w) = self.pad, self.resized
        return left, top, left + w, top + h


def frame_geometry(size: Tuple[int, int], img_size: int, stride: int, rect: bool = True) -> FrameGeometry:
    """The letterbox of :func:`argos.adapters.yolov5.letterbox` for an image of ``size=(h, w)``, without resizing."""
    h, w = int(size[0]), int(size[1])
    r = img_size / max(h, w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (-new_w % stride, -new_h % stride) if rect else (img_size - new_w, img_size - new_h)
    left, top = int(round(dw / 2 - 0.1)), int(round(dh / 2 - 0.1))
    return FrameGeometry((h, w), (new_h, new_w), (new_w / w, new_h / h), (left, top), (new_h + dh, new_w + dw))


@dataclass
class CropPlan:
    """The crops of the last batch.

    Attributes:
        frame_index (ndarray[K] int64): frame each crop comes from.
        boxes (ndarray[K, 4] int64): crop xyxy in that frame's letterboxed (network) pixels.
        canvas_index (ndarray[K] int64): canvas each crop is on.
        positions (ndarray[K, 2] int64): ``(x, y)`` of each crop's top-left corner on its canvas.
        canvas_hw: ``(h, w)`` of every canvas; ``(0, 0)`` when nothing was packed.
        n_canvases: canvases in the batch.
        fallback (list[bool]): frames run whole instead.
        geometry (list[FrameGeometry]): per frame.
    """

    frame_index: np.ndarray
    boxes: np.ndarray
    canvas_index: np.ndarray
    positions: np.ndarray
    canvas_hw: Tuple[int, int]
    n_canvases: int
    fallback: List[bool]
    geometry: List[FrameGeometry]

    def canvas_boxes(self) -> np.ndarray:
        """ndarray[K, 4] int64: each crop's xyxy on its canvas."""
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        return np.concatenate([self.positions, self.positions + wh], axis=1)


def _box_area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]).clip(min=0) * (b[..., 3] - b[..., 1]).clip(min=0)


def filter_crop_detections(
    boxes: np.ndarray,
    labels: np.ndarray,
    crop_index: np.ndarray,
    crops: np.ndarray,
    content_box: Sequence[float],
    border_tol: float = 2.0,
    min_cover: float = 0.5,
) -> np.ndarray:
    """Which detections of one frame to keep, before duplicates are merged.

    A detection is *cut* when one of its edges lies within ``border_tol`` pixels of an edge of its
    crop that runs through the image (not along the image border). A cut detection is dropped
    when a detection of the same class from another crop, itself not cut, covers at least
    ``min_cover`` of its area: that crop holds the object whole.

    Args:
        boxes (ndarray[N, 4]): detections, letterboxed-frame pixels.
        labels (ndarray[N] int).
        crop_index (ndarray[N] int): row of ``crops`` each detection came from.
        crops (ndarray[K, 4]): crop boxes, letterboxed-frame pixels.
        content_box: xyxy of the image content in the letterboxed frame.

    Returns:
        ndarray[N] bool.
    """
    n = len(boxes)
    keep = np.ones(n, bool)
    if n == 0 or len(crops) < 2:
        return keep
    # Per crop edge, the line a detection edge must reach to count as cut; edges along the image
    # border get one no box reaches, so a detection needs one comparison per edge.
    c = crops.astype(np.float64)
    content = np.asarray(content_box, np.float64)
    lo = np.where(c[:, :2] > content[:2], c[:, :2] + border_tol, -np.inf)
    hi = np.where(c[:, 2:] < content[2:], c[:, 2:] - border_tol, np.inf)
    lines = np.concatenate([lo, hi], 1)[crop_index]
    below, above = boxes <= lines, boxes >= lines
    cut = below[:, 0] | below[:, 1] | above[:, 2] | above[:, 3]
    ci, wi = np.flatnonzero(cut), np.flatnonzero(~cut)
    if len(ci) == 0 or len(wi) == 0:
        return keep
    # Intersections only for the (cut, whole) pairs that could replace: same class, other crop.
    # The pairs come from each class's run of whole detections (sorted by class), not from a
    # dense cut x whole matrix: with hundreds of low-score detections most pairs differ in class.
    a, w = _same_class_pairs(labels[ci], labels[wi])
    other = crop_index[ci[a]] != crop_index[wi[w]]
    a, w = a[other], w[other]
    if len(a) == 0:
        return keep
    bc, bw = boxes[ci[a]], boxes[wi[w]]
    inter = (np.minimum(bc[:, 2:], bw[:, 2:]) - np.maximum(bc[:, :2], bw[:, :2])).clip(min=0).prod(1)
    replaced = inter >= min_cover * np.maximum(_box_area(bc), 1e-9)
    keep[ci[np.unique(a[replaced])]] = False
    return keep


def _same_class_pairs(la: np.ndarray, lb: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All ``(i, j)`` with ``la[i] == lb[j]`` -> (ndarray[P] int64 i, ndarray[P] int64 j), in no set order."""
    srt = np.argsort(lb, kind="stable")
    lo = np.searchsorted(lb[srt], la, "left")
    cnt = np.searchsorted(lb[srt], la, "right") - lo
    total = int(cnt.sum())
    i = np.repeat(np.arange(len(la)), cnt)
    # For pair p of row i: its place in the sorted run, lo[i] + (p - first pair of i).
    start = np.cumsum(cnt) - cnt
    j = srt[np.arange(total) - np.repeat(start - lo, cnt)]
    return i, j


def assign_to_crops(
    boxes: np.ndarray, det_canvas: np.ndarray, placed: np.ndarray, crop_canvas: np.ndarray, min_inside: float
) -> Tuple[np.ndarray, np.ndarray]:
    """The crop each canvas detection belongs to: the one on its canvas that holds most of its box.

    Args:
        boxes (ndarray[N, 4]): detections, canvas pixels.
        det_canvas (ndarray[N] int): canvas of each detection.
        placed (ndarray[K, 4]): crop boxes on their canvases.
        crop_canvas (ndarray[K] int): canvas of each crop.
        min_inside: share in [0, 1] of a detection's area its crop must hold for it to be kept.

    Returns:
        ``(crop, inside)``: ndarray[N] int64 crop index (the lowest on ties; the canvas's first
        crop when none overlaps) and ndarray[N] bool, whether the crop holds enough of the box.
        Detections on a canvas without crops are never inside.
    """
    n = len(boxes)
    if n == 0 or len(placed) == 0:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    # Intersections as [K, N] from the box columns: contiguous rows, fewer and faster array ops
    # than [N, K, 2] corners (this runs on every canvas detection, hundreds per frame).
    x1, y1, x2, y2 = np.ascontiguousarray(boxes.T, dtype=np.float64)
    p = placed.astype(np.float64)
    iw = np.minimum(x2, p[:, 2:3])
    iw -= np.maximum(x1, p[:, 0:1])
    ih = np.minimum(y2, p[:, 3:4])
    ih -= np.maximum(y1, p[:, 1:2])
    inter = np.maximum(iw, 0, out=iw)
    inter *= np.maximum(ih, 0, out=ih)
    # -1 below any real intersection, so argmax only picks a crop of the detection's canvas.
    inter[crop_canvas[:, None] != det_canvas] = -1.0
    crop = inter.argmax(0)
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    return crop, inter.max(0) >= min_inside * np.maximum(area, 1e-9)


def crop_masks_to_frame(masks: torch.Tensor, crops: np.ndarray, plan: CropPlan, geo: FrameGeometry) -> torch.Tensor:
    """Instance masks on canvases -> masks on the original frame.

    Args:
        masks (Tensor[N, h, w] bool): at canvas size, one per detection.
        crops (ndarray[N] int): the crop (row of ``plan.boxes``) each detection came from.

    Returns:
        Tensor[N, H, W] bool at ``geo.orig_size``: each original pixel takes the canvas pixel
        under its centre (nearest neighbour), and only from its detection's own crop; pixels
        outside that crop are False.
    """
    h, w = geo.orig_size
    out = torch.zeros(len(masks), h, w, dtype=torch.bool)
    if len(masks) == 0:
        return out
    (rw, rh), (left, top) = geo.ratio, geo.pad
    # Letterboxed-frame pixel under each original pixel centre; increasing, so any crop's
    # pixels form one contiguous run of original rows / columns.
    fx = np.floor((np.arange(w) + 0.5) * rw + left).astype(np.int64)
    fy = np.floor((np.arange(h) + 0.5) * rh + top).astype(np.int64)
    placed = plan.canvas_boxes()
    for j, k in enumerate(crops.tolist()):
        x1, y1, x2, y2 = plan.boxes[k].tolist()
        cx, cy = placed[k, 0], placed[k, 1]
        cols = np.flatnonzero((fx >= x1) & (fx < x2))
        rows = np.flatnonzero((fy >= y1) & (fy < y2))
        if len(cols) == 0 or len(rows) == 0:
            continue
        sub = masks[j].index_select(0, torch.from_numpy(fy[rows] - y1 + cy))
        sub = sub.index_select(1, torch.from_numpy(fx[cols] - x1 + cx))
        out[j, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = sub
    return out
