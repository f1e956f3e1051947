import numpy as np
import pytest
import torch

from argos import Detections, RegionProposals, SegmentationMap


def make(n=3, size=(40, 50)):
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0]] * n)
    return Detections(boxes, torch.linspace(0.1, 0.9, n), torch.arange(n), size)


def test_detections_validates_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Detections(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3), (10, 10))
    with pytest.raises(ValueError, match="same length"):
        Detections(torch.zeros(3, 4), torch.zeros(2), torch.zeros(3), (10, 10))
    with pytest.raises(ValueError, match="masks"):
        Detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2), (10, 10), masks=torch.zeros(2, 9, 10))
    with pytest.raises(ValueError, match="image_size"):
        Detections(torch.zeros(0, 4), [], [], (0, 10))


def test_detections_dtypes_index_cat_numpy():
    d = Detections(np.array([[0, 0, 5, 5], [1, 1, 2, 2]], np.float64), [0.5, 0.7], np.array([3, 4], np.int32), (8, 9))
    assert d.boxes.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert len(d[d.scores > 0.6]) == 1 and int(d[d.scores > 0.6].labels[0]) == 4
    assert len(d[0]) == 1 and len(d[-1]) == 1 and int(d[-1].labels[0]) == 4
    both = Detections.cat([d, d])
    assert len(both) == 4 and both.image_size == (8, 9)
    arr = both.numpy()
    assert arr["boxes"].shape == (4, 4) and arr["labels"].tolist() == [3, 4, 3, 4]
    with pytest.raises(ValueError, match="image sizes"):
        Detections.cat([d, make()])
    empty = Detections.empty((8, 9))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    assert len(d.to("cpu")) == 2


def test_region_proposals_derive_boxes_and_area():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[2:5, 3:9] = True
    p = RegionProposals(mask)
    assert p.boxes.tolist() == [[3.0, 2.0, 9.0, 5.0]]
    assert p.area_fraction == pytest.approx(18 / 600)
    assert p.image_size == (20, 30)
    full = RegionProposals.full((20, 30))
    assert full.area_fraction == 1.0 and full.boxes.tolist() == [[0, 0, 30, 20]]
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        RegionProposals(torch.zeros(1, 20, 30))
    with pytest.raises(ValueError, match="scores"):
        RegionProposals(mask, scores=torch.zeros(5, 5))


def test_segmentation_map():
    s = SegmentationMap(torch.zeros(4, 6, dtype=torch.int64))
    assert s.image_size == (4, 6)
    with pytest.raises(ValueError):
        SegmentationMap(torch.zeros(4, 6), image_size=(6, 4))
    with pytest.raises(ValueError, match="scores"):
        SegmentationMap(torch.zeros(4, 6), scores=torch.zeros(3, 4, 5))
