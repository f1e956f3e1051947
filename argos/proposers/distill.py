"""Online-distilled proposer for video, after TKD (Farhadi & Yang, WACV 2020).

The wrapped detector is the teacher. It runs on the whole frame on key frames, and its output
is returned as is. Between key frames a tiny student network, trained online on the teacher's box
masks of the scene it watches, proposes the regions, together with a motion gate and the
previous frame's detections.

Key-frame policy (``KeyFramePolicy``):
- the first frame is a key frame; after that the gap between key frames is ``interval`` frames,
  starting at ``start_interval`` and kept in ``[min_interval, max_interval]``;
- on every key frame the proposal argos would have made without the teacher (student, motion
  and tracked boxes) is scored against the teacher *before* the student trains on that frame:
  ``recall`` = share of teacher-box pixels inside that proposal. ``recall >= good``
  doubles the interval (the student agrees, call the teacher less); ``recall < bad``, or a
  student loss above ``loss_jump`` x its running mean, drops it to ``min_interval``;
- motion that the current proposal does not cover (a motion component of at least
  ``motion_area`` pixels with less than half of it inside the proposal) makes the current
  frame a key frame at once, if the last one is at least ``motion_interval`` frames old:
  something new entered the scene. The motion mask is part of every proposal anyway, so
  moving pixels are never skipped while the teacher waits.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argos.proposers.base import Proposer
from argos.geometry import Dilation, boxes_to_mask, dilate_boxes, mask_to_boxes
from argos.structures import Detections, RegionProposals

__all__ = ["DistillProposer", "MotionGate", "TinyStudent", "KeyFramePolicy"]


class MotionGate:
    """Changed pixels: grayscale, Gaussian blur, |frame - running background| > threshold, dilate.

    Args:
        scale: work at this fraction of the frame size (speed).
        blur: Gaussian kernel size (odd, pixels at working scale).
        alpha: background update rate per frame.
        threshold: grey-level difference that counts as change.
        dilate: dilation kernel size (pixels at working scale).
    """

    def __init__(self, scale: float = 0.5, blur: int = 5, alpha: float = 0.05, threshold: float = 30.0, dilate: int = 5):
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if blur % 2 == 0:
            raise ValueError(f"blur kernel must be odd, got {blur}")
        self.scale, self.blur, self.alpha, self.threshold, self.dilate = scale, blur, alpha, threshold, dilate
        self.reset()

    def reset(self) -> None:
        self._background: Optional[np.ndarray] = None
        #: the last mask at working scale (uint8 0/1), for cheap connected components
        self.last_small: Optional[np.ndarray] = None
        #: the last blurred grey frame at working scale (float32)
        self.last_gray: Optional[np.ndarray] = None

    def update(self, image: np.ndarray) -> np.ndarray:
        """RGB image (H, W, 3) uint8 -> changed pixels at working scale (uint8 0/1, ``last_small``).

        Also keeps the blurred working-scale grey frame in ``last_gray`` (float32).
        """
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.scale != 1:
            gray = cv2.resize(gray, (max(1, round(w * self.scale)), max(1, round(h * self.scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.GaussianBlur(gray, (self.blur, self.blur), 0).astype(np.float32)
        self.last_gray = gray
        if self._background is None or self._background.shape != gray.shape:
            self._background = gray.copy()
            self.last_small = np.zeros(gray.shape, np.uint8)
            return self.last_small
        changed = (cv2.absdiff(gray, self._background) > self.threshold).astype(np.uint8)
        cv2.accumulateWeighted(gray, self._background, self.alpha)
        if self.dilate > 1:
            changed = cv2.dilate(changed, np.ones((self.dilate, self.dilate), np.uint8))
        self.last_small = changed
        return changed

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """RGB image (H, W, 3) uint8 -> Tensor[H, W] bool of changed pixels."""
        h, w = image.shape[:2]
        changed = self.update(image)
        if changed.shape != (h, w):
            changed = cv2.resize(changed, (w, h), interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(changed.astype(bool))


class TinyStudent(nn.Module):
    """A ~25k-parameter fully convolutional mask predictor.

    Input Tensor[B, 3, h, w] float in [0, 1]; output logits Tensor[B, 1, h/4, w/4].
    Dilated convolutions give it context without more down-sampling.
    """

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        c = width
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(c, 1, 1),
        )
        # Start from "mostly background" so the first frames do not propose everything.
        nn.init.constant_(self.body[-1].bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5)


@dataclass
class KeyFramePolicy:
    """When the teacher runs; see the module docstring."""

    min_interval: int = 2
    max_interval: int = 32
    start_interval: int = 4
    good: float = 0.97
    bad: float = 0.85
    loss_jump: float = 2.0
    motion_area: int = 600
    motion_interval: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_interval <= self.start_interval <= self.max_interval:
            raise ValueError("need 1 <= min_interval <= start_interval <= max_interval")
        if not 0 <= self.bad <= self.good <= 1:
            raise ValueError("need 0 <= bad <= good <= 1")
        self.reset()

    def reset(self) -> None:
        self.interval = self.start_interval
        self.since_key: Optional[int] = None
        self._loss_mean: Optional[float] = None

    def due(self) -> bool:
        # since_key counts the frames after the last key frame, so interval 4 keys frames 0, 4, 8, ...
        return self.since_key is None or self.since_key + 1 >= self.interval

    def may_trigger(self) -> bool:
        """Whether an event (new motion) may call the teacher now: not within ``motion_interval`` of the last."""
        return self.since_key is None or self.since_key + 1 >= self.motion_interval

    def tick(self, key: bool) -> None:
        self.since_key = 0 if key else (self.since_key or 0) + 1

    def update(self, recall: float, loss: float) -> None:
        """Adapt the interval after a key frame from the student's recall and loss before training."""
        jump = self._loss_mean is not None and loss > self.loss_jump * self._loss_mean
        self._loss_mean = loss if self._loss_mean is None else 0.8 * self._loss_mean + 0.2 * loss
        if recall < self.bad or jump:
            self.interval = self.min_interval
        elif recall >= self.good:
            self.interval = min(self.max_interval, self.interval * 2)


