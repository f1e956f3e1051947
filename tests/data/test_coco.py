"""CocoDataset on a hand-made instances file and on the real coco128 JSON."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from argos.data import CocoDataset, CocoSample

H, W = 20, 30
PERSON_XYWH = [2, 3, 10, 5]  # rows 3..7, cols 2..11
CROWD_ROWS, CROWD_COLS = slice(10, 15), slice(20, 25)


def _crowd_rle() -> dict:
    m = np.zeros((H, W), dtype=np.uint8)
    m[CROWD_ROWS, CROWD_COLS] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _instances() -> dict:
    x, y, w, h = PERSON_XYWH
    return {
        "images": [
            {"id": 7, "file_name": "red.png", "height": H, "width": W},
            {"id": 3, "file_name": "small.png", "height": 10, "width": 12},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": PERSON_XYWH, "area": 50.0, "iscrowd": 0,
             "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20, 10, 5, 5], "area": 25.0, "iscrowd": 1,
             "segmentation": _crowd_rle()},
            {"id": 3, "image_id": 3, "category_id": 18, "bbox": [0.5, 1.25, 4, 2], "area": 8.0, "iscrowd": 0,
             "segmentation": [[0.5, 1.25, 4.5, 1.25, 4.5, 3.25, 0.5, 3.25]]},
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
        ],
    }


@pytest.fixture
def tiny(tmp_path):
    """A 2-image dataset: image 7 is pure red (RGB) 20x30; image 3 is 10x12."""
    images = tmp_path / "images"
    images.mkdir()
    red_bgr = np.zeros((H, W, 3), dtype=np.uint8)
    red_bgr[..., 2] = 255
    assert cv2.imwrite(str(images / "red.png"), red_bgr)
    assert cv2.imwrite(str(images / "small.png"), np.full((10, 12, 3), 40, dtype=np.uint8))
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(_instances()))
    return images, ann


def test_sample_fields(tiny, capsys):
    ds = CocoDataset(*tiny)
    assert capsys.readouterr().out == ""  # pycocotools' progress prints are silenced
    assert len(ds) == 2
    assert ds.image_ids == [3, 7]  # sorted by image id
    assert ds.categories == {1: "person", 3: "car", 18: "dog"}
    s = ds[1]
    assert isinstance(s, CocoSample)
    assert s.image_id == 7 and s.file_name == "red.png" and s.image_size == (H, W)
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert (s.image[..., 0] == 255).all() and (s.image[..., 1:] == 0).all()  # RGB, not BGR
    assert s.boxes.dtype == torch.float32 and s.category_ids.dtype == torch.int64 and s.iscrowd.dtype == torch.bool
    torch.testing.assert_close(s.boxes, torch.tensor([[2.0, 3.0, 12.0, 8.0], [20.0, 10.0, 25.0, 15.0]]))
    assert s.category_ids.tolist() == [1, 3]
    assert s.iscrowd.tolist() == [False, True]
    assert ds[-1].image_id == 7
    torch.testing.assert_close(ds[0].boxes, torch.tensor([[0.5, 1.25, 4.5, 3.25]]))
    assert [x.image_id for x in ds.iter_images()] == [3, 7]
    t = ds.targets(1)
    assert torch.equal(t["boxes"], s.boxes) and torch.equal(t["labels"], s.category_ids)
    with pytest.raises(IndexError):
        ds[2]


def test_classes_filter(tiny):
    by_name = CocoDataset(*tiny, classes=["car", "dog"])
    by_id = CocoDataset(*tiny, classes=[3, 18])
    assert by_name.class_ids == by_id.class_ids == [3, 18]
    assert by_name[1].category_ids.tolist() == [3]
    assert by_name[1].boxes.shape == (1, 4)
    assert CocoDataset(*tiny, classes="person")[0].boxes.shape == (0, 4)


def test_unknown_class_lists_valid_names(tiny):
    with pytest.raises(ValueError, match="'horse'.*car, dog, person"):
        CocoDataset(*tiny, classes=["person", "horse"])
    with pytest.raises(ValueError, match="category id 2"):
        CocoDataset(*tiny, classes=[2])
    with pytest.raises(ValueError, match="empty"):
        CocoDataset(*tiny, classes=[])


def test_foreground_mask_boxes_and_masks(tiny):
    ds = CocoDataset(*tiny)
    expected = np.zeros((H, W), dtype=bool)
    expected[3:8, 2:12] = True
    expected[CROWD_ROWS, CROWD_COLS] = True  # crowd regions count as foreground
    for source in ("boxes", "masks"):
        m = ds.foreground_mask(1, source=source)
        assert m.dtype == bool and m.shape == (H, W)
        np.testing.assert_array_equal(m, expected)
    # fractional box [0.5, 1.25, 4.5, 3.25]: rows 1..3, cols 0..4
    m = ds.foreground_mask(0, source="boxes")
    assert m.shape == (10, 12)
    exp = np.zeros((10, 12), dtype=bool)
    exp[1:4, 0:5] = True
    np.testing.assert_array_equal(m, exp)
    assert ds.foreground_mask(0, "masks").sum() <= m.sum()
    # classes filter the foreground too
    only_car = CocoDataset(*tiny, classes=["car"]).foreground_mask(1)
    assert only_car.sum() == 25 and only_car[CROWD_ROWS, CROWD_COLS].all()
    with pytest.raises(ValueError, match="source"):
        ds.foreground_mask(0, source="polygons")


def test_missing_paths(tiny, tmp_path):
    images, ann = tiny
    with pytest.raises(FileNotFoundError, match="images directory"):
        CocoDataset(tmp_path / "nope", ann)
    with pytest.raises(FileNotFoundError, match="annotations file"):
        CocoDataset(images, tmp_path / "nope.json")


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"images": [', "not valid JSON"),
        ("[1, 2]", "not a COCO instances file"),
        ('{"images": [], "annotations": []}', "categories"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', r"images\[0\]"),
        ('{"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2]}], '
         '"categories": []}', "bbox"),
    ],
)
def test_invalid_annotations(tiny, tmp_path, text, match):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=match):
        CocoDataset(tiny[0], bad)


def test_bad_image_files(tiny):
    images, ann = tiny
    ds = CocoDataset(images, ann)
    (images / "small.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="small.png"):
        ds[0]
    (images / "small.png").unlink()
    with pytest.raises(FileNotFoundError, match="small.png"):
        ds[0]
    # the JSON's size must agree with the decoded image
    assert cv2.imwrite(str(images / "small.png"), np.zeros((11, 12, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="small.png.*11x12.*10x12"):
        ds[0]


def test_label_map(tiny):
    ds = CocoDataset(*tiny)
    assert ds.label_map({0: "person", 1: "dog"}) == {0: 1, 1: 18}
    assert ds.label_map(["person", "dog"]) == {0: 1, 1: 18}
    with pytest.warns(UserWarning, match="sorted order"):
        assert ds.label_map({0: "human", 1: "auto", 2: "dog"}) == {0: 1, 1: 3, 2: 18}
    with pytest.raises(ValueError, match="'human'.*2 classes.*3 categories"):
        ds.label_map({0: "human", 1: "dog"})


# --- real data: the coco128 images with their original instances JSON ---------------------


def test_coco128_counts(coco128):
    assert len(coco128) == 128
    assert len(coco128.coco.anns) == 939
    assert len(coco128.categories) == 80
    assert coco128.categories[1] == "person" and coco128.categories[90] == "toothbrush"
    assert sum(bool(coco128.targets(i)["labels"].eq(1).any()) for i in range(len(coco128))) == 61
    people = CocoDataset(coco128.images_dir, coco128.annotations_path, classes=["person"])
    assert sum(len(people.targets(i)["labels"]) > 0 for i in range(len(people))) == 61


def test_coco128_samples(coco128):
    for i in (0, 5, len(coco128) - 1):
        s = coco128[i]
        assert s.image.shape == (*s.image_size, 3)
        assert len(s.boxes) == len(s.category_ids) == len(s.iscrowd)
        assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()
        assert (s.boxes[:, [0, 2]] <= s.image_size[1] + 1e-3).all() and (s.boxes[:, [1, 3]] <= s.image_size[0] + 1e-3).all()


def test_coco128_masks_smaller_than_boxes(coco128):
    mask_area = box_area = 0
    for i in range(len(coco128)):
        m = coco128.foreground_mask(i, "masks")
        b = coco128.foreground_mask(i, "boxes")
        assert m.shape == b.shape == coco128.image_size(i)
        mask_area += int(m.sum())
        box_area += int(b.sum())
    assert 0 < mask_area < 0.85 * box_area


def test_coco128_label_map_by_name(coco128):
    names = {i: coco128.categories[c] for i, c in enumerate(sorted(coco128.categories))}
    lm = coco128.label_map(names)
    assert lm[0] == 1 and lm[79] == 90 and len(set(lm.values())) == 80


def test_corrupt_json_is_value_error(coco128, tmp_path):
    text = coco128.annotations_path.read_text()
    bad = tmp_path / "instances_train2017.json"
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDataset(coco128.images_dir, bad)
