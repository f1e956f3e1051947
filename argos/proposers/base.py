"""Proposer contract: images -> :class:`RegionProposals`, one per image."""
from __future__ import annotations

import abc
import time
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from argos.geometry import Dilation, boxes_to_mask, mask_to_boxes
from argos.structures import RegionProposals

__all__ = ["Proposer"]


class Proposer(abc.ABC):
    """Base class. Subclasses implement :meth:`propose_mask` for one image.

    Args:
        dilation: margin around each region: pixels (int) or ``"adaptive"`` (grows with size).
        min_area: connected components with fewer pixels are dropped.
        mask_mode: ``"boxes"`` makes the final mask the union of the dilated boxes (what a
            detector needs: rectangular context); ``"pixels"`` keeps the raw mask, dilated by
            the fixed margin.
    """

    #: whether propose() needs ``targets`` (ground truth); only the oracle does.
    needs_targets: bool = False
    #: whether the proposer learns from the wrapped model's detections (a video teacher), so
    #: the model must be a detector.
    needs_detector: bool = False
    #: whether the proposer keeps one stream's state from frame to frame (background model, online
    #: student, tracked detections): such a proposer serves one stream (see Wrapped.for_stream).
    stateful: bool = False

    def __init__(self, dilation: Dilation = 0, min_area: int = 0, mask_mode: str = "boxes") -> None:
        if mask_mode not in ("boxes", "pixels"):
            raise ValueError(f"mask_mode must be 'boxes' or 'pixels', got {mask_mode!r}")
        if mask_mode == "pixels" and isinstance(dilation, str):
            raise ValueError("mask_mode='pixels' needs a fixed dilation in pixels, not 'adaptive'")
        self.dilation = dilation
        self.min_area = int(min_area)
        self.mask_mode = mask_mode

    @abc.abstractmethod
    def propose_mask(self, image: np.ndarray, target: Optional[Any] = None) -> torch.Tensor:
        """One HWC uint8 RGB image -> raw foreground mask Tensor[H, W] bool."""

    def gflops(self, image_size) -> float:
        """GFLOPs the proposer spends on one image of ``(h, w)``."""
        return 0.0

    def reset(self) -> None:
        """Forget state carried between frames (video proposers)."""

    def bind(self, adapter) -> None:
        """Called once by :class:`argos.Wrapped` with the wrapped detector (video proposers use
        it as a teacher); the default ignores it."""

    #: the proposer can leave its key frames' full-frame detection to the caller (see ``defer_whole``)
    can_defer_whole: bool = False
    #: set by :func:`argos.wrap.run_members` while several streams step together: key frames come
    #: back with ``pending_whole`` and the caller runs them, batched across streams
    defer_whole: bool = False

    def detect_whole(self, image: np.ndarray):
        """Run the bound detector on the whole image (a video proposer's key frame).

        Returns ``(detections, ms, gflops)``; needs :meth:`bind` (``argos.wrap`` calls it).
        """
        adapter = getattr(self, "adapter", None)
        if adapter is None:
            raise RuntimeError(f"the {type(self).__name__} needs the detector (its teacher on key frames): "
                               "use argos.wrap(...) or call bind(adapter)")
        t0 = time.perf_counter()
        batch, metas = adapter.preprocess([image])
        with torch.inference_mode():
            (dets,) = adapter.postprocess(adapter.forward(batch), metas)
        ms = (time.perf_counter() - t0) * 1e3
        return dets, ms, adapter.flops((int(batch.shape[-2]), int(batch.shape[-1])))

    def observe(self, detections) -> None:
        """Called after each call with the final detections (one per image), so video
        proposers can track what was found; the default ignores them."""

    def finalize(self, mask: torch.Tensor, time_ms: float = 0.0, scores=None) -> RegionProposals:
        """Raw mask -> proposals: components, speck filter, dilation, final mask."""
        size = tuple(mask.shape)
        boxes = mask_to_boxes(mask, dilation=self.dilation, min_area=self.min_area)
        if self.mask_mode == "boxes":
            final = boxes_to_mask(boxes, size)
        else:
            final = boxes_to_mask(torch.zeros(0, 4), size) if len(boxes) == 0 else _dilate_pixels(mask, self.dilation)
            if self.min_area > 0:
                final &= boxes_to_mask(boxes, size)
        return RegionProposals(final, boxes, time_ms, scores, self.gflops(size))

    def propose(self, images: Sequence[np.ndarray], targets: Optional[Sequence[Any]] = None) -> List[RegionProposals]:
        """Propose regions for each image; ``targets`` (one per image) only for ground-truth proposers."""
        if targets is None:
            if self.needs_targets:
                raise ValueError(f"{type(self).__name__} needs targets (ground truth) for every image")
            targets = [None] * len(images)
        if len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        out = []
        for image, target in zip(images, targets):
            t0 = time.perf_counter()
            mask = self.propose_mask(image, target)
            props = self.finalize(mask)
            props.time_ms = (time.perf_counter() - t0) * 1e3
            out.append(props)
        return out

    def __call__(self, images, targets=None) -> List[RegionProposals]:
        return self.propose(images, targets)


def _dilate_pixels(mask: torch.Tensor, dilation: Dilation) -> torch.Tensor:
    import cv2

    d = int(np.ceil(float(dilation)))
    m = mask.numpy().astype(np.uint8)
    if d > 0:
        m = cv2.dilate(m, np.ones((2 * d + 1, 2 * d + 1), np.uint8))
    return torch.from_numpy(m.astype(bool))