class DistillProposer(Proposer):
    """Video proposer that distills the wrapped detector into a tiny student, online.

    Args:
        input_scale: the student sees the frame at this scale.
        teacher_score: teacher detections with this score form the student's target mask.
        track_score: previous detections with this score are carried to the next frame.
        track_margin: pixels added around carried detections (objects move between frames).
        steps: optimizer steps on each key frame.
        warmup_steps, warmup_keys: a fresh student needs a few hundred steps to stop flagging
            most of the frame: the first ``warmup_keys`` key frames train ``warmup_steps`` steps.
        batch: frames per step: the newest key frame plus ``batch - 1`` replayed ones.
        replay: number of recent key frames kept for those steps.
        lr: student learning rate (Adam).
        threshold: student probability that counts as foreground.
        policy: key-frame policy; ``None`` uses the defaults of :class:`KeyFramePolicy`.
        dilation, min_area: see :class:`Proposer`; the mask is always the union of the boxes of
            the student's blobs, the motion blobs and the tracked detections.
    """

    stateful = True
    needs_detector = True

    def __init__(
        self,
        input_scale: float = 0.5,
        teacher_score: float = 0.3,
        track_score: float = 0.3,
        track_margin: int = 8,
        steps: int = 2,
        warmup_steps: int = 25,
        warmup_keys: int = 8,
        batch: int = 2,
        replay: int = 8,
        lr: float = 3e-3,
        threshold: float = 0.5,
        policy: Optional[KeyFramePolicy] = None,
        motion: Optional[MotionGate] = None,
        dilation: Dilation = 0,
        min_area: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__(dilation=dilation, min_area=min_area, mask_mode="boxes")
        self.input_scale, self.teacher_score, self.track_score = input_scale, teacher_score, track_score
        self.track_margin, self.steps, self.threshold, self.lr = track_margin, steps, threshold, lr
        if batch < 1 or steps < 1:
            raise ValueError(f"steps and batch must be >= 1, got {steps}, {batch}")
        self.batch = batch
        self.warmup_steps, self.warmup_keys = warmup_steps, warmup_keys
        self.policy = policy or KeyFramePolicy()
        self.motion = motion or MotionGate()
        self.replay: Deque[Tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=replay)
        self.seed = seed
        self.adapter = None
        self.reset()

    def bind(self, adapter) -> None:
        self.adapter = adapter

    def reset(self) -> None:
        torch.manual_seed(self.seed)
        self.student = TinyStudent()
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=self.lr)
        self.policy.reset()
        self.motion.reset()
        self.replay.clear()
        self.previous: Optional[Detections] = None
        self.frames = 0
        self.key_frames = 0
        self.last_loss = float("nan")
        self.last_recall = float("nan")

    @property
    def teacher_fraction(self) -> float:
        """Share of frames so far on which the teacher ran."""
        return self.key_frames / self.frames if self.frames else 0.0

    def observe(self, detections: Sequence[Optional[Detections]]) -> None:
        self.previous = detections[-1] if detections else None

    def propose_mask(self, image: np.ndarray, target: Any = None) -> torch.Tensor:  # pragma: no cover - see propose
        raise NotImplementedError("DistillProposer works frame by frame through propose()")

    # -- student -----------------------------------------------------------------------------

    def _student_input(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[:2]
        size = (max(4, round(w * self.input_scale)), max(4, round(h * self.input_scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small).permute(2, 0, 1).float().div(255).unsqueeze(0)

    def _student_prob(self, x: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (probability Tensor[H, W] at frame size, probability Tensor[h/8, w/8] on the student's grid)."""
        with torch.inference_mode():
            logits = self.student(x)
            full = torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))[0, 0]
            return full, torch.sigmoid(logits)[0, 0]

    def _train(self, x: torch.Tensor, target: torch.Tensor) -> float:
        """A few optimizer steps on the newest key frame plus replayed ones; returns the mean loss."""
        self.replay.append((x, target))
        self.student.train()
        losses = []
        steps = self.warmup_steps if self.key_frames < self.warmup_keys else self.steps
        for step in range(steps):
            # Always include the newest frame; fill the rest of the mini-batch from the replay.
            picks = [len(self.replay) - 1] + torch.randperm(len(self.replay))[: self.batch - 1].tolist()
            xb = torch.cat([self.replay[i][0] for i in picks if self.replay[i][0].shape == x.shape])
            tb = torch.cat([self.replay[i][1] for i in picks if self.replay[i][0].shape == x.shape])
            loss = _mask_loss(self.student(xb), tb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.student.eval()
        return float(np.mean(losses)) if losses else float("nan")

    # -- proposals ---------------------------------------------------------------------------

    def _grid_boxes(self, grid_mask, size: Tuple[int, int]) -> torch.Tensor:
        """Component boxes of a coarse mask, scaled out to frame pixels (whole pixels), then dilated."""
        grid_mask = torch.as_tensor(np.asarray(grid_mask)).bool()
        gh, gw = grid_mask.shape
        sy, sx = size[0] / gh, size[1] / gw
        boxes = mask_to_boxes(grid_mask, min_area=max(1, round(self.min_area / (sx * sy))))
        boxes[:, 0::2] = (boxes[:, 0::2] * sx).round()
        boxes[:, 1::2] = (boxes[:, 1::2] * sy).round()
        return dilate_boxes(boxes, self.dilation, size) if self.dilation else boxes

    def _tracked_boxes(self, size: Tuple[int, int]) -> torch.Tensor:
        """Previous confident detections grown by ``track_margin`` (Tensor[K, 4])."""
        if self.previous is None or len(self.previous) == 0:
            return torch.zeros(0, 4)
        keep = self.previous[self.previous.scores >= self.track_score]
        return dilate_boxes(keep.boxes, self.track_margin, size)

    def _key_frame(self, image: np.ndarray, x: torch.Tensor, proposal: torch.Tensor, t0: float) -> RegionProposals:
        size = image.shape[:2]
        dets, teacher_ms, teacher_gflops = self.detect_whole(image)
        confident = dets[dets.scores >= self.teacher_score]
        target_full = boxes_to_mask(confident.boxes, size)
        # Score the proposal argos would have made without the teacher, before the student
        # learns this frame.
        covered = int((proposal & target_full).sum())
        recall = covered / int(target_full.sum()) if bool(target_full.any()) else 1.0
        target = F.interpolate(target_full[None, None].float(), size=_out_size(x), mode="area")
        loss = self._train(x, target)
        self.policy.update(recall, loss)
        self.last_loss, self.last_recall = loss, recall
        self.key_frames += 1
        props = self.finalize(target_full)
        props.detections, props.detections_ms, props.detections_gflops = dets, teacher_ms, teacher_gflops
        props.time_ms = (time.perf_counter() - t0) * 1e3
        return props

    def propose(self, images: Sequence[np.ndarray], targets: Optional[Sequence[Any]] = None) -> List[RegionProposals]:
        out = []
        for image in images:
            t0 = time.perf_counter()
            size = image.shape[:2]
            moving = self.motion(image)
            x = self._student_input(image)
            prob, prob_grid = self._student_prob(x, size)
            student = prob >= self.threshold
            tracked = self._tracked_boxes(size)
            # Boxes per source, not of the union: touching blobs of different sources would
            # otherwise merge into one large box. Components are found on each source's own
            # coarse grid (a few ms less per frame than at full resolution).
            boxes = torch.cat([
                self._grid_boxes(prob_grid >= self.threshold, size),
                self._grid_boxes(self.motion.last_small, size),
                tracked,
            ])
            proposal = boxes_to_mask(boxes, size)
            self.frames += 1
            key = self.policy.due() or (
                self.policy.may_trigger()
                and _uncovered_motion(self.motion.last_small, student | boxes_to_mask(tracked, size),
                                      self.policy.motion_area)
            )
            self.policy.tick(key)
            if key:
                props = self._key_frame(image, x, proposal, t0)
            else:
                props = RegionProposals(proposal, boxes, scores=prob)
                props.time_ms = (time.perf_counter() - t0) * 1e3
            out.append(props)
        return out


def _out_size(x: torch.Tensor) -> Tuple[int, int]:
    h, w = x.shape[-2:]
    # Two stride-2 convs with padding 1: ceil(h / 4).
    return (h + 3) // 4, (w + 3) // 4


def _mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Foreground-weighted BCE + soft Dice; foreground is a few % of a street frame."""
    pos = target.mean().clamp(min=1e-3)
    weight = torch.where(target > 0.5, (1 - pos) / pos, torch.ones_like(target)).clamp(max=50)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def _uncovered_motion(moving_small: np.ndarray, covered: torch.Tensor, min_area: int) -> bool:
    """True when a motion component (on the motion gate's grid) of >= ``min_area`` frame pixels lies
    mostly outside ``covered`` (Tensor[H, W] bool at frame size)."""
    if moving_small is None or not moving_small.any():
        return False
    gh, gw = moving_small.shape
    scale = (covered.shape[0] / gh) * (covered.shape[1] / gw)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(moving_small.astype(np.uint8), connectivity=8)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] * scale >= min_area]
    if not big:
        return False
    small_cover = cv2.resize(covered.numpy().astype(np.uint8), (gw, gh), interpolation=cv2.INTER_NEAREST).astype(bool)
    inside = np.bincount(labels[small_cover].ravel(), minlength=n)
    return any(int(inside[i]) * 2 < int(stats[i, cv2.CC_STAT_AREA]) for i in big)
