"""The whole frame: with it, any executor must reproduce the unwrapped detector."""
from __future__ import annotations

import time

import torch

from argos.proposers.base import Proposer
from argos.structures import RegionProposals

__all__ = ["FullProposer"]


class FullProposer(Proposer):
    """Proposes the entire image as one region."""

    def __init__(self) -> None:
        super().__init__(dilation=0)

    def propose_mask(self, image, target=None) -> torch.Tensor:
        return torch.ones(image.shape[:2], dtype=torch.bool)

    def propose(self, images, targets=None):
        out = []
        for image in images:
            t0 = time.perf_counter()
            props = RegionProposals.full(image.shape[:2])
            props.time_ms = (time.perf_counter() - t0) * 1e3
            out.append(props)
        return out
