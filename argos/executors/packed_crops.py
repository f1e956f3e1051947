"""Cut the proposed regions out, pack them onto a few small canvases, run the detector once.

The detector must see each crop at the scale it would see it in a full-frame run, or its
accuracy changes. So crops are cut from the *letterboxed* frame (resized so its long side is the
adapter's ``img_size``, as YOLOv5's letterbox does) and the canvases are run at scale 1:

- through the adapter's ``preprocess_native`` when it has one (``YOLOv5Adapter``): canvases may
  be any shape whose sides are multiples of the stride, up to ``img_size``;
- otherwise through its plain ``preprocess``: canvases then have their long side at
  ``img_size``, which a letterbox leaves unscaled (strips such as 640 x 192).

``forward`` and ``postprocess`` run unchanged, once on the batch of canvases. Detections come
back in canvas pixels and are moved to the letterboxed frame, then divided by the letterbox ratio.

Crops start on a grid of ``align`` pixels (default: the stride) laid from the full-frame input's
origin, and are placed on canvases on the same grid, so each crop meets the detector's stride
grid exactly as it does in the full frame: with a coarser phase shift, small objects change
score and class more often.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from argos.adapters.base import Adapter
from argos.executors.base import Executor, background_label, check_background, is_segmentation
from argos.executors.packing import (
    Packing,
    PackingError,
    candidate_canvases,
    choose_and_pack,
    expand_boxes,
    merge_boxes,
    snap_boxes,
)
from argos.structures import Detections, RegionProposals, SegmentationMap

# Share of a cut detection that a whole one from another crop must cover to replace it.
_MIN_COVER = 0.5

__all__ = [
    "PackedCropsExecutor",
    "CropPlan",
    "FrameGeometry",
    "frame_geometry",
    "filter_crop_detections",
    "assign_to_crops",
]


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


def _has_native(adapter: Adapter) -> bool:
    """Whether the adapter can run images at scale 1 (``preprocess_native``, e.g. YOLOv5Adapter)."""
    return callable(getattr(adapter, "preprocess_native", None))


def _timed_predict_native(
    adapter: Adapter, canvases: Sequence[np.ndarray]
) -> Tuple[List[Detections], float, Tuple[int, int]]:
    """Canvases through the adapter at scale 1 -> (detections in canvas pixels, ms, input (h, w))."""
    if not _has_native(adapter):
        # Canvases then have their long side at img_size, which a letterbox leaves unscaled.
        return Executor._timed_predict(adapter, canvases)
    t0 = time.perf_counter()
    with torch.inference_mode():
        batch, metas = adapter.preprocess_native(canvases)  # type: ignore[attr-defined]
        dets = adapter.postprocess(adapter.forward(batch), metas)
    return dets, (time.perf_counter() - t0) * 1e3, (int(batch.shape[-2]), int(batch.shape[-1]))


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


def _crop_masks_to_frame(masks: torch.Tensor, crops: np.ndarray, plan: CropPlan, geo: FrameGeometry) -> torch.Tensor:
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


class PackedCropsExecutor(Executor):
    """Packs the proposed regions onto a few canvases and runs the detector once on them.

    Per frame: proposal boxes -> network pixels -> context margin -> snapped to the ``align``
    grid -> merged when one crop costs no more than two. All crops of the batch are packed
    together (guillotine heuristic, :mod:`~argos.executors.packing`) onto canvases of one shape,
    chosen among ``canvas_sizes`` to use the fewest pixels. A frame runs whole (exactly as the
    unwrapped detector) when its crops would cost at least ``fallback_ratio`` of its own input,
    and all packed frames do when the canvases would, or when a crop fits no canvas: no region
    is ever dropped.

    Detections are assigned to the crop that holds most of their box; those mostly outside it
    (in padding or a neighbour crop) are dropped, as are detections cut by a crop border when
    another crop holds the object whole; duplicates are merged by class-aware NMS at the
    adapter's IoU threshold.

    Requires a YOLO-style adapter (letterbox to ``img_size`` on the long side); see the module doc.

    Args:
        margin: context added around each region per side, network pixels.
        margin_rel: context per side as a share of the region's width/height.
        gap: free pixels between crops on a canvas (filled with ``adapter.pad_value``); rounded up
            to whole ``align`` cells so that crops stay on the grid.
        align: crop grid, pixels; divides the adapter's stride. ``None``: the stride. 1 disables
            snapping.
        canvas_sizes: canvas shapes ``(h, w)`` to choose from, multiples of the stride, at most
            ``img_size`` (long side exactly ``img_size`` without ``preprocess_native``); default
            :func:`~argos.executors.packing.candidate_canvases`.
        fallback_ratio: run frames whole when the canvases would cover at least this share of
            their full-frame input area.
        min_inside: share of a detection's box that must lie inside its crop.
        border_tol: pixels within which a box edge counts as touching a crop border.
        background: segmentation adapters: label of the pixels off the mask (always applied);
            ``None``: the adapter's ``ignore_index``. See :attr:`Executor.background`.

    Segmentation adapters (``task == "segmentation"``): each crop's class probabilities are
    pasted back into its frame (see :meth:`_map_back_segmentation`) instead of the detection
    filtering above. A crop's pixels still see their neighbours on the canvas (other crops, the
    gap) through the network's receptive field and the pyramid pooling; the margin sets how much
    real context each region keeps.
    """

    def __init__(
        self,
        margin: float = 8.0,
        margin_rel: float = 0.0,
        gap: int = 8,
        align: Optional[int] = None,
        canvas_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        fallback_ratio: float = 0.8,
        min_inside: float = 0.5,
        border_tol: float = 2.0,
        background: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.background = check_background(background)
        if margin < 0 or margin_rel < 0:
            raise ValueError(f"margins must be >= 0, got margin={margin}, margin_rel={margin_rel}")
        if int(gap) != gap or gap < 0:
            raise ValueError(f"gap must be a whole number of pixels >= 0, got {gap}")
        if align is not None and (int(align) != align or align < 1):
            raise ValueError(f"align must be a whole number of pixels >= 1 or None, got {align}")
        if not 0.0 < fallback_ratio:
            raise ValueError(f"fallback_ratio must be > 0, got {fallback_ratio}")
        if not 0.0 <= min_inside <= 1.0:
            raise ValueError(f"min_inside must be in [0, 1], got {min_inside}")
        self.margin, self.margin_rel = float(margin), float(margin_rel)
        self.gap, self.align = int(gap), None if align is None else int(align)
        self.canvas_sizes = None if canvas_sizes is None else [(int(h), int(w)) for h, w in canvas_sizes]
        if self.canvas_sizes is not None and not self.canvas_sizes:
            raise ValueError("canvas_sizes must not be empty")
        self.fallback_ratio = float(fallback_ratio)
        self.min_inside, self.border_tol = float(min_inside), float(border_tol)
        self.last_plan: Optional[CropPlan] = None
        self._default_canvases: Dict[Tuple[int, int, bool, bool], List[Tuple[int, int]]] = {}
        self._flops_fit: Optional[Tuple[Any, Optional[Tuple[float, float]]]] = None

    # ---- planning ----

    def _align(self, adapter: Adapter) -> int:
        stride = int(adapter.stride)
        align = stride if self.align is None else self.align
        if stride % align:
            raise ValueError(f"align={align} must divide the adapter stride {stride}")
        return align

    def _candidates(self, adapter: Adapter) -> List[Tuple[int, int]]:
        size, stride = int(adapter.img_size), int(adapter.stride)
        native = _has_native(adapter)
        rect = bool(getattr(adapter, "rect", True))
        if self.canvas_sizes is None:
            key = (size, stride, rect, native)
            if key not in self._default_canvases:
                self._default_canvases[key] = candidate_canvases(size, stride, rect=rect, native=native)
            return self._default_canvases[key]
        for h, w in self.canvas_sizes:
            if h % stride or w % stride or min(h, w) <= 0 or max(h, w) > size:
                raise ValueError(
                    f"canvas (h, w) = {(h, w)} must have sides that are multiples of the stride {stride}, "
                    f"at most img_size={size}"
                )
            if not native and max(h, w) != size:
                raise ValueError(
                    f"canvas (h, w) = {(h, w)} must have its long side at img_size={size}: "
                    f"{type(adapter).__name__} has no preprocess_native and would rescale it"
                )
        return list(self.canvas_sizes)

    def _frame_crops(self, boxes: torch.Tensor, geo: FrameGeometry, align: int, gap: int) -> np.ndarray:
        """Proposal boxes (original pixels) -> merged crop boxes (ndarray[K, 4] int64, network pixels)."""
        (rw, rh), (left, top) = geo.ratio, geo.pad
        b = boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        b = b * (rw, rh, rw, rh) + (left, top, left, top)
        b = expand_boxes(b, self.margin, self.margin_rel, geo.resized, (left, top))
        b = snap_boxes(b, align, geo.input_size)
        return merge_boxes(b, gap)

    def plan(self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]) -> CropPlan:
        """Decide the crops, the canvases and which frames run whole (no image work)."""
        self._check(images, proposals)
        candidates, align = self._candidates(adapter), self._align(adapter)
        gap = -(-self.gap // align) * align  # what a gap takes on the canvas grid
        size, stride, rect = int(adapter.img_size), int(adapter.stride), bool(getattr(adapter, "rect", True))
        geos = [frame_geometry(im.shape[:2], size, stride, rect) for im in images]
        fallback = [False] * len(images)
        crops: List[np.ndarray] = []
        frames: List[int] = []
        for i, (p, geo) in enumerate(zip(proposals, geos)):
            if len(p.boxes) == 0:
                continue
            c = self._frame_crops(p.boxes, geo, align, gap)
            if len(c) == 0:
                continue
            frame_area = geo.input_size[0] * geo.input_size[1]
            cost = float(((c[:, 2] - c[:, 0] + gap) * (c[:, 3] - c[:, 1] + gap)).sum())
            if cost >= self.fallback_ratio * frame_area:
                fallback[i] = True
                continue
            crops.append(c)
            frames.extend([i] * len(c))
        boxes = np.concatenate(crops) if crops else np.zeros((0, 4), np.int64)
        frame_index = np.asarray(frames, np.int64)
        packing: Optional[Packing] = None
        if len(boxes):
            budget = self.fallback_ratio * sum(
                geos[i].input_size[0] * geos[i].input_size[1] for i in set(frames)
            )
            sizes = boxes[:, 2:] - boxes[:, :2]
            try:
                packing = choose_and_pack(sizes, candidates, gap, align, budget)
            except PackingError:
                packing = None  # a crop fits no canvas: run those frames whole rather than lose it
            if packing is None or packing.area >= budget:
                for i in set(frames):
                    fallback[i] = True
                boxes, frame_index, packing = boxes[:0], frame_index[:0], None
        if packing is None:
            none = np.zeros(0, np.int64)
            return CropPlan(frame_index, boxes, none, none.reshape(0, 2), (0, 0), 0, fallback, geos)
        return CropPlan(
            frame_index, boxes, packing.canvas_index, packing.positions,
            packing.canvas_hw, packing.n_canvases, fallback, geos,
        )  # fmt: skip

    # ---- running ----

    def _canvases(self, adapter: Adapter, images: Sequence[np.ndarray], plan: CropPlan) -> List[np.ndarray]:
        size, stride, rect = int(adapter.img_size), int(adapter.stride), bool(getattr(adapter, "rect", True))
        h, w = plan.canvas_hw
        canvases = [np.full((h, w, 3), adapter.pad_value, np.uint8) for _ in range(plan.n_canvases)]
        # Plain lists: per-crop numpy indexing would cost more than the copies of small crops.
        crops = list(zip(plan.frame_index.tolist(), plan.canvas_index.tolist(), plan.boxes.tolist(),
                         plan.canvas_boxes().tolist()))  # fmt: skip
        for i in sorted(set(plan.frame_index.tolist())):
            boxed, meta = _letterbox_frame(adapter, images[i], size, stride, rect)
            if tuple(boxed.shape[:2]) != plan.geometry[i].input_size or meta.pad != plan.geometry[i].pad:
                raise RuntimeError(f"letterbox of frame {i} does not match the planned geometry")
            for frame, canvas, (x1, y1, x2, y2), (cx1, cy1, cx2, cy2) in crops:
                if frame == i:
                    canvases[canvas][cy1:cy2, cx1:cx2] = boxed[y1:y2, x1:x2]
        return canvases

    def run(
        self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]
    ) -> List[Detections]:
        t0 = time.perf_counter()
        plan = self.plan(adapter, images, proposals)
        packing_ms = (time.perf_counter() - t0) * 1e3
        self.last_plan = plan
        n = len(images)
        canvases = self._canvases(adapter, images, plan) if plan.n_canvases else []

        detector_ms = 0.0
        input_hw: Tuple[int, int] = (0, 0)
        canvas_dets: List[Detections] = []
        if canvases:
            canvas_dets, ms, input_hw = _timed_predict_native(adapter, canvases)
            detector_ms += ms
            if input_hw != plan.canvas_hw:
                raise RuntimeError(
                    f"the adapter resized canvases {plan.canvas_hw} to {input_hw}; packed_crops needs an adapter "
                    "with preprocess_native, or one that letterboxes to img_size on the long side"
                )
        full = [i for i in range(n) if plan.fallback[i]]
        full_dets: List[Detections] = []
        full_hw: Tuple[int, int] = (0, 0)
        if full:
            full_dets, ms, full_hw = self._timed_predict(adapter, [images[i] for i in full])
            detector_ms += ms
            if not canvases:
                input_hw = full_hw

        t1 = time.perf_counter()
        out = [self._empty_output(adapter, im.shape[:2]) for im in images]
        for i, d in zip(full, full_dets):
            out[i] = d
        if is_segmentation(adapter):
            per_frame = self._map_back_segmentation(adapter, plan, canvas_dets)
        else:
            per_frame = self._map_back(adapter, plan, canvas_dets)
        for i, d in per_frame.items():
            out[i] = d
        if is_segmentation(adapter):
            out = [self._fill_outside(adapter, o, p.mask) for o, p in zip(out, proposals)]

        # Stats: canvas cost shared by the frames on each canvas, by crop area.
        gflops = [0.0] * n
        packed_area = [0.0] * n
        crops_per_frame = [0] * n
        if plan.n_canvases:
            canvas_gflops = self._canvas_gflops(adapter, plan.canvas_hw)
            canvas_area = plan.canvas_hw[0] * plan.canvas_hw[1]
            areas = _box_area(plan.boxes).astype(np.float64)
            for c in range(plan.n_canvases):
                on = plan.canvas_index == c
                total = areas[on].sum()
                for i in np.unique(plan.frame_index[on]).tolist():
                    share = float(areas[on & (plan.frame_index == i)].sum() / total)
                    gflops[i] += canvas_gflops * share
                    packed_area[i] += canvas_area * share
            for i in plan.frame_index.tolist():
                crops_per_frame[i] += 1
        if full:
            full_gflops = float(adapter.flops(full_hw))
            for i in full:
                gflops[i] = full_gflops
                packed_area[i] = float(full_hw[0] * full_hw[1])
                crops_per_frame[i] = 1
        frame_area = [float(g.input_size[0] * g.input_size[1]) for g in plan.geometry]
        map_ms = (time.perf_counter() - t1) * 1e3
        self.last_stats = {
            "detector_ms": detector_ms,
            "packing_ms": packing_ms,
            "overhead_ms": (time.perf_counter() - t0) * 1e3 - detector_ms,
            "map_ms": map_ms,
            "gflops": gflops,
            "input_hw": input_hw,
            "canvases": plan.n_canvases,
            "canvas_hw": plan.canvas_hw,
            "crops": crops_per_frame,
            "packed_area": packed_area,
            "frame_area": frame_area,
            "packed_fraction": [p / f for p, f in zip(packed_area, frame_area)],
            "fallback": list(plan.fallback),
        }
        return out

    def _canvas_gflops(self, adapter: Adapter, hw: Tuple[int, int]) -> float:
        """``adapter.flops(hw)`` without a counting forward for every new canvas shape.

        A convolutional network's FLOPs at inputs that are multiples of its stride are affine in
        ``h * w``. The fit comes from two exact counts and is kept only if it predicts a third
        exactly; otherwise every shape is counted (the adapter caches counts).
        """
        if self._flops_fit is None or self._flops_fit[0]() is not adapter:
            size, stride = int(adapter.img_size), int(adapter.stride)
            (h1, w1), (h2, w2), (h3, w3) = (size, size), (2 * stride, size), (3 * stride, 2 * stride)
            f1, f2, f3 = (float(adapter.flops(x)) for x in ((h1, w1), (h2, w2), (h3, w3)))
            a = (f1 - f2) / (h1 * w1 - h2 * w2)
            c = f1 - a * h1 * w1
            exact = abs(a * h3 * w3 + c - f3) <= 1e-6 * max(abs(f3), 1e-12)
            self._flops_fit = (weakref.ref(adapter), (a, c) if exact else None)
        fit = self._flops_fit[1]
        if fit is None:
            return float(adapter.flops(hw))
        return fit[0] * hw[0] * hw[1] + fit[1]

    def _map_back(self, adapter: Adapter, plan: CropPlan, canvas_dets: List[Detections]) -> Dict[int, Detections]:
        """Canvas detections -> per-frame :class:`Detections` in original pixels.

        Instance masks, when the adapter returns them, follow their detections: each is cut to
        its own crop and pasted into the frame (:func:`_crop_masks_to_frame`).
        """
        if not plan.n_canvases:
            return {}
        from torchvision.ops import batched_nms

        with_masks = any(d.masks is not None for d in canvas_dets)
        if with_masks and any(d.masks is None for d in canvas_dets):
            raise RuntimeError(f"{type(adapter).__name__} returned instance masks for some canvases only")
        # All canvases at once: one assignment and one gather per frame instead of Python work
        # per canvas and frame. Rows stay in (canvas, detection) order, which NMS ties depend on.
        counts = [len(d) for d in canvas_dets]
        det_canvas = np.repeat(np.arange(len(canvas_dets)), counts)
        if len(det_canvas):
            boxes = torch.cat([d.boxes for d in canvas_dets]).numpy().astype(np.float64)
            scores = torch.cat([d.scores for d in canvas_dets]).numpy()
            labels = torch.cat([d.labels for d in canvas_dets]).numpy()
        else:
            boxes, scores, labels = np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64)
        masks_all = torch.cat([d.masks for d in canvas_dets]) if with_masks else None
        crop, inside = assign_to_crops(boxes, det_canvas, plan.canvas_boxes(), plan.canvas_index, self.min_inside)
        # canvas -> letterboxed frame, per crop, added to xyxy
        shift = np.tile(plan.boxes[:, :2] - plan.positions, 2).astype(np.float64)
        kept = np.flatnonzero(inside)
        kept_frame = plan.frame_index[crop[kept]]
        crops_per_frame = np.bincount(plan.frame_index, minlength=len(plan.geometry))

        iou = float(getattr(adapter, "iou", 0.65))
        max_det = getattr(adapter, "max_det", None)
        out: Dict[int, Detections] = {}
        for i in np.flatnonzero(crops_per_frame).tolist():
            geo = plan.geometry[i]
            rows = kept[kept_frame == i]  # rows of the frame's detections, into the concatenation
            if len(rows) == 0:
                out[i] = Detections.empty(geo.orig_size, with_masks=with_masks)
                continue
            k = crop[rows]
            b = boxes[rows] + shift[k]
            l = labels[rows]
            if crops_per_frame[i] > 1:
                keep = filter_crop_detections(b, l, k, plan.boxes, geo.content_box, self.border_tol, _MIN_COVER)
                rows, b, l = rows[keep], b[keep], l[keep]
            bt, st, lt = torch.from_numpy(b).float(), torch.from_numpy(scores[rows]), torch.from_numpy(l)
            if crops_per_frame[i] > 1:
                order = batched_nms(bt, st, lt, iou)
            else:
                order = torch.argsort(st, descending=True, stable=True)
            if max_det is not None:
                order = order[: int(max_det)]
            bt, st, lt = bt[order], st[order], lt[order]
            rows = rows[order.numpy()]
            (rw, rh), (left, top), (h, w) = geo.ratio, geo.pad, geo.orig_size
            bt[:, 0::2].sub_(left).div_(rw).clamp_(0, w)  # in place on views of the fresh bt
            bt[:, 1::2].sub_(top).div_(rh).clamp_(0, h)
            masks = None
            if masks_all is not None:
                masks = _crop_masks_to_frame(masks_all[torch.from_numpy(rows)], crop[rows], plan, geo)
            out[i] = Detections(bt, st, lt, geo.orig_size, masks)
        return out

    def _map_back_segmentation(
        self, adapter: Adapter, plan: CropPlan, canvas_segs: List[SegmentationMap]
    ) -> Dict[int, SegmentationMap]:
        """Canvas segmentations -> per-frame :class:`SegmentationMap` in original pixels.

        Each crop's class probabilities (``scores``, Tensor[C, h, w] at canvas scale) are pasted
        into its frame's letterboxed grid, averaged where crops overlap; the letterbox padding is
        cut off and the sums and crop counts are resized bilinearly to the original size (so
        uncovered pixels never dilute covered ones); labels are the argmax. Pixels no crop covers
        get the background label and zero scores.
        """
        if not plan.n_canvases:
            return {}
        import torch.nn.functional as F

        if any(s.scores is None for s in canvas_segs):
            raise RuntimeError(f"{type(adapter).__name__} returned no scores; packed_crops pastes class probabilities")
        label = background_label(adapter, self.background)
        ignore = int(getattr(adapter, "ignore_index", 255))
        placed = plan.canvas_boxes()
        out: Dict[int, SegmentationMap] = {}
        for i in np.unique(plan.frame_index).tolist():
            geo = plan.geometry[i]
            crops = np.flatnonzero(plan.frame_index == i).tolist()
            c = canvas_segs[plan.canvas_index[crops[0]]].scores.shape[0]
            acc = torch.zeros(c + 1, *geo.input_size)  # class sums, then the crop count
            for k in crops:
                x1, y1, x2, y2 = plan.boxes[k].tolist()
                cx1, cy1, cx2, cy2 = placed[k].tolist()
                acc[:c, y1:y2, x1:x2] += canvas_segs[plan.canvas_index[k]].scores[:, cy1:cy2, cx1:cx2].float()
                acc[c, y1:y2, x1:x2] += 1.0
            left, top, right, bottom = geo.content_box
            acc = acc[:, top:bottom, left:right]
            if tuple(acc.shape[1:]) != geo.orig_size:
                acc = F.interpolate(acc[None], size=geo.orig_size, mode="bilinear", align_corners=False)[0]
            count = acc[c]
            covered = count > 1e-6
            scores = acc[:c] / torch.where(covered, count, torch.ones_like(count))
            # max(0).indices: argmax's first-maximum rule, about 2x faster over the class dim on CPU.
            labels = scores.max(0).indices.masked_fill_(~covered, label)
            out[i] = SegmentationMap(labels, geo.orig_size, scores, ignore)
        return out

    def __repr__(self) -> str:
        return (
            f"PackedCropsExecutor(margin={self.margin}, margin_rel={self.margin_rel}, gap={self.gap}, "
            f"align={self.align}, fallback_ratio={self.fallback_ratio})"
        )


def _letterbox_frame(adapter: Adapter, image: np.ndarray, size: int, stride: int, rect: bool):
    """The adapter's own ``letterbox(image)`` when it has one (e.g. an RGB pad colour), else
    YOLOv5's :func:`~argos.adapters.yolov5.letterbox` -> (ndarray[h, w, 3] uint8, LetterboxMeta)."""
    own = getattr(adapter, "letterbox", None)
    if callable(own):
        return own(image)
    from argos.adapters.yolov5 import letterbox

    return letterbox(image, size, stride, rect, adapter.pad_value)
