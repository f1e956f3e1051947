import cv2
import numpy as np
import pytest
import torch

import argos
from argos.geometry import boxes_to_mask


def test_full_covers_everything():
    (p,) = argos.PROPOSERS.build("full").propose([np.zeros((7, 9, 3), np.uint8)])
    assert p.area_fraction == 1.0 and p.boxes.tolist() == [[0, 0, 9, 7]]


def test_oracle_boxes_masks_and_dilation():
    image = np.zeros((50, 60, 3), np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    (p,) = argos.PROPOSERS.build("oracle").propose([image], [{"boxes": boxes}])
    assert p.boxes.tolist() == [[10, 10, 20, 30]] and p.area_fraction == pytest.approx(200 / 3000)
    (p,) = argos.PROPOSERS.build("oracle", dilation=3).propose([image], [boxes])
    assert p.boxes.tolist() == [[7, 7, 23, 33]]
    assert torch.equal(p.mask, boxes_to_mask(p.boxes, (50, 60)))
    mask = torch.zeros(50, 60, dtype=torch.bool)
    mask[5:8, 5:9] = True
    (p,) = argos.PROPOSERS.build("oracle", source="masks").propose([image], [{"mask": mask}])
    assert p.boxes.tolist() == [[5, 5, 9, 8]]
    (p,) = argos.PROPOSERS.build("oracle", source="masks", mask_mode="pixels", dilation=1).propose([image], [{"mask": mask}])
    assert p.mask.sum() == 5 * 6  # square-kernel dilation of a 3x4 block
    with pytest.raises(ValueError, match="targets"):
        argos.PROPOSERS.build("oracle").propose([image])
    with pytest.raises(ValueError, match="'mask'"):
        argos.PROPOSERS.build("oracle", source="masks").propose([image], [{"boxes": boxes}])
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        argos.PROPOSERS.build("oracle").propose([image, image], [boxes])


def test_motion_finds_a_moving_square():
    rng = np.random.default_rng(0)
    bg = rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)
    p = argos.PROPOSERS.build("motion", warmup=3, dilation=0, min_area=4, scale=1.0)
    for _ in range(20):
        p.propose([bg])
    frame = bg.copy()
    cv2.rectangle(frame, (60, 40), (89, 69), (250, 20, 20), -1)
    (out,) = p.propose([frame])
    assert len(out.boxes) >= 1
    x1, y1, x2, y2 = out.boxes[0].tolist()
    assert abs(x1 - 60) <= 3 and abs(y1 - 40) <= 3 and abs(x2 - 90) <= 3 and abs(y2 - 70) <= 3
    assert out.area_fraction < 0.1
    with pytest.raises(ValueError, match="reset"):
        p.propose([np.zeros((10, 10, 3), np.uint8)])
    p.reset()
    (warm,) = p.propose([np.zeros((10, 10, 3), np.uint8)])
    assert warm.area_fraction == 1.0  # warm-up frames propose everything
