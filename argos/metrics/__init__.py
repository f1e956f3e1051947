"""Metrics: COCO mAP, precision/recall, agreement with the unwrapped detector, region coverage.

GFLOP counting lives in :mod:`argos.metrics.flops`.
"""
from argos.metrics.coco_eval import detections_to_coco, evaluate_coco, map_against, reference_targets
from argos.metrics.detection import box_iou, held_ceiling, precision_recall, recall_vs_reference
from argos.metrics.regions import RegionStats, box_coverage, regions_detected

__all__ = [
    "detections_to_coco",
    "evaluate_coco",
    "map_against",
    "reference_targets",
    "box_iou",
    "held_ceiling",
    "precision_recall",
    "recall_vs_reference",
    "RegionStats",
    "box_coverage",
    "regions_detected",
]
