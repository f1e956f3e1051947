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
        self.since_key: Optional[int] = None
        self.frames = 0
        self.key_frames = 0
        self._last_gray: Optional[np.ndarray] = None
        #: why each of the last frames was a key frame (``"start"``, ``"interval"``, ``"scene"``, ``"area"``) or ``None``
        self.last_reason: Optional[str] = None

    def observe(self, detections: Sequence[Optional[Detections]]) -> None:
        self.previous = detections[-1] if detections else None

    @property
    def teacher_fraction(self) -> float:
        """Share of frames so far that were key frames."""
        return self.key_frames / self.frames if self.frames else 0.0

    def propose_mask(self, image: np.ndarray, target: Any = None) -> torch.Tensor:  # pragma: no cover - see propose
        raise NotImplementedError("TemporalProposer works frame by frame through propose()")

    # -- proposals -------------------------------------------------------------------------------

    def _scene_changed(self) -> bool:
        """Mean grey-level change since the last frame, on the motion gate's blurred small frame."""
        gray = self.motion.last_gray
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
        self.motion.update(image)
        scene = self._scene_changed()
        self.frames += 1
        prev = self.previous
        if prev is not None and prev.image_size != size:
            raise ValueError(f"temporal proposer got a {size} frame after {prev.image_size} frames; call reset()")
        if self.since_key is None or prev is None:
            return self._key_frame(image, t0, "start")
        if self.since_key + 1 >= self.max_interval:
            return self._key_frame(image, t0, "interval")
        if scene:
            return self._key_frame(image, t0, "scene")
        sure = prev.scores >= self.hold_score
        unsure = (~sure) & (prev.scores >= self.track_score)
        held = prev[sure]
        tracked = dilate_boxes(prev.boxes[unsure], self.margin, size) if bool(unsure.any()) else torch.zeros(0, 4)
        boxes = torch.cat([tracked, self._newcomer_boxes(torch.cat([held.boxes, tracked]), size)])
        mask = boxes_to_mask(boxes, size)
        if int(mask.count_nonzero()) > self.max_area * mask.numel():
            return self._key_frame(image, t0, "area")
        if len(held):
            cx = ((held.boxes[:, 0] + held.boxes[:, 2]) / 2).long().clamp(0, size[1] - 1)
            cy = ((held.boxes[:, 1] + held.boxes[:, 3]) / 2).long().clamp(0, size[0] - 1)
            held = held[~mask[cy, cx]]
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
