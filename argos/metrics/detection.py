"""Precision / recall at YOLOv5's operating point, and agreement between two detectors."""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from argos.structures import Detections

__all__ = ["box_iou", "held_ceiling", "precision_recall", "recall_vs_reference"]


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def box_iou(a: np.ndarray, b: np.ndarray, crowd: bool = False) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M) float64.

    With ``crowd=True`` the union is replaced by the area of ``a`` (COCO's rule for crowd
    ground truth ``b``: a detection inside a crowd region overlaps it fully).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = np.broadcast_to(area_a[:, None], inter.shape) if crowd else area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _match_image(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
    gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray, iou: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy COCO-style matching of one image -> (tp bool[N], ignored bool[N])."""
    n = len(boxes)
    tp = np.zeros(n, dtype=bool)
    ignored = np.zeros(n, dtype=bool)
    if n == 0:
        return tp, ignored
    regular = ~gt_crowd
    iou_reg = box_iou(boxes, gt_boxes[regular])
    iou_reg[labels[:, None] != gt_labels[regular][None, :]] = -1.0
    iou_crowd = box_iou(boxes, gt_boxes[gt_crowd], crowd=True)
    iou_crowd[labels[:, None] != gt_labels[gt_crowd][None, :]] = -1.0
    taken = np.zeros(iou_reg.shape[1], dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        cand = np.where(taken, -1.0, iou_reg[d])
        if cand.size and cand.max() >= iou:
            j = int(cand.argmax())
            taken[j] = True
            tp[d] = True
        elif iou_crowd.shape[1] and iou_crowd[d].max() >= iou:
            ignored[d] = True  # a crowd region may absorb any number of detections
    return tp, ignored


def precision_recall(
    predictions: Sequence[Detections],
    ground_truths: Sequence[Mapping[str, torch.Tensor]],
    iou: float = 0.5,
) -> Dict[str, float]:
    """Class-mean precision and recall at the confidence that maximizes class-mean F1.

    This is the operating point YOLOv5's ``val.py`` reports as P and R:

    1. In each image, predictions (highest score first) take the unmatched non-crowd ground
       truth of the same class with the highest IoU >= ``iou``. Predictions left unmatched
       that overlap a crowd region of their class (intersection / prediction area >= ``iou``)
       are ignored rather than counted as false positives.
    2. For each class with ground truth, precision and recall are taken at every confidence
       threshold ``t`` (predictions with score >= ``t``); a class with no prediction above
       ``t`` has precision 1 and recall 0, one with no predictions at all has both 0.
    3. The single ``t`` that maximizes the mean F1 over those classes is chosen (the lowest
       such ``t`` on ties; exact thresholds, without YOLOv5's 1000-point grid and smoothing).

    Predictions of classes without ground truth are not counted, as in YOLOv5.

    Args:
        predictions: per image, with ``labels`` in the same ids as the ground truth.
        ground_truths: per image, ``{"boxes": Tensor[M, 4] xyxy pixels, "labels": Tensor[M],
            "iscrowd": Tensor[M] bool (optional)}``.
        iou: IoU a prediction needs to match a ground-truth box.

    Returns:
        ``{"precision", "recall", "f1", "conf"}``; all 0.0 when there is no ground truth or no
        prediction of a ground-truth class.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"got {len(predictions)} prediction lists but {len(ground_truths)} ground truths")
    confs, tps, classes, gt_classes = [], [], [], []
    for dets, gt in zip(predictions, ground_truths):
        gt_boxes = _np(gt["boxes"]).astype(np.float64).reshape(-1, 4)
        gt_labels = _np(gt["labels"]).astype(np.int64).reshape(-1)
        crowd = gt.get("iscrowd")
        gt_crowd = np.zeros(len(gt_labels), dtype=bool) if crowd is None else _np(crowd).astype(bool).reshape(-1)
        if not len(gt_boxes) == len(gt_labels) == len(gt_crowd):
            raise ValueError(
                f"ground truth boxes, labels and iscrowd differ in length: "
                f"{len(gt_boxes)}, {len(gt_labels)}, {len(gt_crowd)}"
            )
        d = dets.numpy()
        tp, ignored = _match_image(d["boxes"], d["scores"], d["labels"], gt_boxes, gt_labels, gt_crowd, iou)
        keep = ~ignored
        confs.append(d["scores"][keep].astype(np.float64))
        tps.append(tp[keep])
        classes.append(d["labels"][keep])
        gt_classes.append(gt_labels[~gt_crowd])

    zeros = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "conf": 0.0}
    if not predictions:
        return zeros
    conf, tp, cls = np.concatenate(confs), np.concatenate(tps), np.concatenate(classes)
    unique_classes, n_gt = np.unique(np.concatenate(gt_classes), return_counts=True)
    relevant = np.isin(cls, unique_classes)
    if len(unique_classes) == 0 or not relevant.any():
        return zeros
    thresholds = np.unique(conf[relevant])  # ascending: argmax below picks the lowest on ties

    p = np.zeros((len(unique_classes), len(thresholds)))
    r = np.zeros_like(p)
    for ci, (c, n_l) in enumerate(zip(unique_classes, n_gt)):
        sel = cls == c
        if not sel.any():
            continue
        order = np.argsort(-conf[sel], kind="stable")
        conf_c, cum_tp = conf[sel][order], np.cumsum(tp[sel][order])
        k = np.searchsorted(-conf_c, -thresholds, side="right")  # predictions with score >= t
        tpc = np.where(k > 0, cum_tp[np.maximum(k - 1, 0)], 0)
        r[ci] = tpc / n_l
        p[ci] = np.where(k > 0, tpc / np.maximum(k, 1), 1.0)
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(p), where=denom > 0)
    best = int(f1.mean(0).argmax())
    return {
        "precision": float(p[:, best].mean()),
        "recall": float(r[:, best].mean()),
        "f1": float(f1[:, best].mean()),
        "conf": float(thresholds[best]),
    }


