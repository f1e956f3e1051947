"""The adapter contract: the thin layer that knows one detection framework."""
from __future__ import annotations

import abc
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from argos.fusion import fold_batchnorm_params
from argos.structures import Detections

__all__ = ["Adapter", "check_batch", "check_thresholds", "predict_by_shape", "fold_batchnorm_params"]


class Adapter(abc.ABC):
    """Wraps one detector so argos can run it on full frames, masked frames or crops.

    Images handed to an adapter are already validated: ``np.ndarray[H, W, 3]`` uint8 RGB.

    Attributes:
        names (dict[int, str]): class id -> class name of the wrapped model.
        stride (int): the model's largest stride; input sizes are multiples of it.
        pad_value (int or tuple[int, int, int]): uint8 grey level (or RGB colour) the model was
            trained to see as padding; the ``masked`` executor paints inactive pixels with it.
        img_size (int): long side of the network input, in pixels.
        device (torch.device): where the model runs.
        task (str): ``"detection"`` (postprocess returns :class:`Detections`) or
            ``"segmentation"`` (it returns :class:`~argos.structures.SegmentationMap`).
        returns_masks (bool): detections carry instance masks (``Detections.masks``), so a frame
            the model skips gets an empty ``[0, H, W]`` mask tensor too.
    """

    names: Dict[int, str]
    stride: int = 32
    pad_value: Union[int, Tuple[int, int, int]] = 114
    task: str = "detection"
    returns_masks: bool = False
    img_size: int = 640
    device: torch.device = torch.device("cpu")

    @property
    @abc.abstractmethod
    def module(self) -> nn.Module:
        """The ``nn.Module`` that runs in :meth:`forward` (what ``gather_scatter`` rewrites)."""

    @abc.abstractmethod
    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[Any]]:
        """Images -> (batch Tensor[B, 3, h, w] float, per-image metas for mapping back)."""

    @abc.abstractmethod
    def forward(self, batch: torch.Tensor) -> Any:
        """Run the network on a preprocessed batch; returns the raw output."""

    @abc.abstractmethod
    def postprocess(self, raw: Any, metas: List[Any]) -> List[Detections]:
        """Raw output -> one :class:`Detections` per image, in original-image pixels."""

    def flops(self, input_hw: Tuple[int, int]) -> float:
        """GFLOPs (2 x multiply-accumulates) of one forward at network input ``(h, w)``.

        Default: the conv/linear MACs of :attr:`module` in eval mode on zeros of ``(1, 3, h, w)``
        (:func:`argos.metrics.flops.count_gflops`), counted once per shape. Adapters whose cost
        is not one forward of ``module`` (two-stage heads, dynamic gates) override it and
        cache through :meth:`_cached_flops`.
        """
        from argos.metrics.flops import count_gflops

        return self._cached_flops(input_hw, lambda hw: count_gflops(self.module, (1, 3, *hw)))

    def _cached_flops(self, input_hw: Tuple[int, int], count: Callable[[Tuple[int, int]], float]) -> float:
        """``count((h, w))`` the first time a shape is asked for, the remembered value after."""
        key = (int(input_hw[0]), int(input_hw[1]))
        cache = self.__dict__.setdefault("_flops_cache", {})
        if key not in cache:
            cache[key] = float(count(key))
        return cache[key]

    def class_ids(self, classes: Optional[Sequence[str]]) -> Optional[torch.Tensor]:
        """Class names -> Tensor[K] int64 of this model's ids; None for None/empty. Unknown names raise."""
        if not classes:
            return None
        by_name = {v: k for k, v in self.names.items()}
        unknown = [c for c in classes if c not in by_name]
        if unknown:
            raise ValueError(f"unknown class(es) {unknown} for this detector; valid: {', '.join(sorted(by_name))}")
        return torch.tensor([by_name[c] for c in classes], dtype=torch.int64)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Full pipeline on a list of images."""
        batch, metas = self.preprocess(images)
        return self.postprocess(self.forward(batch), metas)

    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]:
        return self.predict(images)


def check_batch(images: Sequence[np.ndarray]) -> None:
    """Refuse what an adapter's ``preprocess`` cannot take: a bare image instead of a list, an
    empty list, or anything but ``ndarray[H, W, 3]`` uint8 (RGB)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise TypeError("preprocess takes a list of images; wrap a single image as [image]")
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    for k, im in enumerate(images):
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise ValueError(f"image {k}: expected ndarray[H, W, 3] uint8 RGB, got {desc}")


def check_thresholds(conf: Optional[float] = None, iou: Optional[float] = None, max_det: Optional[int] = None) -> None:
    """Refuse a score threshold outside [0, 1], an NMS IoU outside (0, 1] or ``max_det < 1``
    (``None`` skips a check)."""
    if conf is not None and not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf must be in [0, 1], got {conf}")
    if iou is not None and not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    if max_det is not None and max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")


def predict_by_shape(adapter: "Adapter", images: Sequence[np.ndarray]) -> Tuple[List[Any], List[Tuple[int, int]]]:
    """``adapter``'s pipeline with one call per image size -> (outputs, network input (h, w) per image).

    ``adapter.predict`` on images of several sizes pads them to one letterbox, which changes the
    smaller ones' detections; here each image gets what it gets alone (frames of several streams
    of different sizes meet in one batch)."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    out: List[Any] = [None] * len(images)
    hws: List[Tuple[int, int]] = [(0, 0)] * len(images)
    with torch.inference_mode():
        for idx in groups.values():
            batch, metas = adapter.preprocess([images[i] for i in idx])
            for i, d in zip(idx, adapter.postprocess(adapter.forward(batch), metas)):
                out[i], hws[i] = d, (int(batch.shape[-2]), int(batch.shape[-1]))
    return out, hws
