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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from argos.adapters.base import Adapter
from argos.executors.base import Executor, background_label, check_background, is_segmentation
from argos.executors.crops import (  # noqa: F401  (CropPlan, FrameGeometry: importable here as before)
    CropPlan,
    FrameGeometry,
    _box_area,
    assign_to_crops,
    crop_masks_to_frame,
    filter_crop_detections,
    frame_geometry,
)
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

__all__ = ["PackedCropsExecutor"]


def _has_native(adapter: Adapter) -> bool:
    """Whether the adapter can run images at scale 1 (``preprocess_native``, e.g. YOLOv5Adapter)."""
    return callable(getattr(adapter, "preprocess_native", None))


def _timed_predict_native(
    adapter: Adapter, canvases: Sequence[np.ndarray]
) -> Tuple[List[Detections], float, Tuple[int, int]]:
    """Canvases through the adapter at scale 1 -> (detections in canvas pixels, ms, input (h, w))."""
    if not _has_native(adapter):
        # Canvases then have their long side at img_size, which a letterbox leaves unscaled.
        dets, ms, hws = Executor._timed_predict(adapter, canvases)  # canvases share one size
        return dets, ms, hws[0]
    t0 = time.perf_counter()
    with torch.inference_mode():
        batch, metas = adapter.preprocess_native(canvases)  # type: ignore[attr-defined]
        dets = adapter.postprocess(adapter.forward(batch), metas)
    return dets, (time.perf_counter() - t0) * 1e3, (int(batch.shape[-2]), int(batch.shape[-1]))


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
        fixed = getattr(adapter, "fixed_input_hw", None)
        if fixed is not None:
            # A fixed-shape export (ExportedAdapter) takes its own input size and nothing else.
            fixed = (int(fixed[0]), int(fixed[1]))
            if self.canvas_sizes is not None and any(tuple(c) != fixed for c in self.canvas_sizes):
                raise ValueError(f"canvas_sizes {self.canvas_sizes}: {type(adapter).__name__} has a fixed "
                                 f"{fixed[0]}x{fixed[1]} input, so every canvas is {fixed[0]}x{fixed[1]}")
            return [fixed]
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
        full_hws: List[Tuple[int, int]] = []
        if full:
            full_dets, ms, full_hws = self._timed_predict(adapter, [images[i] for i in full])
            detector_ms += ms
            if not canvases:
                input_hw = full_hws[0]

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
        for i, hw in zip(full, full_hws):
            gflops[i] = float(adapter.flops(hw))
            packed_area[i] = float(hw[0] * hw[1])
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
        its own crop and pasted into the frame (:func:`~argos.executors.crops.crop_masks_to_frame`).
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
                masks = crop_masks_to_frame(masks_all[torch.from_numpy(rows)], crop[rows], plan, geo)
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
