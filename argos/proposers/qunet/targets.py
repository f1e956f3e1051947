"""Training targets for QU-Net: (image, foreground mask, boxes) from labels, teacher boxes or a detector.

Four sources:

- COCO instance masks (or boxes) through :class:`argos.data.CocoDataset`, class-filtered;
- Cityscapes ``gtFine`` instance masks (``*_instanceIds.png``) through
  :class:`argos.data.cityscapes.CityscapesDataset`, class-filtered;
- per-frame teacher boxes stored in a JSON (e.g. the PETS Keypoint R-CNN boxes in ``../shared``);
- self-supervised: any argos adapter run on unlabeled images or video frames; its boxes are the
  target. No labels needed.

Every sample keeps its boxes so held-out splits can be scored with regions detected.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from argos.geometry import boxes_to_mask

__all__ = ["MaskSample", "parse_range", "coco_samples", "cityscapes_samples", "teacher_samples", "detector_samples",
           "read_video_frames", "video_frame_count", "read_image_folder"]

PathLike = Union[str, os.PathLike]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class MaskSample:
    """One training or evaluation image.

    Args:
        image (np.ndarray[H, W, 3] uint8): RGB.
        mask (np.ndarray[H, W] bool): foreground target.
        boxes (np.ndarray[M, 4] float32): the objects, ``xyxy`` pixels (what regions detected scores).
        name (str): file name or ``"frame_000123"``.
    """

    image: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}")
        if self.mask.shape != self.image.shape[:2]:
            raise ValueError(f"mask shape {self.mask.shape} != image size {self.image.shape[:2]}")
        self.mask = self.mask.astype(bool, copy=False)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)


def parse_range(spec: Union[str, Sequence[int], range, None], n: int) -> List[int]:
    """``"0:100"``, ``"-28:"``, ``"::2"`` (Python slice syntax), a list of indices, or None (all) -> indices < n."""
    if spec is None:
        return list(range(n))
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"range must look like 'start:stop[:step]', got {spec!r}")
        try:
            bounds = [int(p) if p.strip() else None for p in parts]
        except ValueError as err:
            raise ValueError(f"range must look like 'start:stop[:step]' with integers, got {spec!r}") from err
        return list(range(n))[slice(*bounds)]
    out = [int(i) for i in spec]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices out of range 0..{n - 1}: {bad[:5]}")
    return out


def coco_samples(
    images: PathLike, annotations: PathLike, classes=None, mask_source: str = "masks", indices=None,
) -> List[MaskSample]:
    """COCO images with the union of their (class-filtered) instance masks as target.

    Args:
        mask_source: ``"masks"`` (instance polygons/RLE) or ``"boxes"`` (filled boxes).
        indices: which images, in the dataset's sorted image-id order (see :func:`parse_range`).
    """
    from argos.data import CocoDataset

    return _dataset_samples(CocoDataset(images, annotations, classes=classes), mask_source, indices)


def cityscapes_samples(
    images: PathLike, gt_dir: Optional[PathLike] = None, classes=None, mask_source: str = "masks", indices=None,
) -> List[MaskSample]:
    """Cityscapes images with the union of their (class-filtered) ``gtFine`` instances as target.

    Args:
        images: ``ROOT/leftImg8bit/{split}``.
        gt_dir: ``ROOT/gtFine/{split}`` (default: found next to ``images``).
        classes: Cityscapes instance classes (default: person, rider, car, truck, bus, train,
            motorcycle, bicycle); crowd regions of these classes are foreground too.
        mask_source: ``"masks"`` (instance pixels) or ``"boxes"`` (filled instance boxes).
        indices: which images, in sorted file order (see :func:`parse_range`).
    """
    from argos.data.cityscapes import CityscapesDataset

    return _dataset_samples(CityscapesDataset(images, gt_dir, classes=classes), mask_source, indices)


def _dataset_samples(ds, mask_source: str, indices) -> List[MaskSample]:
    """A labelled dataset (``CocoDataset``-like: samples, ``foreground_mask``) -> mask samples."""
    out = []
    for i in parse_range(indices, len(ds)):
        s = ds[i]
        out.append(MaskSample(s.image, ds.foreground_mask(i, source=mask_source), s.boxes.numpy(), s.file_name))
    return out


def read_video_frames(video: PathLike, indices: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(frame index, RGB frame)`` for the wanted frames of a video file, in order."""
    path = Path(video)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"could not open video (corrupt or unsupported codec): {path}")
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    last = None if wanted is None else wanted[-1]
    keep = None if wanted is None else set(wanted)
    i = 0
    try:
        while last is None or i <= last:
            ok, bgr = cap.read()
            if not ok:
                break
            if keep is None or i in keep:
                yield i, np.ascontiguousarray(bgr[:, :, ::-1])
            i += 1
    finally:
        cap.release()


