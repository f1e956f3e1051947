"""Datasets: images with ground-truth boxes and binary foreground masks, and video input."""
from argos.data.coco import CocoDataset, CocoSample
from argos.data.video import VideoReader, load_frame_boxes

__all__ = ["CocoDataset", "CocoSample", "VideoReader", "load_frame_boxes"]
