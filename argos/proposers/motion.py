"""Classical baseline for video: OpenCV MOG2 background subtraction plus morphology."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from argos.proposers.base import Proposer
from argos.geometry import Dilation

__all__ = ["MotionProposer"]


class MotionProposer(Proposer):
    """Foreground = pixels that differ from a learned background model. Stateful across frames.

    Args:
        history: frames in MOG2's background model.
        var_threshold: MOG2 squared Mahalanobis threshold.
        warmup: the first ``warmup`` frames propose the whole frame while the model learns.
        open_size, close_size: morphology kernel sizes (pixels) to drop noise and fill holes.
        scale: process at this fraction of the input resolution (speed); the mask is resized back.
        dilation, min_area, mask_mode: see :class:`Proposer`.
    """

    stateful = True

    def __init__(
        self,
        history: int = 200,
        var_threshold: float = 16.0,
        warmup: int = 5,
        open_size: int = 3,
        close_size: int = 9,
        scale: float = 0.5,
        dilation: Dilation = 8,
        min_area: int = 64,
        mask_mode: str = "boxes",
    ) -> None:
        super().__init__(dilation=dilation, min_area=min_area, mask_mode=mask_mode)
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.history, self.var_threshold, self.warmup = history, var_threshold, warmup
        self.open_size, self.close_size, self.scale = open_size, close_size, scale
        self.reset()

    def __getstate__(self):
        # OpenCV's background model cannot be copied; a copy (Wrapped.for_stream) starts afresh.
        state = self.__dict__.copy()
        state["_mog"] = None
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self.reset()

    def reset(self) -> None:
        self._mog = cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold, detectShadows=True)
        self._frames = 0
        self._size = None

    def propose_mask(self, image: np.ndarray, target=None) -> torch.Tensor:
        h, w = image.shape[:2]
        if self._size is not None and self._size != (h, w):
            raise ValueError(f"motion proposer got a {(h, w)} frame after {self._size} frames; call reset()")
        self._size = (h, w)
        small = image if self.scale == 1 else cv2.resize(image, (max(1, round(w * self.scale)), max(1, round(h * self.scale))), interpolation=cv2.INTER_AREA)
        fg = self._mog.apply(small)
        self._frames += 1
        if self._frames <= self.warmup:
            return torch.ones(h, w, dtype=torch.bool)
        fg = (fg == 255).astype(np.uint8)  # 127 marks shadows: not objects
        if self.open_size > 1:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((self.open_size, self.open_size), np.uint8))
        if self.close_size > 1:
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((self.close_size, self.close_size), np.uint8))
        if fg.shape != (h, w):
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(fg.astype(bool))
