"""Proposers: images -> :class:`argos.RegionProposals`. Built by name through ``argos.registry.PROPOSERS``."""
from argos.proposers.base import Proposer
from argos.geometry import boxes_to_mask, dilate_boxes, mask_to_boxes

__all__ = ["Proposer", "mask_to_boxes", "boxes_to_mask", "dilate_boxes"]
