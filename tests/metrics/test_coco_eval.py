"""detections_to_coco / evaluate_coco on hand-made ground truth and on coco128."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from argos.metrics import detections_to_coco, evaluate_coco
from argos.structures import Detections


def _gt() -> COCO:
    """Two 100x100 images, one 'a' box each (area 400 and 2500: small and medium)."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 100, "width": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [40, 40, 50, 50], "area": 2500, "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _result(image_id, xywh, score=0.9, category_id=5):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(xywh), "score": score}


def test_detections_to_coco():
    d = Detections(torch.tensor([[10.0, 20.0, 30.5, 60.0], [0, 0, 1, 1]]), [0.8, 0.1], [0, 2], (100, 100))
    out = detections_to_coco(d, 42, {0: 1, 2: 3})
    assert out == [
        {"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 20.5, 40.0], "score": pytest.approx(0.8)},
        {"image_id": 42, "category_id": 3, "bbox": [0.0, 0.0, 1.0, 1.0], "score": pytest.approx(0.1)},
    ]
    assert detections_to_coco(Detections.empty((5, 5)), 1, {}) == []
    with pytest.raises(ValueError, match=r"label\(s\) \[2\]"):
        detections_to_coco(d, 42, {0: 1})


def test_perfect_and_partial(capsys):
    gt = _gt()
    perfect = [_result(1, [10, 10, 20, 20]), _result(2, [40, 40, 50, 50])]
    out = evaluate_coco(gt, perfect)
    assert capsys.readouterr().out == ""
    assert out["map50_95"] == pytest.approx(1.0) and out["map50"] == pytest.approx(1.0)
    assert out["map_small"] == pytest.approx(1.0) and out["map_medium"] == pytest.approx(1.0)
    assert out["map_large"] == -1.0  # no large ground truth: pycocotools' "undefined"

    # IoU of [10,10,20,20] with [10,10,20,16] is 0.8: a hit at thresholds 0.50..0.80 (7 of 10)
    shifted = [_result(1, [10, 10, 20, 16]), _result(2, [40, 40, 50, 50])]
    out = evaluate_coco(gt, shifted, image_ids=[1])
    assert out["map50_95"] == pytest.approx(0.7) and out["map50"] == pytest.approx(1.0)

    # only one of two objects found (at the top score): precision 1 up to recall 0.5 -> 51/101
    out = evaluate_coco(gt, perfect[:1])
    assert out["map50"] == pytest.approx(51 / 101)
    assert evaluate_coco(gt, perfect[:1], image_ids=[1])["map50"] == pytest.approx(1.0)


def test_results_not_modified_and_verbose(capsys):
    gt = _gt()
    results = [_result(1, [10, 10, 20, 20])]
    evaluate_coco(gt, results, verbose=True)
    assert "Average Precision" in capsys.readouterr().out
    assert results == [_result(1, [10, 10, 20, 20])]


def test_empty_and_invalid():
    gt = _gt()
    zeros = evaluate_coco(gt, [])
    assert set(zeros) >= {"map50_95", "map50", "map_small", "map_medium", "map_large"}
    assert all(v == 0.0 for v in zeros.values())
    assert evaluate_coco(gt, [_result(1, [10, 10, 20, 20])], image_ids=[])["map50"] == 0.0
    with pytest.raises(ValueError, match="image ids"):
        evaluate_coco(gt, [_result(3, [10, 10, 20, 20])])
    with pytest.raises(ValueError, match="category ids"):
        evaluate_coco(gt, [_result(1, [10, 10, 20, 20], category_id=7)])
    with pytest.raises(ValueError, match="image_ids"):
        evaluate_coco(gt, [_result(1, [10, 10, 20, 20])], image_ids=[1, 99])


def test_coco128_perfect_predictions(coco128):
    """Ground-truth boxes as score-1 detections, through Detections and detections_to_coco."""
    identity = {c: c for c in coco128.categories}
    results = []
    for i in range(len(coco128)):
        t = coco128.targets(i)
        keep = ~t["iscrowd"]
        d = Detections(t["boxes"][keep], torch.ones(int(keep.sum())), t["labels"][keep], coco128.image_size(i))
        results += detections_to_coco(d, coco128.image_ids[i], identity)
    assert len(results) == 939 - 10
    out = evaluate_coco(coco128.coco, results)
    for key in ("map50_95", "map50", "map_small", "map_medium", "map_large"):
        assert out[key] == pytest.approx(1.0), key
    # dropping a third of the images lowers mAP, unless the evaluation is restricted to the rest
    kept = set(coco128.image_ids[::3])
    subset = [r for r in results if r["image_id"] not in kept]
    assert evaluate_coco(coco128.coco, subset)["map50_95"] < 0.9
    rest = [i for i in coco128.image_ids if i not in kept]
    assert evaluate_coco(coco128.coco, subset, image_ids=rest)["map50_95"] == pytest.approx(1.0)


def test_cat_ids_restricts_scoring():
    gt = _gt()
    perfect = [_result(1, [10, 10, 20, 20]), _result(2, [40, 40, 50, 50])]
    noise = [_result(1, [60, 60, 10, 10], score=0.99, category_id=9)]
    # Category 9 has no ground truth: restricting to 5 ignores the stray 'b' box entirely.
    assert evaluate_coco(gt, perfect + noise, cat_ids=[5])["map50_95"] == pytest.approx(1.0)
    assert evaluate_coco(gt, noise, cat_ids=[5])["map50_95"] == 0.0


def test_map_against_a_reference_detector():
    from argos.metrics import map_against, reference_targets

    ref = Detections(torch.tensor([[10.0, 10, 30, 30], [50, 50, 90, 80], [0, 0, 5, 5]]), [0.9, 0.8, 0.1], [0, 2, 0], (100, 100))
    targets = reference_targets([ref], min_score=0.25)
    assert targets[0]["boxes"].shape == (2, 4) and not targets[0]["iscrowd"].any()  # the 0.1 box is not truth
    assert map_against(targets, [(100, 100)], [ref])["map50_95"] == pytest.approx(1.0)
    half = ref[torch.tensor([0])]  # finds the class-0 object only: class 2 AP is 0
    assert map_against(targets, [(100, 100)], [half])["map50"] == pytest.approx(0.5)
    other = Detections(torch.tensor([[10.0, 10, 30, 30]]), [0.9], [7], (100, 100))  # class absent from truth
    assert map_against(targets, [(100, 100)], [other])["map50"] == 0.0
    with pytest.raises(ValueError, match="targets"):
        map_against(targets, [], [ref])


def _segm_gt() -> COCO:
    """One 60x80 image with a polygon 'a' instance: the square [10, 30) x [20, 40) (x, y)."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": 60, "width": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 20, 20, 20], "area": 400,
                         "iscrowd": 0, "segmentation": [[10, 20, 30, 20, 30, 40, 10, 40]]}],
        "categories": [{"id": 5, "name": "a"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mask_dets(x0: int, y0: int, x1: int, y1: int) -> Detections:
    masks = torch.zeros(1, 60, 80, dtype=torch.bool)
    masks[0, y0:y1, x0:x1] = True
    return Detections(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), [0.9], [0], (60, 80), masks=masks)


def test_segm_map_follows_the_mask_not_the_box():
    gt = _segm_gt()
    exact = detections_to_coco(_mask_dets(10, 20, 30, 40), 1, {0: 5}, with_masks=True)
    assert set(exact[0]["segmentation"]) == {"size", "counts"} and exact[0]["segmentation"]["size"] == [60, 80]
    assert evaluate_coco(gt, exact, iou_type="segm")["map50_95"] > 0.9
    # Same box, but the mask covers only a quarter of the object: mask IoU 0.25 < 0.5.
    quarter = detections_to_coco(_mask_dets(10, 20, 20, 30), 1, {0: 5}, with_masks=True)
    assert evaluate_coco(gt, quarter, iou_type="segm")["map50"] == 0.0
    assert evaluate_coco(gt, quarter, iou_type="bbox")["map50"] == pytest.approx(1.0)


def test_segm_errors():
    gt = _segm_gt()
    no_masks = Detections(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), [0.9], [0], (60, 80))
    with pytest.raises(ValueError, match="instance masks"):
        detections_to_coco(no_masks, 1, {0: 5}, with_masks=True)
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco(gt, detections_to_coco(no_masks, 1, {0: 5}), iou_type="segm")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, [], iou_type="keypoints")
