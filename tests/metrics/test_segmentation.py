"""Segmentation metrics against a hand-computed example and a per-class numpy reference."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from argos import SegmentationMap
from argos.metrics.segmentation import (
    ConfusionMatrix,
    confusion_matrix,
    evaluate_segmentation,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

GT = torch.tensor([[0, 0, 1], [1, 2, 255]])
PRED = torch.tensor([[0, 1, 1], [1, 255, 2]])


def test_hand_computed_example():
    # Evaluated pixels (gt != 255): (g0,p0) (g0,p1) (g1,p1) (g1,p1) (g2,no class).
    cm = ConfusionMatrix(4, ignore_index=255).update(PRED, GT)
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert cm.missed.tolist() == [0, 0, 1, 0]
    iou = cm.iou()
    # class 0: 1 / (2 + 1 - 1); class 1: 2 / (2 + 3 - 2); class 2: 0 / 1 (missed); class 3 absent.
    assert iou[:3].tolist() == pytest.approx([1 / 2, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    r = cm.compute()
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 5)
    assert r["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert r["classes_present"] == 3 and r["pixels"] == 5
    assert r["iou_per_class"][3] is None
    json.dumps(r)  # JSON-ready


def test_region_restricts_the_pixels():
    region = torch.ones(2, 3, dtype=torch.bool)
    region[0, 1] = False  # drop the (g0, p1) pixel
    r = evaluate_segmentation([PRED], [GT], 3, 255, regions=[region])
    assert r["pixels"] == 4
    assert r["iou_per_class"] == pytest.approx([1.0, 1.0, 0.0])
    assert r["pixel_accuracy"] == pytest.approx(3 / 4)


def test_functions_agree_with_the_class():
    m = confusion_matrix(PRED, GT, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # Without the missed counts, class 2 is absent from both (NaN) and accuracy is 3 / 4.
    assert math.isnan(iou_per_class(m)[2])
    assert mean_iou(m) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert pixel_accuracy(m) == pytest.approx(3 / 4)
    assert math.isnan(pixel_accuracy(torch.zeros(3, 3, dtype=torch.int64)))


def numpy_reference(preds, gts, num_classes, ignore_index, regions=None):
    """Per class: intersection and union of the boolean maps ``gt == c`` and ``pred == c`` over
    evaluated pixels, summed over images."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    correct = total = 0
    for k, (p, g) in enumerate(zip(preds, gts)):
        valid = (g != ignore_index) & (g >= 0) & (g < num_classes)
        if regions is not None:
            valid &= regions[k]
        for c in range(num_classes):
            inter[c] += np.sum((g == c) & (p == c) & valid)
            union[c] += np.sum(((g == c) | (p == c)) & valid)
        correct += np.sum((g == p) & valid)
        total += np.sum(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return iou, np.nanmean(iou), correct / total


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_regions", [False, True])
def test_matches_numpy_reference(seed, with_regions):
    rng = np.random.default_rng(seed)
    C, ignore = 6, 255
    gts, preds, regions = [], [], []
    for shape in [(17, 23), (8, 40), (31, 5)]:
        g = rng.integers(0, C, shape)
        g[rng.random(shape) < 0.15] = ignore
        g[g == 4] = 3  # class 4 never in the ground truth, only (rarely) predicted
        p = np.where(rng.random(shape) < 0.6, g, rng.integers(0, C, shape))
        p[rng.random(shape) < 0.1] = ignore  # "no class" predictions
        p[p == 5] = 0  # class 5 never predicted: still present through the ground truth
        gts.append(g)
        preds.append(p)
        regions.append(rng.random(shape) < 0.7)
    regs = regions if with_regions else None
    ref_iou, ref_miou, ref_acc = numpy_reference(preds, gts, C, ignore, regs)
    # Mixed input types: SegmentationMap predictions, numpy ground truth.
    maps = [SegmentationMap(torch.from_numpy(p), ignore_index=ignore) for p in preds]
    r = evaluate_segmentation(maps, gts, C, ignore, regions=regs, names=[f"c{i}" for i in range(C)])
    got = np.array([np.nan if v is None else v for v in r["iou_per_class"]])
    np.testing.assert_allclose(got, ref_iou, rtol=1e-12, equal_nan=True)
    assert r["miou"] == pytest.approx(ref_miou, rel=1e-12)
    assert r["pixel_accuracy"] == pytest.approx(ref_acc, rel=1e-12)
    assert r["classes_present"] == int(np.sum(~np.isnan(ref_iou)))
    assert r["images"] == 3 and set(r["iou_by_name"]) == {f"c{i}" for i in range(C)}


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        ConfusionMatrix(3).update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer label map"):
        ConfusionMatrix(3).update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="region"):
        ConfusionMatrix(3).update(PRED, GT, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="2 ground truths"):
        evaluate_segmentation([PRED], [GT, GT], 3)
    r = evaluate_segmentation([], [], 3)
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_accuracy"]) and r["pixels"] == 0
