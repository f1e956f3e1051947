"""Executor contract: run an adapter's detector only where proposals say."""
from __future__ import annotations

import abc
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from argos.adapters.base import Adapter
from argos.structures import Detections, RegionProposals

__all__ = ["Executor", "keep_inside"]


class Executor(abc.ABC):
    """Base class.

    After each :meth:`run`, ``last_stats`` holds at least:
        ``detector_ms`` (float): time in the adapter's preprocess, forward and postprocess;
        ``gflops`` (list[float]): detector GFLOPs actually executed, per image;
        ``input_hw`` (tuple[int, int]): the network input size of the last batch.
    """

    def __init__(self) -> None:
        self.last_stats: Dict[str, Any] = {}

    @abc.abstractmethod
    def run(
        self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]
    ) -> List[Detections]:
        """One :class:`Detections` per image, in original-image pixels."""

    @staticmethod
    def _check(images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]) -> None:
        if len(images) != len(proposals):
            raise ValueError(f"got {len(images)} images but {len(proposals)} proposals")
        for i, (im, p) in enumerate(zip(images, proposals)):
            if tuple(im.shape[:2]) != p.image_size:
                raise ValueError(f"image {i} is {tuple(im.shape[:2])} but its proposal mask is {p.image_size}")

    @staticmethod
    def _timed_predict(adapter: Adapter, images: Sequence[np.ndarray]) -> Tuple[List[Detections], float, Tuple[int, int]]:
        """Adapter pipeline on a batch -> (detections, ms, network input (h, w))."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            batch, metas = adapter.preprocess(images)
            dets = adapter.postprocess(adapter.forward(batch), metas)
        return dets, (time.perf_counter() - t0) * 1e3, (int(batch.shape[-2]), int(batch.shape[-1]))


def keep_inside(dets: Detections, mask: torch.Tensor) -> Detections:
    """Keep detections whose box centre falls on an active pixel of ``mask`` (Tensor[H, W] bool)."""
    if len(dets) == 0 or bool(mask.all()):
        return dets
    h, w = mask.shape
    cx = ((dets.boxes[:, 0] + dets.boxes[:, 2]) / 2).floor().long().clamp(0, w - 1)
    cy = ((dets.boxes[:, 1] + dets.boxes[:, 3]) / 2).floor().long().clamp(0, h - 1)
    return dets[mask[cy, cx]]
