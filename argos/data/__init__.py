"""Datasets: images with ground-truth boxes and binary foreground masks, and video input."""
from argos.data.citypersons import CityPersonsDataset
from argos.data.cityscapes import CityscapesDataset
from argos.data.coco import CocoDataset, CocoSample
from argos.data.video import VideoReader, load_frame_boxes

__all__ = ["CocoDataset", "CocoSample", "CityscapesDataset", "CityPersonsDataset", "VideoReader", "load_frame_boxes"]
