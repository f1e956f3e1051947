"""argos: run an unmodified detector only on the regions a tiny proposer marks.

>>> import argos
>>> fast = argos.wrap("yolov5", weights="yolov5n.pt", proposer="motion", executor="masked")
>>> dets = fast(frame)          # argos.Detections in original-image pixels
>>> fast.last_stats             # area processed, proposer/detector/overhead ms, GFLOPs
"""
from argos.registry import ADAPTERS, EXECUTORS, PROPOSERS, Registry
from argos.structures import Detections, RegionProposals, SegmentationMap
from argos.wrap import FrameStats, Wrapped, build_adapter, wrap
from argos.streams import MultiStream, streams

__version__ = "0.1.0"

__all__ = [
    "wrap", "Wrapped", "FrameStats", "build_adapter", "streams", "MultiStream",
    "Detections", "RegionProposals", "SegmentationMap",
    "Registry", "PROPOSERS", "EXECUTORS", "ADAPTERS",
    "list_proposers", "list_executors", "list_adapters",
]


def list_proposers() -> list:
    """Registered proposer names."""
    return PROPOSERS.names()


def list_executors() -> list:
    """Registered executor names."""
    return EXECUTORS.names()


def list_adapters() -> list:
    """Registered adapter names."""
    return ADAPTERS.names()