def recall_vs_reference(
    candidates: Sequence[Detections],
    references: Sequence[Detections],
    iou: float = 0.5,
    min_score: float = 0.25,
) -> float:
    """Share of reference detections that the candidate detector reproduces.

    Both sides keep only detections with score >= ``min_score``. In each image, references
    (highest score first) take the unmatched candidate of the same label with the highest
    IoU >= ``iou``, one-to-one. Used as the agreement of the wrapped detector (candidates)
    with the unwrapped one (references).

    Returns:
        matched references / references, in [0, 1]; 1.0 when there are no references.
    """
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidate lists but {len(references)} reference lists")
    matched = total = 0
    for cand, ref in zip(candidates, references):
        c, f = cand.numpy(), ref.numpy()
        ck = c["scores"] >= min_score
        fk = f["scores"] >= min_score
        ref_boxes, ref_scores, ref_labels = f["boxes"][fk], f["scores"][fk], f["labels"][fk]
        total += len(ref_boxes)
        if len(ref_boxes) == 0 or not ck.any():
            continue
        ious = box_iou(ref_boxes, c["boxes"][ck])
        ious[ref_labels[:, None] != c["labels"][ck][None, :]] = -1.0
        taken = np.zeros(ious.shape[1], dtype=bool)
        for i in np.argsort(-ref_scores, kind="stable"):
            row = np.where(taken, -1.0, ious[i])
            j = int(row.argmax())
            if row[j] >= iou:
                taken[j] = True
                matched += 1
    return 1.0 if total == 0 else matched / total


def _max_matching(allowed: np.ndarray) -> int:
    """Size of a maximum one-to-one matching of rows to columns where ``allowed`` (Kuhn's augmenting paths)."""
    owner = [-1] * allowed.shape[1]

    def augment(r: int, seen: List[bool]) -> bool:
        for c in np.nonzero(allowed[r])[0]:
            if not seen[c]:
                seen[c] = True
                if owner[c] < 0 or augment(owner[c], seen):
                    owner[c] = r
                    return True
        return False

    return sum(augment(r, [False] * allowed.shape[1]) for r in range(allowed.shape[0]))


def held_ceiling(references: Sequence[Detections], interval: int, min_score: float = 0.25) -> Dict[str, float]:
    """Best agreement of any method that runs the detector on every ``interval``-th frame only.

    Such a method (frame skipping, key frames + motion, a tracker) can only output, between key
    frames, the key frame's detections moved. An oracle moves each of them exactly onto a
    reference box of the frame it is held into. References (frame ``i``'s detections, key frames
    ``0, interval, 2 * interval, ...``) and key-frame detections count at score >= ``min_score``.

    Returns:
        ``overlap``: share of references found when a key-frame detection may be placed on a
        reference of the same label that its box overlaps (one to one, a maximum matching):
        perfect motion for objects that moved less than their size;
        ``count``: paired by label alone, wherever the boxes are; no such method can do better;
        ``references``: how many there are.
    """
    if int(interval) != interval or interval < 1:
        raise ValueError(f"interval must be a whole number >= 1, got {interval}")
    kept = []
    for d in references:
        n = d.numpy()
        keep = n["scores"] >= min_score
        kept.append((n["boxes"][keep], n["labels"][keep]))
    total = sum(len(labels) for _, labels in kept)
    overlap = count = 0
    for i, (boxes, labels) in enumerate(kept):
        if i % interval == 0:
            overlap += len(labels)
            count += len(labels)
            continue
        kb, kl = kept[(i // interval) * interval]
        for label in np.intersect1d(kl, labels):
            a, b = kb[kl == label], boxes[labels == label]
            count += min(len(a), len(b))
            overlap += _max_matching(box_iou(a, b) > 0)
    n = max(1, total)
    return {"overlap": overlap / n, "count": count / n, "references": total}
