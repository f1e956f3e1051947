"""Training data for QU-Net: where the mask targets come from, and the in-memory dataset.

:class:`DataConfig` picks a source (COCO or Cityscapes masks, teacher boxes on a video, or a
detector's own boxes); :func:`load_data` turns it into :class:`MaskSample` lists through
:mod:`argos.proposers.qunet.targets`; :class:`MaskDataset` holds them resized for training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from argos.proposers.qunet.targets import MaskSample

__all__ = ["DataConfig", "MaskDataset", "load_data", "load_split"]


class MaskDataset(Dataset):
    """Samples resized once to ``size`` and kept in memory as uint8 tensors.

    Item: ``(Tensor[3, H, W] uint8, Tensor[H, W] bool)``.
    """

    def __init__(self, samples: Sequence[MaskSample], size: Tuple[int, int]) -> None:
        if len(samples) == 0:
            raise ValueError("no training samples")
        h, w = size
        self.images = torch.stack([
            torch.from_numpy(cv2.resize(s.image, (w, h), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
            for s in samples])
        # Area-average the mask and keep any covered pixel, so thin objects survive the shrink.
        self.masks = torch.stack([
            torch.from_numpy(cv2.resize(s.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0)
            for s in samples])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], self.masks[i]


@dataclass
class DataConfig:
    """Where the targets come from (see :mod:`argos.proposers.qunet.targets`).

    Args:
        source: ``"coco"`` (instance masks), ``"cityscapes"`` (``gtFine`` instance masks),
            ``"teacher"`` (per-frame boxes JSON on a video) or ``"detector"`` (self-supervised: a
            detector's boxes on unlabeled images or frames).
        images: COCO images folder, Cityscapes ``ROOT/leftImg8bit/{split}``, or unlabeled images
            for ``"detector"``.
        annotations: COCO instances JSON, or Cityscapes ``ROOT/gtFine/{split}`` (found next to
            ``images`` when omitted).
        classes: COCO category names / Cityscapes instance classes / detector class names that
            count (None: all; Cityscapes: its 8 evaluated instance classes).
        mask_source: COCO targets from ``"masks"`` or ``"boxes"``.
        video: video file for ``"teacher"``/``"detector"``.
        boxes_json, boxes_scale, min_score: teacher boxes, their scale to the video's pixels, and
            the score below which a teacher/detector box is ignored.
        detector, detector_weights: argos adapter for ``"detector"``.
        train_range, val_range, calib_range: image/frame indices (``"start:stop[:step]"``).
    """

    source: str = "coco"
    images: Optional[str] = None
    annotations: Optional[str] = None
    classes: Optional[List[str]] = None
    mask_source: str = "masks"
    video: Optional[str] = None
    boxes_json: Optional[str] = None
    boxes_scale: float = 1.0
    min_score: float = 0.5
    detector: str = "yolov5"
    detector_weights: Optional[str] = None
    train_range: Optional[str] = None
    val_range: Optional[str] = None
    calib_range: Optional[str] = None


def load_split(d: DataConfig, spec: Optional[str]) -> List[MaskSample]:
    from argos.proposers.qunet import targets as T

    if d.source == "coco":
        if not d.images or not d.annotations:
            raise ValueError("source 'coco' needs images and annotations")
        return T.coco_samples(d.images, d.annotations, d.classes, d.mask_source, spec)
    if d.source == "cityscapes":
        if not d.images:
            raise ValueError("source 'cityscapes' needs images (ROOT/leftImg8bit/SPLIT)")
        return T.cityscapes_samples(d.images, d.annotations, d.classes, d.mask_source, spec)
    if d.source == "teacher":
        if not d.video or not d.boxes_json:
            raise ValueError("source 'teacher' needs video and boxes_json")
        return T.teacher_samples(d.video, d.boxes_json, d.boxes_scale, d.min_score, spec)
    if d.source == "detector":
        from argos.wrap import build_adapter

        kwargs = {"conf": min(d.min_score, 0.25)}
        if d.detector_weights:
            kwargs["weights"] = d.detector_weights
        adapter = build_adapter(d.detector, **kwargs)
        if d.video:
            n = T.video_frame_count(d.video)
            frames = ((f"frame_{i:06d}", f) for i, f in T.read_video_frames(d.video, T.parse_range(spec, n)))
        elif d.images:
            from argos.io import read_image

            files = T.read_image_folder(d.images)
            frames = ((p.name, read_image(p)) for p in (files[i] for i in T.parse_range(spec, len(files))))
        else:
            raise ValueError("source 'detector' needs a video or an images folder")
        return T.detector_samples(adapter, frames, d.min_score, d.classes)
    raise ValueError(f"unknown data source {d.source!r}; valid: coco, cityscapes, teacher, detector")


def load_data(d: DataConfig) -> Tuple[List[MaskSample], List[MaskSample], Optional[List[MaskSample]]]:
    """``(train, val, calib)`` samples; ``val`` is empty without a ``val_range``, ``calib`` None without one."""
    train_s = load_split(d, d.train_range)
    val_s = load_split(d, d.val_range) if d.val_range else []
    calib_s = load_split(d, d.calib_range) if d.calib_range else None
    return train_s, val_s, calib_s
