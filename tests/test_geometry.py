import numpy as np
import pytest
import torch

from argos.geometry import adaptive_margin, boxes_to_mask, dilate_boxes, mask_to_boxes


def test_components_become_exact_boxes():
    m = np.zeros((30, 40), bool)
    m[2:6, 3:10] = True      # rows 2-5, cols 3-9
    m[20:21, 30:35] = True   # a 1-pixel-high strip
    m[10, 10] = True         # a speck
    boxes = mask_to_boxes(m)
    assert sorted(boxes.tolist()) == [[3, 2, 10, 6], [10, 10, 11, 11], [30, 20, 35, 21]]
    assert sorted(mask_to_boxes(m, min_area=2).tolist()) == [[3, 2, 10, 6], [30, 20, 35, 21]]
    # Rasterizing the boxes back reproduces the rectangles exactly.
    assert torch.equal(boxes_to_mask(boxes, m.shape), torch.from_numpy(m))


def test_connectivity():
    m = np.zeros((5, 5), bool)
    m[1, 1] = m[2, 2] = True  # diagonal neighbours
    assert len(mask_to_boxes(m, connectivity=8)) == 1
    assert len(mask_to_boxes(m, connectivity=4)) == 2
    assert mask_to_boxes(np.zeros((5, 5), bool)).shape == (0, 4)


def test_fixed_dilation_clips_to_image():
    b = dilate_boxes(torch.tensor([[2.0, 3.0, 10.0, 12.0]]), 5, (14, 20))
    assert b.tolist() == [[0.0, 0.0, 15.0, 14.0]]
    with pytest.raises(ValueError):
        dilate_boxes(torch.zeros(1, 4), -1, (10, 10))
    with pytest.raises(ValueError, match="adaptive"):
        dilate_boxes(torch.zeros(1, 4), "wide", (10, 10))


def test_adaptive_dilation_grows_with_size():
    small = torch.tensor([[100.0, 100.0, 104.0, 104.0]])
    large = torch.tensor([[100.0, 100.0, 300.0, 300.0]])
    ms = dilate_boxes(small, "adaptive", (1000, 1000))[0, 0]
    ml = dilate_boxes(large, "adaptive", (1000, 1000))[0, 0]
    assert 100 - ms == 4  # minimum margin
    assert 100 - ml == 30  # 0.15 * sqrt(200*200)
    m = adaptive_margin(torch.tensor([10.0, 100.0, 10000.0]), torch.tensor([10.0, 100.0, 10000.0]))
    assert m.tolist() == pytest.approx([4.0, 15.0, 96.0])


def test_boxes_to_mask_fractional_and_degenerate():
    m = boxes_to_mask(torch.tensor([[1.5, 0.2, 3.1, 1.0], [5.0, 5.0, 5.0, 5.0]]), (8, 8))
    expect = torch.zeros(8, 8, dtype=torch.bool)
    expect[0:1, 1:4] = True
    expect[5, 5] = True
    assert torch.equal(m, expect)
