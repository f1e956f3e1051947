"""Temporal proposer for video: keep what is certain, look again only where it is not.

Nothing is learned, so it works on a camera it has never seen. Per frame:

- **key frames** run the wrapped detector on the whole frame (its output is returned as is).
  The first frame is one; after that, every ``max_interval`` frames, and at once when the scene
  changes (the mean grey-level change of the frame exceeds ``scene_change``) or when the frame's
  proposals would cover more than ``max_area`` of it (then the whole frame is as cheap);
- between key frames, the last frame's detections are split by score:
  - **held**: ``score >= hold_score``. The detector was sure of them, so they are carried to
    this frame unchanged (:attr:`RegionProposals.held`) and cost nothing;
  - **uncertain**: ``track_score <= score < hold_score``. Their scores flicker around the
    output threshold from frame to frame, which is what frame skipping gets wrong. Their boxes,
    grown by ``margin`` pixels, are proposed and the detector looks again there;
  - **newcomers**: blobs of a frame-difference motion mask (:class:`MotionGate`) that no held or
    uncertain box covers are proposed too.

  A held detection whose centre falls inside a proposed region is dropped: the region's fresh
  detections replace it.

With ``velocity``, each detection carries a velocity. A detection the detector found afresh (on
a key frame or in a proposed region) is matched (same label, highest IoU, one to one) to the last
frame's detections where they were predicted to be; its velocity is its centre's shift since the
match was last really seen, per frame, averaged with the match's own velocity. Held detections
keep theirs and move by it; uncertain ones are proposed where they have moved to. Frame skipping
holds boxes still, which is what it loses on objects that move.

With ``flow``, the last frame's boxes are moved by the sparse optical flow measured from that
frame to this one (median shift of a grid of points over each box's middle, tracked forward and
back by pyramidal Lucas-Kanade) wherever enough points track; elsewhere by their velocity. A
velocity extrapolates; the flow measures, so it follows objects whose speed changes.

With ``newcomers=False`` and ``hold_score == track_score`` nothing is proposed between key frames
and no detector runs there: motion-compensated frame skipping. The scene-change test then reads a
strided 160-pixel thumbnail instead of the motion gate. This is what ``argos.wrap``'s
``proposer="auto"`` runs (:data:`argos.wrap.AUTO_OPTIONS`).

To see detections below the output threshold (``track_score`` < the adapter's ``conf``), the
proposer asks :class:`argos.Wrapped` to run the detector at ``track_score`` (:attr:`detect_conf`);
``Wrapped`` returns only detections at the adapter's own ``conf``.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from argos.proposers.base import Proposer
from argos.geometry import boxes_to_mask, dilate_boxes
from argos.proposers.distill import MotionGate
from argos.structures import Detections, RegionProposals

__all__ = ["TemporalProposer"]


class TemporalProposer(Proposer):
    """Key frames by need, held confident detections, re-detection of uncertain ones and newcomers.

    Args:
        hold_score: detections at or above it are carried between key frames.
        track_score: detections from it up to ``hold_score`` are looked at again on every frame;
            also the score the detector runs at (:attr:`detect_conf`) when lower than its own.
        margin: pixels of context around an uncertain detection's box (objects move, and the
            detector needs context to reproduce the score).
        max_interval: frames from one key frame to the next, at most (1: every frame is one).
        max_area: a frame whose proposals cover more than this share of it becomes a key frame.
        scene_change: mean absolute grey-level change (0-255, at the motion gate's scale) between
            consecutive frames that makes a key frame (a cut, a camera move, lights).
        motion_min_area: motion blobs with fewer frame pixels are ignored.
        motion_margin: pixels added around motion blobs.
        motion: the frame-difference gate; ``None`` uses :class:`MotionGate` defaults, at half the
            frame size, or at ``motion_width`` pixels wide for frames wider than twice that.
        motion_width: widest working size of the default gate (HD frames: cost stays flat).
        velocity: move held and uncertain detections by their measured motion (see the module docstring).
        newcomers: propose motion blobs that no detection covers. Off, with ``hold_score ==
            track_score``, frames between key frames run no detector at all: frame skipping whose
            held boxes follow the objects' motion.
        velocity_iou: least IoU for a detection to be matched to the previous frame's.
        velocity_smoothing: weight of a track's earlier velocity against the new measurement (0: the
            last measurement alone).
        flow: move the last frame's boxes by sparse optical flow measured from that frame to this
            one (a grid of ``flow_points`` x ``flow_points`` points over each box's middle, pyramidal
            Lucas-Kanade forward and back, the median shift of the points that come back), instead
            of extrapolating their velocity. A box whose points do not track keeps its velocity.
        flow_width: widest working size of the flow's grey frames (wider frames are scaled down).
        flow_points: points per side of each box's grid.
    """

    stateful = True
    needs_detector = True
    can_defer_whole = True

    def __init__(
        self,
        hold_score: float = 0.5,
        track_score: float = 0.1,
        margin: int = 16,
        max_interval: int = 4,
        max_area: float = 0.6,
        scene_change: float = 20.0,
        motion_min_area: int = 256,
        motion_margin: int = 8,
        motion: Optional[MotionGate] = None,
        motion_width: int = 400,
        velocity: bool = False,
        velocity_iou: float = 0.3,
        newcomers: bool = True,
        velocity_smoothing: float = 0.5,
        flow: bool = False,
        flow_width: int = 640,
        flow_points: int = 3,
    ) -> None:
        super().__init__(dilation=0, min_area=0, mask_mode="boxes")
        if not 0.0 <= track_score <= hold_score <= 1.0:
            raise ValueError(f"need 0 <= track_score <= hold_score <= 1, got {track_score}, {hold_score}")
        if int(max_interval) != max_interval or max_interval < 1:
            raise ValueError(f"max_interval must be a whole number >= 1, got {max_interval}")
        if margin < 0 or motion_margin < 0:
            raise ValueError(f"margins must be >= 0, got margin={margin}, motion_margin={motion_margin}")
        if not 0.0 < max_area <= 1.0:
            raise ValueError(f"max_area must be in (0, 1], got {max_area}")
        self.hold_score, self.track_score = float(hold_score), float(track_score)
        self.margin, self.max_interval, self.max_area = int(margin), int(max_interval), float(max_area)
        self.scene_change, self.motion_min_area = float(scene_change), int(motion_min_area)
        self.motion_margin = int(motion_margin)
        if motion_width < 16:
            raise ValueError(f"motion_width must be >= 16 pixels, got {motion_width}")
        self._own_gate = motion is None
        self.motion_width = int(motion_width)
        self.motion = motion or MotionGate()
        if not 0.0 < velocity_iou <= 1.0:
            raise ValueError(f"velocity_iou must be in (0, 1], got {velocity_iou}")
        if not 0.0 <= velocity_smoothing < 1.0:
            raise ValueError(f"velocity_smoothing must be in [0, 1), got {velocity_smoothing}")
        self.velocity, self.velocity_iou = bool(velocity), float(velocity_iou)
        self.velocity_smoothing = float(velocity_smoothing)
        self.newcomers = bool(newcomers)
        if flow_width < 32 or int(flow_points) != flow_points or flow_points < 2:
            raise ValueError(f"need flow_width >= 32 and a whole flow_points >= 2, got {flow_width}, {flow_points}")
        self.flow, self.flow_width, self.flow_points = bool(flow), int(flow_width), int(flow_points)
        self.adapter = None
        self.reset()

    # -- contract with Wrapped -------------------------------------------------------------------

    @property
    def detect_conf(self) -> float:
        """Score threshold the detector should run at while this proposer drives it."""
        return self.track_score

    def bind(self, adapter) -> None:
        self.adapter = adapter

    def reset(self) -> None:
        self.motion.reset()
        self.previous: Optional[Detections] = None
        # velocity state per detection of ``previous``: (velocity, last real centre, its frame, known)
        self._tracks: Optional[Tuple[torch.Tensor, ...]] = None
        self._predicted = torch.zeros(0, 4)  # previous's boxes moved to the current frame
        self._held_src = torch.zeros(0, dtype=torch.long)  # previous's index of each held detection
        self.since_key: Optional[int] = None
        self.frames = 0
        self.key_frames = 0
        self._last_gray: Optional[np.ndarray] = None
        self._flow_gray: Optional[np.ndarray] = None  # last frame, grey, at the flow's working scale
        #: boxes of the last frame that optical flow moved (the others fell back to their velocity)
        self.flow_tracked = 0
        #: why each of the last frames was a key frame (``"start"``, ``"interval"``, ``"scene"``, ``"area"``) or ``None``
        self.last_reason: Optional[str] = None

    def observe(self, detections: Sequence[Optional[Detections]]) -> None:
        new = detections[-1] if detections else None
        if self.velocity and new is not None:
            self._update_tracks(new)
        self.previous = new

    def _update_tracks(self, new: Detections) -> None:
        """Velocity per detection of ``new``, measured between real observations only.

        ``new`` ends with the held detections (``Wrapped`` appends them), whose state carries over
        from the detection they were held from. Each fresh detection is matched (same label, IoU >=
        ``velocity_iou``, best first, one to one) to the previous frame's detections where they
        were predicted to be now; its velocity is its centre's shift from the match's last real
        observation over the frames since, averaged with the match's velocity when it had one.
        """
        from torchvision.ops import box_iou

        n_held = len(self._held_src)
        n_fresh = len(new) - n_held
        boxes = new.boxes.float().cpu()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        xy = torch.zeros(len(new), 2)
        anchor = centre.clone()
        at = torch.full((len(new),), float(self.frames))
        known = torch.zeros(len(new), dtype=torch.bool)
        old = self._tracks
        if n_held and old is not None:
            src = self._held_src
            xy[n_fresh:], anchor[n_fresh:], at[n_fresh:], known[n_fresh:] = old[0][src], old[1][src], old[2][src], old[3][src]
        pred, prev = self._predicted, self.previous
        if n_fresh and old is not None and prev is not None and len(pred) and prev.image_size == new.image_size:
            iou = box_iou(boxes[:n_fresh], pred)
            iou[new.labels.cpu()[:n_fresh, None] != prev.labels.cpu()[None, :]] = 0.0
            flat = iou.flatten()
            taken_n, taken_o = set(), set()
            for f in torch.argsort(flat, descending=True).tolist():
                if flat[f] < self.velocity_iou:
                    break
                i, j = divmod(f, len(pred))
                if i in taken_n or j in taken_o:
                    continue
                taken_n.add(i)
                taken_o.add(j)
                elapsed = max(1.0, self.frames - float(old[2][j]))
                v = (centre[i] - old[1][j]) / elapsed
                a = self.velocity_smoothing
                xy[i] = (1 - a) * v + a * old[0][j] if bool(old[3][j]) else v
                known[i] = True
        self._tracks = (xy, anchor, at, known)

    @property
    def motion_xy(self) -> Optional[torch.Tensor]:
        """Per-frame centre motion (Tensor[N, 2], x and y pixels) of each detection in ``previous``."""
        return None if self._tracks is None else self._tracks[0]

    def _predict(self, prev: Detections, size: Tuple[int, int], gray: Optional[np.ndarray] = None) -> torch.Tensor:
        """``prev``'s boxes (CPU float) where they should be in this frame: moved by their velocity,
        or by the optical flow from the last frame's grey image to ``gray`` where it tracks."""
        boxes = prev.boxes.float().cpu()
        xy = self.motion_xy
        xy = None if not self.velocity or xy is None or len(xy) != len(boxes) else xy
        self.flow_tracked = 0
        if gray is not None and self._flow_gray is not None and len(boxes):
            shift, ok = self._flow_shift(self._flow_gray, gray, boxes, size, xy)
            if bool(ok.any()):
                self.flow_tracked = int(ok.sum())
                xy = torch.where(ok[:, None], shift, xy if xy is not None else torch.zeros_like(shift))
        return boxes if xy is None else self._moved(boxes, xy, size)

    def _flow_gray_of(self, image: np.ndarray) -> np.ndarray:
        """``image`` as uint8 grey at the flow's working scale (at most ``flow_width`` wide)."""
        h, w = image.shape[:2]
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if w > self.flow_width:
            gray = cv2.resize(gray, (self.flow_width, max(1, round(h * self.flow_width / w))),
                              interpolation=cv2.INTER_AREA)
        return gray

    def _flow_shift(self, last: np.ndarray, gray: np.ndarray, boxes: torch.Tensor, size: Tuple[int, int],
                    guess: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Median optical-flow shift (frame pixels, Tensor[N, 2]) of each box from ``last`` to ``gray``,
        and whether it was measured (Tensor[N] bool: at least half of the box's points came back).

        Points sit on a grid over the middle half of each box (its edges are mostly background);
        each is tracked forward, from ``guess`` when given, and back, and kept if it returns within
        a pixel of where it started.
        """
        k = self.flow_points
        sx, sy = gray.shape[1] / size[1], gray.shape[0] / size[0]
        b = boxes.numpy().astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
        u = 0.25 + 0.5 * (np.arange(k, dtype=np.float32) + 0.5) / k
        gx = b[:, :1] + (b[:, 2:3] - b[:, :1]) * u[None]  # [N, k]
        gy = b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * u[None]
        pts = np.stack([np.repeat(gx, k, axis=1), np.tile(gy, (1, k))], axis=-1)  # [N, k*k, 2]
        p0 = pts.reshape(-1, 1, 2)
        lk = dict(winSize=(15, 15), maxLevel=3,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        if guess is not None:
            g = guess.numpy().astype(np.float32) * np.array([sx, sy], dtype=np.float32)
            p1 = (pts + g[:, None, :]).reshape(-1, 1, 2)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(last, gray, p0, p1.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
        else:
            p1, st, _ = cv2.calcOpticalFlowPyrLK(last, gray, p0, None, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, last, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
        good = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm((back - p0).reshape(-1, 2), axis=1) < 1.0)
        good = good.reshape(len(b), k * k)
        d = (p1 - p0).reshape(len(b), k * k, 2)
        shift = np.zeros((len(b), 2), dtype=np.float32)
        ok = good.sum(axis=1) * 2 >= k * k
        if ok.any():  # median over each box's points that came back (each such box has at least half)
            shift[ok] = np.nanmedian(np.where(good[ok][..., None], d[ok], np.nan), axis=1)
        shift /= np.array([sx, sy], dtype=np.float32)
        return torch.from_numpy(shift), torch.from_numpy(ok)

    def _moved(self, boxes: torch.Tensor, xy: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``boxes`` shifted by ``xy`` and clipped to the frame."""
        out = boxes.clone().float()
        out[:, 0::2] = (out[:, 0::2] + xy[:, :1]).clamp(0, size[1])
        out[:, 1::2] = (out[:, 1::2] + xy[:, 1:]).clamp(0, size[0])
        return out

    @property
    def teacher_fraction(self) -> float:
        """Share of frames so far that were key frames."""
        return self.key_frames / self.frames if self.frames else 0.0

    def propose_mask(self, image: np.ndarray, target: Any = None) -> torch.Tensor:  # pragma: no cover - see propose
        raise NotImplementedError("TemporalProposer works frame by frame through propose()")

    # -- proposals -------------------------------------------------------------------------------

    def _scene_changed(self, gray: Optional[np.ndarray]) -> bool:
        """Mean grey-level change since the last frame, on a blurred small grey frame."""
        last, self._last_gray = self._last_gray, gray
        if last is None or gray is None or last.shape != gray.shape:
            return False
        return float(cv2.absdiff(gray, last).mean()) > self.scene_change

    def _newcomer_boxes(self, covering: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Motion blobs (frame pixels, Tensor[K, 4]) that lie mostly outside the ``covering`` boxes."""
        small = self.motion.last_small
        if small is None or not small.any():
            return torch.zeros(0, 4)
        gh, gw = small.shape
        sy, sx = size[0] / gh, size[1] / gw
        n, labels, stats, _ = cv2.connectedComponentsWithStats(small, connectivity=8)
        # The covered area at the gate's scale: cheap, and the test below is a majority vote anyway.
        cov = boxes_to_mask(covering * torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy]), (gh, gw)).numpy()
        inside = np.bincount(labels[cov].ravel(), minlength=n)
        boxes = []
        for i in range(1, n):
            area = int(stats[i, cv2.CC_STAT_AREA])
            if area * sx * sy < self.motion_min_area or 2 * int(inside[i]) >= area:
                continue
            x, y, bw, bh = (int(v) for v in stats[i, :4])
            boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
        if not boxes:
            return torch.zeros(0, 4)
        return dilate_boxes(torch.tensor(boxes, dtype=torch.float32).round(), self.motion_margin, size)

    def _key_frame(self, image: np.ndarray, t0: float, reason: str) -> RegionProposals:
        self._held_src = torch.zeros(0, dtype=torch.long)
        props = RegionProposals.full(image.shape[:2])
        if self.defer_whole:  # several streams: the caller batches every stream's key frame
            props.pending_whole = True
        else:
            props.detections, props.detections_ms, props.detections_gflops = self.detect_whole(image)
        props.time_ms = (time.perf_counter() - t0) * 1e3
        self.key_frames += 1
        self.since_key = 0
        self.last_reason = reason
        return props

    def propose_one(self, image: np.ndarray) -> RegionProposals:
        """Proposals for the next frame of the video (see the module docstring)."""
        t0 = time.perf_counter()
        size = (int(image.shape[0]), int(image.shape[1]))
        if self._own_gate and self.since_key is None:
            self.motion.scale = min(0.5, self.motion_width / size[1])
        if self.newcomers:
            self.motion.update(image)
            gray = self.motion.last_gray
        else:  # no motion mask is needed, only the scene-change test: a strided thumbnail is enough
            step = max(1, size[1] // 160)
            gray = cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_RGB2GRAY)
            gray = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
        scene = self._scene_changed(gray)
        fgray = self._flow_gray_of(image) if self.flow else None
        self.frames += 1
        prev = self.previous
        if prev is not None and prev.image_size != size:
            raise ValueError(f"temporal proposer got a {size} frame after {prev.image_size} frames; call reset()")
        self._held_src = torch.zeros(0, dtype=torch.long)
        if self.since_key is None or prev is None:
            reason: Optional[str] = "start"
        elif self.since_key + 1 >= self.max_interval:
            reason = "interval"
        else:
            reason = "scene" if scene else None
        # a key frame's prediction only matches its fresh detections to tracks: velocity is enough
        flow_to = fgray if reason is None else None
        self._predicted = torch.zeros(0, 4) if prev is None else self._predict(prev, size, flow_to)
        self._flow_gray = fgray
        if reason is not None:
            return self._key_frame(image, t0, reason)
        sure = prev.scores >= self.hold_score
        unsure = (~sure) & (prev.scores >= self.track_score)
        held = prev[sure]
        prev_boxes = self._predicted
        if self.velocity or self.flow:
            held = Detections(prev_boxes[sure.cpu()].to(held.boxes.device), held.scores, held.labels, size,
                              masks=held.masks)
        held_src = torch.nonzero(sure).flatten().cpu()
        tracked = dilate_boxes(prev_boxes[unsure], self.margin, size) if bool(unsure.any()) else torch.zeros(0, 4)
        if self.newcomers:
            boxes = torch.cat([tracked, self._newcomer_boxes(torch.cat([held.boxes.cpu(), tracked]), size)])
        else:
            boxes = tracked
        mask = boxes_to_mask(boxes, size)
        if int(mask.count_nonzero()) > self.max_area * mask.numel():
            return self._key_frame(image, t0, "area")
        if len(held):
            cx = ((held.boxes[:, 0] + held.boxes[:, 2]) / 2).long().clamp(0, size[1] - 1)
            cy = ((held.boxes[:, 1] + held.boxes[:, 3]) / 2).long().clamp(0, size[0] - 1)
            keep = ~mask[cy, cx]
            held, held_src = held[keep], held_src[keep.cpu()]
        self._held_src = held_src
        self.since_key += 1
        self.last_reason = None
        props = RegionProposals(mask, boxes, held=held)
        props.time_ms = (time.perf_counter() - t0) * 1e3
        return props

    def propose(self, images: Sequence[np.ndarray], targets: Optional[Sequence[Any]] = None) -> List[RegionProposals]:
        if len(images) != 1:
            raise ValueError(
                f"the temporal proposer works one frame per call (got a batch of {len(images)}): "
                "each frame's proposals depend on the previous frame's detections"
            )
        return [self.propose_one(images[0])]
