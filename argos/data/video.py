"""Video input (files, image folders, cameras) and per-frame teacher boxes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch

__all__ = ["VideoReader", "load_frame_boxes"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class VideoReader:
    """Frames of a video file, a folder of images (sorted by name) or a camera index, as RGB.

    Iterating yields ``(frame_index, np.ndarray[H, W, 3] uint8 RGB)``. A file that stops decoding
    early (truncated or corrupt) ends the iteration; ``stopped_early`` and ``error`` say where
    and why, so no frame that decoded is lost.

    Args:
        source: path to a video file or image folder, a stream URL (``rtsp://...``), or an int
            camera index.
        stride: yield every ``stride``-th frame.
        limit: stop after this many yielded frames.
        start: skip the frames before this index (they are decoded, not yielded).
    """

    source: Union[str, Path, int]
    stride: int = 1
    limit: Optional[int] = None
    start: int = 0

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        self.error: Optional[str] = None
        self.stopped_early = False
        self._files: Optional[List[Path]] = None
        if self._is_stream:
            return
        path = Path(self.source)
        if not path.exists():
            raise FileNotFoundError(f"video source not found: {path}")
        if path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not self._files:
                raise ValueError(f"no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) in {path}")
        elif path.stat().st_size == 0:
            raise ValueError(f"video file is empty: {path}")

    @property
    def _is_stream(self) -> bool:
        """A camera index or a stream URL (rtsp://, http://, ...): no file to check, no frame count."""
        return isinstance(self.source, int) or "://" in str(self.source)

    def _open(self) -> cv2.VideoCapture:
        src = self.source if isinstance(self.source, int) else str(self.source)
        cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            raise ValueError(f"cannot open video source {self.source!r} (corrupt file, unknown codec or no camera)")
        return cap

    @property
    def frame_count(self) -> Optional[int]:
        """Frames the container claims (before stride/limit); None for cameras or when unknown."""
        if self._files is not None:
            return len(self._files)
        if self._is_stream:
            return None
        cap = self._open()
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return n if n > 0 else None

    @property
    def fps(self) -> Optional[float]:
        if self._files is not None or isinstance(self.source, int):
            return None
        cap = self._open()
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        cap.release()
        return fps if fps > 0 else None

    def __len__(self) -> int:
        n = self.frame_count
        if n is None:
            raise TypeError("length unknown for this source")
        n = max(0, (n - self.start + self.stride - 1) // self.stride)
        return n if self.limit is None else min(n, self.limit)

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        self.error, self.stopped_early = None, False
        yielded = 0
        if self._files is not None:
            for index in range(self.start, len(self._files), self.stride):
                image = cv2.imread(str(self._files[index]), cv2.IMREAD_COLOR)
                if image is None:
                    self.error, self.stopped_early = f"cannot decode {self._files[index]}", True
                    return
                yield index, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                yielded += 1
                if self.limit is not None and yielded >= self.limit:
                    return
            return
        cap = self._open()
        expected = self.frame_count
        index = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    if expected is not None and index < expected:
                        self.error = f"decoding stopped at frame {index} of {expected}"
                        self.stopped_early = True
                    elif expected is None and self._is_stream:
                        # A camera or stream has no end of its own: it stopped delivering frames.
                        self.error = f"{self.source!r} stopped delivering frames after {index} frame(s)"
                        self.stopped_early = True
                    return
                if index >= self.start and (index - self.start) % self.stride == 0:
                    yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    yielded += 1
                    if self.limit is not None and yielded >= self.limit:
                        return
                index += 1
        finally:
            cap.release()


def load_frame_boxes(path: Union[str, Path], scale: float = 1.0, min_score: float = 0.0) -> List[torch.Tensor]:
    """Per-frame boxes from a JSON file -> list of Tensor[M, 5] (x1, y1, x2, y2, score), scaled.

    Accepts either a list (one entry per frame) of ``[x1, y1, x2, y2, score]`` rows, or a dict of
    parallel per-frame lists ``{"bboxes": [...], "scores": [...], "idxs": [...]}`` (the teacher
    file shipped in ``data/video``). ``scale`` maps the file's coordinates to the video's
    (0.625 for 768x576 boxes on the 480x360 PETS video).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame boxes file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    frames: List[torch.Tensor] = []
    if isinstance(data, dict):
        if "bboxes" not in data:
            raise ValueError(f"{path}: expected a 'bboxes' key (per-frame box lists), got keys {sorted(data)}")
        scores = data.get("scores") or [[1.0] * len(b) for b in data["bboxes"]]
        order = data.get("idxs") or list(range(len(data["bboxes"])))
        by_index = {}
        for idx, boxes, sc in zip(order, data["bboxes"], scores):
            if len(boxes) != len(sc):
                raise ValueError(f"{path}: frame {idx} has {len(boxes)} boxes but {len(sc)} scores")
            rows = [list(b[:4]) + [s] for b, s in zip(boxes, sc)]
            by_index[int(idx)] = rows
        rows_per_frame = [by_index.get(i, []) for i in range(max(by_index) + 1 if by_index else 0)]
    elif isinstance(data, list):
        rows_per_frame = data
    else:
        raise ValueError(f"{path}: expected a list of frames or a dict with 'bboxes'")
    for i, rows in enumerate(rows_per_frame):
        t = torch.as_tensor(rows, dtype=torch.float32).reshape(-1, 5) if len(rows) else torch.zeros(0, 5)
        if t.shape[1] != 5:
            raise ValueError(f"{path}: frame {i} rows must be [x1, y1, x2, y2, score]")
        t[:, :4] *= scale
        frames.append(t[t[:, 4] >= min_score])
    return frames
