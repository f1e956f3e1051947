"""Regions from ground truth: the upper bound of any proposer."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from argos.proposers.base import Proposer
from argos.geometry import Dilation, boxes_to_mask

__all__ = ["OracleProposer"]


class OracleProposer(Proposer):
    """Active region = ground-truth boxes (or instance masks), optionally dilated.

    Each target is a mapping with ``"boxes"`` (Tensor[M, 4] xyxy pixels) and/or ``"mask"``
    (Tensor[H, W] or [M, H, W] bool), or directly a boxes tensor/array.

    Args:
        source: ``"boxes"`` or ``"masks"``: which ground truth marks the region.
        dilation, min_area, mask_mode: see :class:`Proposer`.
    """

    needs_targets = True

    def __init__(self, source: str = "boxes", dilation: Dilation = 0, min_area: int = 0, mask_mode: str = "boxes"):
        super().__init__(dilation=dilation, min_area=min_area, mask_mode=mask_mode)
        if source not in ("boxes", "masks"):
            raise ValueError(f"source must be 'boxes' or 'masks', got {source!r}")
        self.source = source

    def propose_mask(self, image: np.ndarray, target: Any = None) -> torch.Tensor:
        size = image.shape[:2]
        if target is None:
            raise ValueError("the oracle proposer needs a target (ground truth) for every image")
        if not isinstance(target, Mapping):
            target = {"boxes": target}
        if self.source == "masks":
            if "mask" not in target:
                raise ValueError("oracle source='masks' needs targets with a 'mask' entry")
            mask = torch.as_tensor(np.asarray(target["mask"])).bool()
            if mask.ndim == 3:
                mask = mask.any(dim=0)
            if tuple(mask.shape) != tuple(size):
                raise ValueError(f"target mask has shape {tuple(mask.shape)}, image is {tuple(size)}")
            return mask
        if "boxes" not in target:
            raise ValueError("oracle source='boxes' needs targets with a 'boxes' entry")
        boxes = torch.as_tensor(np.asarray(target["boxes"], dtype=np.float32)).reshape(-1, 4)
        return boxes_to_mask(boxes, size)
