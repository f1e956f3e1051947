import numpy as np
import pytest
import torch

import argos
from argos import RegionProposals
from argos.executors.masked import MaskedExecutor


def assert_same(a, b):
    assert len(a) == len(b)
    assert torch.allclose(a.boxes, b.boxes) and torch.allclose(a.scores, b.scores)
    assert torch.equal(a.labels, b.labels)


def test_full_proposer_equals_unwrapped_on_real_images(yolov5n, coco128):
    images = [coco128[i].image for i in range(3)]
    fast = argos.wrap(yolov5n, proposer="full", executor="masked")
    for im in images:
        (ref,) = yolov5n.predict([im])
        assert len(ref) > 0
        assert_same(fast(im), ref)
    # A batch of mixed shapes runs one shape at a time, so each image gets what it gets alone.
    for got, im in zip(fast(images), images):
        assert_same(got, yolov5n.predict([im])[0])


def test_inactive_pixels_painted_with_pad_value(yolov5n, coco128):
    s = coco128[0]
    h, w = s.image.shape[:2]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[: h // 2, : w // 2] = True
    ex = MaskedExecutor(drop_outside=False)
    (got,) = ex.run(yolov5n, [s.image], [RegionProposals(mask)])
    painted = s.image.copy()
    painted[~mask.numpy()] = yolov5n.pad_value
    (ref,) = yolov5n.predict([painted])
    assert_same(got, ref)
    assert ex.last_stats["gflops"][0] == pytest.approx(yolov5n.flops(ex.last_stats["input_hw"]))


def test_drop_outside_keeps_only_centres_on_mask(yolov5n, coco128):
    s = coco128[1]
    h, w = s.image.shape[:2]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, : w // 2] = True
    props = [RegionProposals(mask)]
    kept = MaskedExecutor(drop_outside=True).run(yolov5n, [s.image], props)[0]
    allof = MaskedExecutor(drop_outside=False).run(yolov5n, [s.image], props)[0]
    centres_x = (allof.boxes[:, 0] + allof.boxes[:, 2]) / 2
    assert len(kept) == int((centres_x.floor() < w // 2).sum())
    assert bool(((kept.boxes[:, 0] + kept.boxes[:, 2]) / 2 < w // 2).all())


def test_empty_mask_runs_nothing(yolov5n):
    image = np.full((64, 80, 3), 120, np.uint8)
    ex = MaskedExecutor()
    (d,) = ex.run(yolov5n, [image], [RegionProposals(torch.zeros(64, 80, dtype=torch.bool))])
    assert len(d) == 0 and d.image_size == (64, 80)
    assert ex.last_stats["detector_ms"] == 0.0 and ex.last_stats["gflops"] == [0.0]


def test_mismatched_proposals_rejected(yolov5n):
    image = np.zeros((64, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="proposal mask"):
        MaskedExecutor().run(yolov5n, [image], [RegionProposals.full((64, 81))])
    with pytest.raises(ValueError, match="1 images but 2 proposals"):
        MaskedExecutor().run(yolov5n, [image], [RegionProposals.full((64, 80))] * 2)


def test_skipped_frame_keeps_instance_mask_shape():
    """An adapter with instance masks gets an empty [0, H, W] mask tensor on a frame it skips."""
    from argos.executors.base import Executor

    class _MaskAdapter:
        returns_masks = True

    class _Plain:
        pass

    empty = Executor._empty_output(MaskedExecutor(), _MaskAdapter(), (12, 20))
    assert empty.masks is not None and tuple(empty.masks.shape) == (0, 12, 20)
    assert Executor._empty_output(MaskedExecutor(), _Plain(), (12, 20)).masks is None