def video_frame_count(video: PathLike) -> int:
    """Frame count from the container header (what ``parse_range`` needs for negative indices)."""
    path = Path(video)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"could not open video (corrupt or unsupported codec): {path}")
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def read_image_folder(folder: PathLike) -> List[Path]:
    """Image files of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in {folder}")
    return files


def _box_sample(image: np.ndarray, boxes: np.ndarray, name: str) -> MaskSample:
    h, w = image.shape[:2]
    mask = boxes_to_mask(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), (h, w)).numpy()
    return MaskSample(image, mask, boxes, name)


def teacher_samples(
    video: PathLike, boxes_json: PathLike, scale: float = 1.0, min_score: float = 0.5, frames=None,
) -> List[MaskSample]:
    """Video frames with a teacher's per-frame boxes (filled) as target.

    The JSON holds ``{"idxs": [frame, ...], "bboxes": [[[x1, y1, x2, y2], ...], ...],
    "scores": [[s, ...], ...]}`` (one list per frame), in coordinates ``scale`` times the video's
    (the PETS file: 768x576 boxes for the 480x360 video, ``scale=0.625``).

    Args:
        frames: frame indices to keep (see :func:`parse_range`; indices into the JSON's frames).
    """
    path = Path(boxes_json)
    if not path.is_file():
        raise FileNotFoundError(f"teacher boxes JSON not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(k in data for k in ("idxs", "bboxes", "scores")):
        raise ValueError(f"{path} must hold 'idxs', 'bboxes' and 'scores' lists (one entry per frame)")
    by_frame = {}
    for idx, boxes, scores in zip(data["idxs"], data["bboxes"], data["scores"]):
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * float(scale)
        s = np.asarray(scores, dtype=np.float32).reshape(-1)
        by_frame[int(idx)] = b[s >= min_score]
    n = max(by_frame) + 1 if by_frame else 0
    wanted = parse_range(frames, n)
    out = []
    for i, frame in read_video_frames(video, wanted):
        if i in by_frame:
            out.append(_box_sample(frame, by_frame[i], f"frame_{i:06d}"))
    return out


def detector_samples(
    adapter, images: Iterable[Tuple[str, np.ndarray]], min_score: float = 0.25, classes: Optional[Sequence] = None,
) -> List[MaskSample]:
    """Self-supervised targets: the boxes an argos adapter finds on unlabeled images.

    Args:
        adapter: an :class:`argos.adapters.Adapter` (e.g. ``build_adapter("yolov5", weights=...)``).
        images: ``(name, RGB image)`` pairs, e.g. from :func:`read_video_frames`.
        min_score: detections below this score are not targets.
        classes: class names or ids of the detector that count as objects (None: all).
    """
    keep_ids = None
    if classes is not None:
        by_name = {v: k for k, v in adapter.names.items()}
        keep_ids = set()
        for c in classes:
            if isinstance(c, str):
                if c not in by_name:
                    raise ValueError(f"detector has no class {c!r}; its classes: {', '.join(by_name)}")
                keep_ids.add(by_name[c])
            else:
                keep_ids.add(int(c))
    out = []
    for name, image in images:
        (d,) = adapter.predict([image])
        keep = d.scores >= min_score
        if keep_ids is not None:
            keep &= torch.isin(d.labels, torch.tensor(sorted(keep_ids)))
        out.append(_box_sample(image, d.boxes[keep].numpy(), str(name)))
    return out
