"""Executor contract: run an adapter's detector only where proposals say."""
from __future__ import annotations

import abc
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from argos.adapters.base import Adapter, predict_by_shape
from argos.structures import Detections, RegionProposals, SegmentationMap

__all__ = [
    "Executor", "keep_inside",
    "is_segmentation", "check_background", "background_label", "fill_outside", "empty_segmentation",
]  # fmt: skip


class Executor(abc.ABC):
    """Base class.

    After each :meth:`run`, ``last_stats`` holds at least:
        ``detector_ms`` (float): time in the adapter's preprocess, forward and postprocess;
        ``gflops`` (list[float]): detector GFLOPs actually executed, per image;
        ``input_hw`` (tuple[int, int]): the network input size of the last batch.
    """

    #: Segmentation adapters: label of the pixels off the proposed mask, where the model did not
    #: run (the ``masked`` executor ran it on painted pixels, whose output means nothing).
    #: ``None``: the adapter's ``ignore_index``, so metrics skip them; or a class id.
    background: Optional[int] = None

    def __init__(self) -> None:
        self.last_stats: Dict[str, Any] = {}

    def check_adapter(self, adapter: Adapter) -> None:
        """Raise when this executor cannot run ``adapter`` (called by ``argos.wrap``, before any
        frame: a video proposer may not call the executor until well into a stream)."""

    def _empty_output(self, adapter: Adapter, image_size: Tuple[int, int]) -> Union[Detections, SegmentationMap]:
        """What a frame the model did not run on gets: no detections, or all background."""
        if is_segmentation(adapter):
            return empty_segmentation(adapter, image_size, self.background)
        return Detections.empty(image_size, with_masks=bool(getattr(adapter, "returns_masks", False)))

    def _fill_outside(self, adapter: Adapter, seg: SegmentationMap, mask: torch.Tensor) -> SegmentationMap:
        """Pixels off ``mask`` get the background label (see :attr:`background`) and zero scores."""
        return fill_outside(seg, mask, background_label(adapter, self.background))

    @abc.abstractmethod
    def run(
        self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]
    ) -> List[Detections]:
        """One :class:`Detections` (a :class:`SegmentationMap` for segmentation adapters) per
        image, in original-image pixels."""

    @staticmethod
    def _check(images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]) -> None:
        if len(images) != len(proposals):
            raise ValueError(f"got {len(images)} images but {len(proposals)} proposals")
        for i, (im, p) in enumerate(zip(images, proposals)):
            if tuple(im.shape[:2]) != p.image_size:
                raise ValueError(f"image {i} is {tuple(im.shape[:2])} but its proposal mask is {p.image_size}")

    @staticmethod
    def _timed_predict(adapter: Adapter, images: Sequence[np.ndarray]) -> Tuple[List[Detections], float, List[Tuple[int, int]]]:
        """Adapter pipeline on a batch, one call per image size (:func:`~argos.adapters.base.predict_by_shape`:
        no frame is padded to a larger one's letterbox) -> (detections, ms, network input (h, w) per image)."""
        t0 = time.perf_counter()
        dets, hws = predict_by_shape(adapter, images)
        return dets, (time.perf_counter() - t0) * 1e3, hws


def keep_inside(dets: Detections, mask: torch.Tensor) -> Detections:
    """Keep detections whose box centre falls on an active pixel of ``mask`` (Tensor[H, W] bool)."""
    if len(dets) == 0 or bool(mask.all()):
        return dets
    h, w = mask.shape
    cx = ((dets.boxes[:, 0] + dets.boxes[:, 2]) / 2).floor().long().clamp(0, w - 1)
    cy = ((dets.boxes[:, 1] + dets.boxes[:, 3]) / 2).floor().long().clamp(0, h - 1)
    return dets[mask[cy, cx]]


def is_segmentation(adapter: Adapter) -> bool:
    """Whether ``adapter`` returns :class:`SegmentationMap` (its ``task`` is ``"segmentation"``)."""
    return getattr(adapter, "task", "detection") == "segmentation"


def check_background(background: Optional[int]) -> Optional[int]:
    """Validate an executor's ``background`` argument: None or a label >= 0."""
    if background is None:
        return None
    if isinstance(background, bool) or int(background) != background or background < 0:
        raise ValueError(
            f"background must be None or a label >= 0 (a class id or the ignore index), got {background!r}"
        )
    return int(background)


def background_label(adapter: Adapter, background: Optional[int]) -> int:
    """The label for pixels off the mask: ``background``, or the adapter's ``ignore_index`` for None."""
    ignore = int(getattr(adapter, "ignore_index", 255))
    if background is None:
        return ignore
    n = len(adapter.names)
    if int(background) != background or not (0 <= background < n or background == ignore):
        raise ValueError(
            f"background must be None, a class id in [0, {n}) or ignore_index {ignore}; got {background!r}"
        )
    return int(background)


def fill_outside(seg: SegmentationMap, mask: torch.Tensor, label: int) -> SegmentationMap:
    """A copy of ``seg`` whose pixels off ``mask`` (Tensor[H, W] bool) hold ``label`` and zero scores."""
    if tuple(mask.shape) != seg.image_size:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit the {seg.image_size} segmentation")
    if bool(mask.all()):
        return seg
    off = ~mask.to(seg.labels.device)
    labels = seg.labels.masked_fill(off, label)
    scores = None if seg.scores is None else seg.scores.masked_fill(off[None], 0.0)
    return SegmentationMap(labels, seg.image_size, scores, seg.ignore_index)


def empty_segmentation(
    adapter: Adapter, image_size: Tuple[int, int], background: Optional[int] = None
) -> SegmentationMap:
    """All pixels background, all scores (Tensor[C, H, W]) zero."""
    h, w = int(image_size[0]), int(image_size[1])
    labels = torch.full((h, w), background_label(adapter, background), dtype=torch.int64)
    scores = torch.zeros(len(adapter.names), h, w)
    return SegmentationMap(labels, (h, w), scores, int(getattr(adapter, "ignore_index", 255)))
