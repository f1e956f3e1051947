"""box_coverage / regions_detected / RegionStats against hand-made cases and a brute-force loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from argos.metrics import RegionStats, box_coverage, regions_detected


def _brute_coverage(mask: np.ndarray, box) -> float:
    """Loop over pixels: pixel (r, c) is the square [c, c+1) x [r, r+1); count those the box overlaps."""
    h, w = mask.shape
    x1, y1, x2, y2 = (min(max(v, 0.0), lim) for v, lim in zip(box, (w, h, w, h)))
    pixels = [(r, c) for r in range(h) for c in range(w) if c + 1 > x1 and c < x2 and r + 1 > y1 and r < y2]
    if not pixels:
        r = min(max(math.floor((y1 + y2) / 2), 0), h - 1)
        c = min(max(math.floor((x1 + x2) / 2), 0), w - 1)
        return float(mask[r, c])
    return sum(bool(mask[r, c]) for r, c in pixels) / len(pixels)


def test_hand_made():
    mask = torch.zeros(10, 20, dtype=torch.bool)
    mask[2:6, 4:12] = True
    boxes = torch.tensor(
        [
            [4.0, 2.0, 12.0, 6.0],  # exactly on the mask
            [4.0, 2.0, 20.0, 6.0],  # right half outside
            [4.5, 2.2, 11.5, 5.9],  # fractional, inside the active pixels
            [3.5, 2.0, 12.0, 6.0],  # fractional, touches one inactive column of 9
            [0.0, 0.0, 2.0, 2.0],   # off the mask
            [-5.0, -5.0, 30.0, 30.0],  # whole image after clipping: 32 of 200 pixels
        ]
    )
    cov = box_coverage(mask, boxes)
    assert cov.dtype == torch.float32 and cov.shape == (6,)
    torch.testing.assert_close(cov, torch.tensor([1.0, 0.5, 1.0, 8 / 9, 0.0, 32 / 200]))


def test_degenerate_boxes_use_nearest_pixel():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3, 5] = True
    boxes = torch.tensor(
        [
            [5.2, 3.4, 5.2, 3.4],  # a point inside pixel (3, 5)
            [5.0, 3.0, 6.0, 3.0],  # a horizontal line on the top edge of pixel (3, 5)
            [1.0, 1.0, 1.0, 1.0],  # a point on an inactive pixel
            [9.0, 3.0, 12.0, 4.0],  # outside: clipped to zero width at x=8
            [6.0, 4.0, 5.0, 3.0],  # inverted
        ]
    )
    torch.testing.assert_close(box_coverage(mask, boxes), torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]))


def test_empty_inputs():
    mask = torch.ones(4, 4, dtype=torch.bool)
    assert box_coverage(mask, torch.zeros(0, 4)).shape == (0,)
    assert regions_detected(mask, torch.zeros(0, 4)) == {1.0: (0, 0), 0.95: (0, 0), 0.9: (0, 0)}
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        box_coverage(torch.ones(1, 4, 4, dtype=torch.bool), torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"\(M, 4\)"):
        box_coverage(mask, torch.zeros(2, 3))


def test_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(3, 25, size=2)
        mask = rng.random((h, w)) < rng.random()
        xy = rng.uniform(-3, max(h, w) + 3, size=(30, 4))
        boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], axis=1)
        boxes[::5] = np.round(boxes[::5])  # integer edges too
        got = box_coverage(torch.from_numpy(mask), torch.from_numpy(boxes)).double().numpy()
        want = np.array([_brute_coverage(mask, b) for b in boxes])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_regions_detected_thresholds():
    mask = torch.zeros(10, 40, dtype=torch.bool)
    mask[:, :19] = True
    # 19/20 columns active = 0.95 exactly; 18/20 = 0.9; 20/20 = 1.0 (exact counts, no float slack)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 10.0], [1.0, 0.0, 21.0, 10.0], [0.0, 0.0, 19.0, 10.0]])
    assert regions_detected(mask, boxes) == {1.0: (1, 3), 0.95: (2, 3), 0.9: (3, 3)}


def test_region_stats():
    stats = RegionStats()
    a = torch.zeros(10, 10, dtype=torch.bool)
    a[:5] = True
    stats.update(a, torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]]))
    b = torch.ones(4, 4, dtype=torch.bool)
    stats.update(b.numpy(), np.array([[0.0, 0.0, 4.0, 4.0]]))
    s = stats.summary()
    assert s["regions_detected"] == pytest.approx(2 / 3)
    assert s["regions_detected@0.95"] == pytest.approx(2 / 3)
    assert s["regions_detected@0.9"] == pytest.approx(2 / 3)
    assert s["area_processed"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["images"] == 2 and s["regions"] == 3
    assert RegionStats().summary()["regions_detected"] == 1.0


def test_coco128_ground_truth_masks(coco128):
    """Box-derived foreground covers every box fully; polygon foreground covers less."""
    from_boxes, from_masks = RegionStats(), RegionStats()
    for i in range(0, len(coco128), 8):
        t = coco128.targets(i)
        boxes = t["boxes"][~t["iscrowd"]]
        from_boxes.update(torch.from_numpy(coco128.foreground_mask(i, "boxes")), boxes)
        from_masks.update(torch.from_numpy(coco128.foreground_mask(i, "masks")), boxes)
    assert from_boxes.summary()["regions_detected"] == 1.0
    assert from_masks.summary()["regions_detected"] < 0.5
    assert from_masks.summary()["area_processed"] < from_boxes.summary()["area_processed"]
