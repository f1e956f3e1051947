"""COCO box and instance-mask mAP through pycocotools."""
from __future__ import annotations

import contextlib
import io
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from argos.structures import Detections

__all__ = ["detections_to_coco", "evaluate_coco", "reference_targets", "map_against"]

_KEYS = ("map50_95", "map50", "map75", "map_small", "map_medium", "map_large")


def detections_to_coco(
    dets: Detections, image_id: int, label_map: Dict[int, int], with_masks: bool = False
) -> List[dict]:
    """One image's detections -> COCO result dicts.

    Args:
        dets: boxes ``xyxy`` in original-image pixels, labels in model class ids.
        image_id: COCO image id.
        label_map: model class id -> COCO category id (see ``CocoDataset.label_map``).
        with_masks: also write each instance mask as a compressed RLE under ``"segmentation"``
            (for ``iou_type="segm"``); ``dets.masks`` must then be set.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"[, "segmentation"]}, ...]``.
    """
    if with_masks and dets.masks is None:
        raise ValueError("with_masks=True needs detections with instance masks (dets.masks is None)")
    out = dets.numpy()
    boxes, scores, labels = out["boxes"].astype(np.float64), out["scores"], out["labels"]
    unknown = sorted({int(l) for l in labels} - set(label_map))
    if unknown:
        raise ValueError(f"detection label(s) {unknown} have no entry in label_map")
    results = []
    for (x1, y1, x2, y2), s, l in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(label_map[l]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(s),
            }
        )
    if with_masks and results:
        from pycocotools import mask as mask_utils

        rles = mask_utils.encode(np.asfortranarray(out["masks"].transpose(1, 2, 0).astype(np.uint8)))
        for r, rle in zip(results, rles):
            rle["counts"] = rle["counts"].decode("ascii")  # JSON-serialisable
            r["segmentation"] = rle
    return results


def evaluate_coco(
    coco_gt: COCO,
    results: List[dict],
    image_ids: Optional[Iterable[int]] = None,
    verbose: bool = False,
    cat_ids: Optional[Iterable[int]] = None,
    iou_type: str = "bbox",
) -> Dict[str, float]:
    """mAP of ``results`` against ``coco_gt`` (pycocotools ``COCOeval``).

    Args:
        coco_gt: ground truth, e.g. ``CocoDataset.coco``.
        results: COCO result dicts (see :func:`detections_to_coco`); not modified.
        image_ids: evaluate only these images (default: all images of ``coco_gt``).
        verbose: print pycocotools' summary table.
        cat_ids: evaluate only these categories; results of other categories are ignored.
        iou_type: ``"bbox"`` (boxes) or ``"segm"`` (instance masks; results need ``"segmentation"``,
            see ``detections_to_coco(..., with_masks=True)``).

    Returns:
        ``{"map50_95", "map50", "map75", "map_small", "map_medium", "map_large"}`` in [0, 1].
        With no results every value is 0.0. As in pycocotools, a size bucket without ground
        truth scores -1.0.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    known_images = set(coco_gt.getImgIds())
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        missing = [i for i in image_ids if i not in known_images]
        if missing:
            raise ValueError(f"image_ids not in the ground truth: {missing[:10]}")
    if not results or (image_ids is not None and not image_ids):
        return {k: 0.0 for k in _KEYS}
    unknown_images = sorted({int(r["image_id"]) for r in results} - known_images)
    if unknown_images:
        raise ValueError(f"results refer to image ids not in the ground truth: {unknown_images[:10]}")
    known_cats = set(coco_gt.getCatIds())
    unknown_cats = sorted({int(r["category_id"]) for r in results} - known_cats)
    if unknown_cats:
        # COCOeval would silently skip them; that is almost always a wrong label map.
        raise ValueError(f"results refer to category ids not in the ground truth: {unknown_cats[:10]}")

    if cat_ids is not None:
        cat_ids = sorted({int(c) for c in cat_ids})
        results = [r for r in results if int(r["category_id"]) in set(cat_ids)]
        if not results:
            return {k: 0.0 for k in _KEYS}
    if iou_type == "segm":
        missing = sum("segmentation" not in r for r in results)
        if missing:
            raise ValueError(f"iou_type='segm' but {missing} result(s) have no 'segmentation' (instance mask)")
    # loadRes adds keys (area, id, segmentation) to the dicts it gets, so hand it copies.
    results = [dict(r, bbox=list(r["bbox"])) for r in results]
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {
        "map50_95": float(stats[0]),
        "map50": float(stats[1]),
        "map75": float(stats[2]),
        "map_small": float(stats[3]),
        "map_medium": float(stats[4]),
        "map_large": float(stats[5]),
    }


def reference_targets(references: List[Detections], min_score: float = 0.25) -> List[Dict[str, torch.Tensor]]:
    """A reference detector's output as ground truth: per image ``{"boxes", "labels", "iscrowd"}``,
    keeping detections with ``score >= min_score``. Used on video, where the unwrapped detector is
    the reference argos must reproduce."""
    out = []
    for d in references:
        d = d[d.scores >= min_score]
        out.append({"boxes": d.boxes, "labels": d.labels, "iscrowd": torch.zeros(len(d), dtype=torch.bool)})
    return out


def map_against(
    targets: List[Dict[str, torch.Tensor]], image_sizes: List[Tuple[int, int]], candidates: List[Detections]
) -> Dict[str, float]:
    """COCO box mAP of ``candidates`` against per-image ``targets`` (as from :func:`reference_targets`).

    Labels are the model's class ids on both sides; candidates of classes absent from the targets
    are left out (COCOeval would ignore them anyway).
    """
    if not (len(targets) == len(image_sizes) == len(candidates)):
        raise ValueError(f"got {len(targets)} targets, {len(image_sizes)} sizes and {len(candidates)} candidates")
    labels = sorted({int(l) for t in targets for l in t["labels"].tolist()})
    images, anns = [], []
    for i, (t, (h, w)) in enumerate(zip(targets, image_sizes)):
        images.append({"id": i + 1, "height": h, "width": w})
        for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": l + 1, "name": str(l)} for l in labels]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    known = torch.tensor(labels, dtype=torch.int64)
    results: List[dict] = []
    for i, d in enumerate(candidates):
        d = d[torch.isin(d.labels, known)]
        results += detections_to_coco(d, i + 1, {l: l + 1 for l in labels})
    return evaluate_coco(coco, results)
