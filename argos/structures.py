"""Core data types shared by proposers, executors and adapters.

All coordinates are in original-image pixels, boxes are ``xyxy``. Tensors live on CPU unless
moved with ``to()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["Detections", "RegionProposals", "SegmentationMap"]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]


def _as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _check_size(image_size: Sequence[int]) -> Tuple[int, int]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {tuple(image_size)!r}")
    h, w = int(image_size[0]), int(image_size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {(h, w)}")
    return h, w


@dataclass
class Detections:
    """Detections of one image.

    Args:
        boxes (Tensor[N, 4] float32): ``x1, y1, x2, y2`` in original-image pixels.
        scores (Tensor[N] float32): confidence in [0, 1].
        labels (Tensor[N] int64): class ids of the wrapped model.
        image_size (tuple[int, int]): ``(height, width)`` of the original image.
        masks (Tensor[N, H, W] bool, optional): instance masks at image size.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    image_size: Tuple[int, int]
    masks: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        self.boxes = _as_tensor(self.boxes, torch.float32)
        if self.boxes.numel() == 0:
            self.boxes = self.boxes.reshape(0, 4)
        self.scores = _as_tensor(self.scores, torch.float32).reshape(-1)
        self.labels = _as_tensor(self.labels, torch.int64).reshape(-1)
        self.image_size = _check_size(self.image_size)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {tuple(self.boxes.shape)}")
        n = self.boxes.shape[0]
        if self.scores.shape[0] != n or self.labels.shape[0] != n:
            raise ValueError(
                f"boxes, scores and labels must have the same length, got "
                f"{n}, {self.scores.shape[0]}, {self.labels.shape[0]}"
            )
        if self.masks is not None:
            self.masks = _as_tensor(self.masks, torch.bool)
            if self.masks.shape != (n, *self.image_size):
                raise ValueError(
                    f"masks must have shape (N, H, W) = {(n, *self.image_size)}, "
                    f"got {tuple(self.masks.shape)}"
                )

    @classmethod
    def empty(cls, image_size: Sequence[int], with_masks: bool = False) -> "Detections":
        h, w = _check_size(image_size)
        masks = torch.zeros(0, h, w, dtype=torch.bool) if with_masks else None
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), (h, w), masks)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index) -> "Detections":
        """Select detections with an int, slice, index tensor or boolean mask."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.labels[index],
            self.image_size,
            None if self.masks is None else self.masks[index],
        )

    def to(self, device: Union[str, torch.device]) -> "Detections":
        return Detections(
            self.boxes.to(device),
            self.scores.to(device),
            self.labels.to(device),
            self.image_size,
            None if self.masks is None else self.masks.to(device),
        )

    def numpy(self) -> dict:
        """Plain numpy arrays: ``{"boxes", "scores", "labels", ["masks"]}``."""
        out = {
            "boxes": self.boxes.detach().cpu().numpy(),
            "scores": self.scores.detach().cpu().numpy(),
            "labels": self.labels.detach().cpu().numpy(),
        }
        if self.masks is not None:
            out["masks"] = self.masks.detach().cpu().numpy()
        return out

    @staticmethod
    def cat(items: Sequence["Detections"]) -> "Detections":
        """Concatenate detections of the same image."""
        if len(items) == 0:
            raise ValueError("Detections.cat needs at least one item")
        sizes = {d.image_size for d in items}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate detections of different image sizes: {sorted(sizes)}")
        has_masks = {d.masks is not None for d in items}
        if len(has_masks) != 1:
            raise ValueError("cannot concatenate detections with and without masks")
        return Detections(
            torch.cat([d.boxes for d in items]),
            torch.cat([d.scores for d in items]),
            torch.cat([d.labels for d in items]),
            items[0].image_size,
            torch.cat([d.masks for d in items]) if items[0].masks is not None else None,
        )

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, image_size={self.image_size}, masks={self.masks is not None})"


@dataclass
class RegionProposals:
    """Regions of one image where objects may be.

    Args:
        mask (Tensor[H, W] bool): active pixels at original-image resolution.
        boxes (Tensor[K, 4] float32): ``xyxy`` boxes in pixels that cover the active regions
            (after dilation). Derived from ``mask`` unless given.
        time_ms (float): wall-clock time the proposer spent on this image.
        scores (Tensor[H, W] float32, optional): foreground probability before thresholding.
        gflops (float): the proposer's own GFLOPs on this image.
        detections (Detections, optional): final detections the proposer already has for this
            image (a video proposer's teacher key frame); the executor then skips the image.
        detections_ms (float): the part of ``time_ms`` spent producing ``detections``.
        detections_gflops (float): detector GFLOPs spent producing ``detections`` (not in ``gflops``).
        held (Detections, optional): detections a video proposer carries from earlier frames
            outside the proposed regions; they are added to what the executor finds there.
        pending_whole (bool): a key frame whose full-frame detection the proposer left to its
            caller (:attr:`argos.proposers.base.Proposer.defer_whole`), so that the key frames of
            several streams run in one batch; the caller fills ``detections`` before the executor.
    """

    mask: torch.Tensor
    boxes: Optional[torch.Tensor] = None
    time_ms: float = 0.0
    scores: Optional[torch.Tensor] = None
    gflops: float = 0.0
    detections: Optional["Detections"] = None
    detections_ms: float = 0.0
    detections_gflops: float = 0.0
    held: Optional["Detections"] = None
    pending_whole: bool = False

    def __post_init__(self) -> None:
        self.mask = _as_tensor(self.mask, torch.bool)
        if self.mask.ndim != 2:
            raise ValueError(f"mask must have shape (H, W), got {tuple(self.mask.shape)}")
        if self.mask.shape[0] == 0 or self.mask.shape[1] == 0:
            raise ValueError(f"mask must be non-empty, got shape {tuple(self.mask.shape)}")
        if self.boxes is None:
            from argos.geometry import mask_to_boxes

            self.boxes = mask_to_boxes(self.mask)
        self.boxes = _as_tensor(self.boxes, torch.float32)
        if self.boxes.numel() == 0:
            self.boxes = self.boxes.reshape(0, 4)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (K, 4), got {tuple(self.boxes.shape)}")
        if self.scores is not None:
            self.scores = _as_tensor(self.scores, torch.float32)
            if self.scores.shape != self.mask.shape:
                raise ValueError(
                    f"scores must match mask shape {tuple(self.mask.shape)}, got {tuple(self.scores.shape)}"
                )
        if self.detections is not None and self.detections.image_size != self.image_size:
            raise ValueError(
                f"detections are for a {self.detections.image_size} image, the mask is {self.image_size}"
            )
        if self.held is not None and self.held.image_size != self.image_size:
            raise ValueError(f"held detections are for a {self.held.image_size} image, the mask is {self.image_size}")

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def area_fraction(self) -> float:
        """Share of the image's pixels that are active, in [0, 1]."""
        return float(self.mask.float().mean())

    @classmethod
    def full(cls, image_size: Sequence[int], time_ms: float = 0.0) -> "RegionProposals":
        h, w = _check_size(image_size)
        return cls(torch.ones(h, w, dtype=torch.bool), torch.tensor([[0.0, 0.0, w, h]]), time_ms)

    def __repr__(self) -> str:
        return (
            f"RegionProposals(image_size={self.image_size}, regions={len(self.boxes)}, "
            f"area={self.area_fraction:.3f}, time_ms={self.time_ms:.2f})"
        )


@dataclass
class SegmentationMap:
    """Semantic segmentation of one image.

    Args:
        labels (Tensor[H, W] int64): class id per pixel; ``ignore_index`` for unlabeled pixels.
        image_size (tuple[int, int]): ``(height, width)``; must equal ``labels.shape``.
        scores (Tensor[C, H, W] float32, optional): per-class probabilities.
        ignore_index (int): label of pixels that carry no class.
    """

    labels: torch.Tensor
    image_size: Tuple[int, int] = field(default=None)  # type: ignore[assignment]
    scores: Optional[torch.Tensor] = None
    ignore_index: int = 255

    def __post_init__(self) -> None:
        self.labels = _as_tensor(self.labels, torch.int64)
        if self.labels.ndim != 2:
            raise ValueError(f"labels must have shape (H, W), got {tuple(self.labels.shape)}")
        if self.image_size is None:
            self.image_size = tuple(self.labels.shape)  # type: ignore[assignment]
        self.image_size = _check_size(self.image_size)
        if tuple(self.labels.shape) != self.image_size:
            raise ValueError(f"labels shape {tuple(self.labels.shape)} != image_size {self.image_size}")
        if self.scores is not None:
            self.scores = _as_tensor(self.scores, torch.float32)
            if self.scores.ndim != 3 or tuple(self.scores.shape[1:]) != self.image_size:
                raise ValueError(
                    f"scores must have shape (C, {self.image_size[0]}, {self.image_size[1]}), "
                    f"got {tuple(self.scores.shape)}"
                )

    def to(self, device: Union[str, torch.device]) -> "SegmentationMap":
        return SegmentationMap(
            self.labels.to(device),
            self.image_size,
            None if self.scores is None else self.scores.to(device),
            self.ignore_index,
        )

    def numpy(self) -> dict:
        out = {"labels": self.labels.cpu().numpy()}
        if self.scores is not None:
            out["scores"] = self.scores.cpu().numpy()
        return out
