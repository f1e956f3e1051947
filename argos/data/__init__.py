"""Datasets: images with ground-truth boxes and binary foreground masks."""
from argos.data.coco import CocoDataset, CocoSample

__all__ = ["CocoDataset", "CocoSample"]
