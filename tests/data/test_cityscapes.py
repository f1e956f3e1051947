"""Cityscapes gtFine and CityPersons readers on tiny files written in the official formats."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

from typing import Dict, Tuple

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import argos
from argos.adapters.base import Adapter
from argos.data.citypersons import SUBSETS, CityPersonsDataset
from argos.data.cityscapes import (
    INSTANCE_CLASSES, LABELS, TRAIN_CLASSES, CityscapesDataset, decode_instance_ids, label_ids_to_train_ids,
)
from argos.structures import Detections

H, W = 64, 128
STEMS = ("aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313")

# Objects of aachen_000000 as (pixel value, rows, cols); the L-shaped person checks mask != box.
PERSON_A = (24000, [(slice(10, 30), slice(5, 15))])
PERSON_B = (24001, [(slice(20, 40), slice(40, 45)), (slice(35, 40), slice(45, 55))])
CAR = (26000, [(slice(40, 60), slice(70, 110))])
CAR_CROWD = (26, [(slice(5, 15), slice(100, 120))])
RIDER = (25000, [(slice(45, 60), slice(20, 30))])
CARAVAN = (29000, [(slice(0, 4), slice(0, 8))])  # has instances, but not an evaluated class
OBJECTS = (PERSON_A, PERSON_B, CAR, CAR_CROWD, RIDER, CARAVAN)
# Expected xyxy boxes: one past the last row/column.
BOXES = {24000: [5, 10, 15, 30], 24001: [40, 20, 55, 40], 26000: [70, 40, 110, 60], 26: [100, 5, 120, 15],
         25000: [20, 45, 30, 60], 29000: [0, 0, 8, 4]}


def _mask(obj) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    for rows, cols in obj[1]:
        m[rows, cols] = True
    return m


def _instance_ids(stem: str) -> np.ndarray:
    ids = np.full((H, W), 7, dtype=np.uint16)  # road
    ids[:4, 100:] = 23  # sky
    ids[60:, :10] = 9  # parking: no train id
    ids[60:, 10:20] = 0  # unlabeled
    if stem == STEMS[0]:
        for obj in OBJECTS:
            ids[_mask(obj)] = obj[0]
    elif stem == STEMS[2]:
        ids[30:50, 60:70] = 24000
    return ids


def _bgr(stem: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(stem.encode()))
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


# CityPersons boxes per image: (label, [x, y, w, h], bboxVis).
PERSONS = {
    STEMS[0]: [("pedestrian", [40, 2, 20, 60], [40, 2, 20, 50]),   # h 60, vis 0.833: reasonable
               ("pedestrian", [5, 4, 10, 55], [5, 4, 10, 27.5]),    # h 55, vis 0.5: heavy
               ("pedestrian", [90, 20, 8, 30], [90, 20, 8, 30]),    # h 30: too small
               ("rider", [20, 5, 10, 52], [20, 5, 10, 52]),
               ("person group", [100, 0, 28, 60], [100, 0, 28, 60])],
    STEMS[1]: [],
    STEMS[2]: [("pedestrian", [60, 2, 10, 60], [60, 2, 10, 60])],
}


def _city(stem: str) -> str:
    return stem.split("_")[0]


@pytest.fixture
def root(tmp_path) -> Path:
    """A Cityscapes root with 2 cities and 3 images of 64x128, gtFine and CityPersons in both forms."""
    r = tmp_path / "cityscapes"
    images, anns = [], []
    for k, stem in enumerate(STEMS, start=1):
        city = _city(stem)
        for folder in ("leftImg8bit", "gtFine", "gtBboxCityPersons"):
            (r / folder / "val" / city).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(r / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png"), _bgr(stem))
        ids = _instance_ids(stem)
        assert cv2.imwrite(str(r / "gtFine/val" / city / f"{stem}_gtFine_instanceIds.png"), ids)
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        assert cv2.imwrite(str(r / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png"), label_ids)
        objs = [{"label": lab, "bbox": b, "bboxVis": v, "instanceId": 0} for lab, b, v in PERSONS[stem]]
        (r / "gtBboxCityPersons/val" / city / f"{stem}_gtBboxCityPersons.json").write_text(
            json.dumps({"imgHeight": H, "imgWidth": W, "objects": objs}))
        images.append({"id": k, "file_name": f"{city}/{stem}_leftImg8bit.png", "height": H, "width": W})
        for lab, b, v in PERSONS[stem]:
            ped = lab == "pedestrian"
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": 1 if ped else 0, "bbox": b,
                         "vis_bbox": v, "height": b[3], "vis_ratio": (v[2] * v[3]) / (b[2] * b[3]),
                         "ignore": int(not ped), "iscrowd": int(lab == "person group")})
    (r / "val_gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "pedestrian"}]}))
    return r


# --- label table ---------------------------------------------------------------------------------

def test_label_table_and_train_ids():
    assert len(LABELS) == 35 and sorted(l.id for l in LABELS) == list(range(-1, 34))
    assert TRAIN_CLASSES == ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                             "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                             "motorcycle", "bicycle")
    assert {l.name for l in LABELS if l.has_instances} == set(INSTANCE_CLASSES) | {"caravan", "trailer"}
    ids = np.array([[7, 8, 26, 33], [0, 9, 29, 200], [24, 25, 11, 23]])
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), [[0, 1, 13, 18], [255, 255, 255, 255],
                                                                [11, 12, 2, 10]])
    with pytest.raises(ValueError, match="2-D"):
        label_ids_to_train_ids(np.zeros((2, 2, 3)))


# --- Cityscapes -------------------------------------------------------------------------------------

def test_instances_decoded_exactly(root):
    ds = CityscapesDataset.from_root(root, "val")
    assert len(ds) == 3 and ds.file_name(2) == f"bochum/{STEMS[2]}_leftImg8bit.png"
    insts = ds.instances(0)
    # caravan is not a default class; ordered by pixel value, so the crowd region comes first
    assert [x.value for x in insts] == [26, 24000, 24001, 25000, 26000]
    assert [x.name for x in insts] == ["car", "person", "person", "rider", "car"]
    assert [x.crowd for x in insts] == [True, False, False, False, False]
    by_value = {obj[0]: obj for obj in OBJECTS}
    for x in insts:
        np.testing.assert_array_equal(x.mask, _mask(by_value[x.value]))
        assert x.box.tolist() == BOXES[x.value]
        assert x.label_id == (x.value // 1000 if x.value >= 1000 else x.value)
    assert ds.instances(1) == []
    all_classes = decode_instance_ids(_instance_ids(STEMS[0]), classes=list(INSTANCE_CLASSES) + ["caravan"])
    assert [x.value for x in all_classes][-1] == 29000 and all_classes[-1].box.tolist() == BOXES[29000]


def test_samples_match_the_files(root):
    ds = CityscapesDataset(root / "leftImg8bit/val")  # gtFine found next to it
    s = ds[0]
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8 and s.image_size == (H, W)
    np.testing.assert_array_equal(s.image, _bgr(STEMS[0])[:, :, ::-1])  # RGB
    assert s.image_id == 1 and s.file_name == f"aachen/{STEMS[0]}_leftImg8bit.png"
    assert s.boxes.tolist() == [BOXES[v] for v in (26, 24000, 24001, 25000, 26000)]
    assert s.category_ids.tolist() == [26, 24, 24, 25, 26] and s.iscrowd.tolist() == [True, False, False, False, False]
    assert s.masks.shape == (5, H, W) and torch.equal(s.masks[2], torch.from_numpy(_mask(PERSON_B)))
    t = ds.targets(0)
    assert torch.equal(t["boxes"], s.boxes) and torch.equal(s.targets()["labels"], t["labels"])
    empty = ds[1]
    assert empty.boxes.shape == (0, 4) and empty.masks.shape == (0, H, W)
    assert ds[-1].image_id == 3 and ds[-1].boxes.tolist() == [[60, 30, 70, 50]]
    with pytest.raises(IndexError):
        ds[3]
    assert len(CityscapesDataset.from_root(root, limit=2)) == 2


def test_class_filter_and_foreground(root):
    ds = CityscapesDataset.from_root(root, classes=["car"])
    assert ds.categories == {26: "car"}
    assert ds.targets(0)["boxes"].tolist() == [BOXES[26], BOXES[26000]]
    np.testing.assert_array_equal(ds.foreground_mask(0), _mask(CAR) | _mask(CAR_CROWD))
    boxes_fg = ds.foreground_mask(0, source="boxes")
    assert boxes_fg.sum() == _mask(CAR).sum() + _mask(CAR_CROWD).sum()  # both are rectangles
    default = CityscapesDataset.from_root(root)
    expected = np.zeros((H, W), dtype=bool)
    for obj in (PERSON_A, PERSON_B, CAR, CAR_CROWD, RIDER):
        expected |= _mask(obj)
    np.testing.assert_array_equal(default.foreground_mask(0), expected)  # caravan is left out
    assert not default.foreground_mask(1).any()
    assert CityscapesDataset.from_root(root, classes=[24, "rider"]).class_ids == [24, 25]
    with pytest.raises(ValueError, match=r"unknown Cityscapes instance class 'pedestrian'.*person \(24\)"):
        CityscapesDataset.from_root(root, classes=["pedestrian"])
    with pytest.raises(ValueError, match="'road'"):
        CityscapesDataset.from_root(root, classes="road")  # stuff has no instances
    with pytest.raises(ValueError, match="source"):
        default.foreground_mask(0, source="polygons")


def test_riders_as_person_or_ignore(root):
    merged = CityscapesDataset.from_root(root, riders="person")
    assert 25 not in merged.categories and merged.targets(0)["labels"].tolist() == [26, 24, 24, 24, 26]
    assert merged.targets(0)["iscrowd"].tolist() == [True, False, False, False, False]
    ignored = CityscapesDataset.from_root(root, classes=["person"], riders="ignore")
    assert ignored.targets(0)["labels"].tolist() == [24, 24, 24]
    assert ignored.targets(0)["iscrowd"].tolist() == [False, False, True]
    np.testing.assert_array_equal(ignored.foreground_mask(0), _mask(PERSON_A) | _mask(PERSON_B) | _mask(RIDER))
    with pytest.raises(ValueError, match="riders must be one of"):
        CityscapesDataset.from_root(root, riders="drop")
    with pytest.raises(ValueError, match="needs 'person'"):
        CityscapesDataset.from_root(root, classes=["car"], riders="person")


def test_semantic_train_ids(root):
    seg = CityscapesDataset.from_root(root).semantic(0)
    assert seg.ignore_index == 255 and seg.labels.shape == (H, W) and seg.labels.dtype == torch.int64
    lab = seg.labels.numpy()
    assert lab[63, 0] == 255 and lab[63, 15] == 255  # parking, unlabeled
    assert lab[0, 127] == 10 and lab[62, 127] == 0  # sky, road
    assert lab[15, 10] == 11 and lab[50, 25] == 12 and lab[50, 80] == 13 and lab[10, 110] == 13  # person/rider/car
    assert lab[1, 1] == 255  # caravan
    assert set(np.unique(lab).tolist()) == {0, 10, 11, 12, 13, 255}


def test_coco_ground_truth_scores_itself_perfectly(root):
    from argos.metrics.coco_eval import evaluate_coco

    ds = CityscapesDataset.from_root(root)
    coco = ds.coco
    assert sorted(coco.getImgIds()) == [1, 2, 3] and len(coco.anns) == 6
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.anns.values() if not a["iscrowd"]]
    assert evaluate_coco(coco, results)["map50_95"] == pytest.approx(1.0)
    assert ds.label_map(["person", "dog", "car", "bicycle"]) == {0: 24, 2: 26, 3: 33}
    with pytest.raises(ValueError, match="no model class maps"):
        ds.label_map(["dog", "cat"])


def test_cityscapes_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="images directory"):
        CityscapesDataset(tmp_path / "nope")
    (root / "leftImg8bit/train").mkdir()
    with pytest.raises(FileNotFoundError, match="gtFine directory"):
        CityscapesDataset.from_root(root, "train")
    with pytest.raises(ValueError, match="cannot infer"):
        CityscapesDataset(root / "gtFine/val")
    with pytest.raises(ValueError, match="no .*leftImg8bit.png"):
        CityscapesDataset(root / "leftImg8bit", root / "gtFine")  # one level too high
    gt = root / "gtFine/val/aachen"
    (gt / f"{STEMS[1]}_gtFine_instanceIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image.*instanceIds"):
        CityscapesDataset.from_root(root)
    (gt / f"{STEMS[1]}_gtFine_instanceIds.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = CityscapesDataset.from_root(root)
    with pytest.raises(ValueError, match="could not decode instanceIds PNG"):
        ds[1]
    assert cv2.imwrite(str(gt / f"{STEMS[1]}_gtFine_instanceIds.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        ds.targets(1)
    (gt / f"{STEMS[0]}_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="labelIds PNG not found"):
        ds.semantic(0)
    (root / "leftImg8bit/val/aachen" / f"{STEMS[0]}_leftImg8bit.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not decode image"):
        ds[0]


# --- CityPersons ------------------------------------------------------------------------------------

def _xyxy(b):
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


@pytest.mark.parametrize("form", ["coco", "per_image"])
def test_citypersons_both_forms(root, form):
    ann = root / "val_gt.json" if form == "coco" else root / "gtBboxCityPersons/val"
    ds = CityPersonsDataset(root / "leftImg8bit/val", ann)
    assert len(ds) == 3 and ds.categories == {1: "pedestrian"}
    s = ds[0]
    np.testing.assert_array_equal(s.image, _bgr(STEMS[0])[:, :, ::-1])
    assert s.file_name == f"aachen/{STEMS[0]}_leftImg8bit.png" and s.image_size == (H, W)
    assert s.boxes.tolist() == [_xyxy(b) for _, b, _ in PERSONS[STEMS[0]]]
    assert s.visible_boxes.tolist() == [_xyxy(v) for _, _, v in PERSONS[STEMS[0]]]
    assert s.category_ids.tolist() == [1] * 5
    assert s.ignore.tolist() == [False, False, False, True, True]  # rider and group are ignore regions
    assert s.heights.tolist() == [60, 55, 30, 52, 60]
    np.testing.assert_allclose(s.visibility.numpy(), [50 / 60, 0.5, 1, 1, 1], rtol=1e-6)
    assert ds[1].boxes.shape == (0, 4) and ds[2].boxes.tolist() == [[60, 2, 70, 62]]
    reasonable = CityPersonsDataset(root / "leftImg8bit/val", ann, subset="reasonable")
    assert reasonable.targets(0)["iscrowd"].tolist() == [False, True, True, True, True]
    heavy = CityPersonsDataset(root / "leftImg8bit/val", ann, subset=SUBSETS["heavy"])
    assert heavy.targets(0)["iscrowd"].tolist() == [True, False, True, True, True]
    fg = ds.foreground_mask(0)
    assert fg[2:62, 40:60].all() and fg[0:60, 100:128].all() and not fg[63, 0]
    coco = reasonable.coco
    assert [a["iscrowd"] for a in coco.imgToAnns[1]] == [0, 1, 1, 1, 1]
    assert reasonable.label_map({0: "person", 1: "car"}) == {0: 1}


def test_citypersons_bare_file_names_and_errors(root, tmp_path):
    images = root / "leftImg8bit/val"
    data = json.loads((root / "val_gt.json").read_text())
    for im in data["images"]:
        im["im_name"] = im.pop("file_name").split("/")[1]  # CSP style: no city folder
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    assert CityPersonsDataset(images, bare, limit=2)[1].image_id == 2
    with pytest.raises(FileNotFoundError, match="annotations not found"):
        CityPersonsDataset(images, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CityPersonsDataset(images, bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="needs 'images' and 'annotations'"):
        CityPersonsDataset(images, bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png", "height": 1, "width": 1}],
                               "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 3]}]}))
    with pytest.raises(ValueError, match=r"bbox must be \[x, y, w, h\]"):
        CityPersonsDataset(images, bad)
    with pytest.raises(ValueError, match="unknown CityPersons subset 'easy'; valid: reasonable"):
        CityPersonsDataset(images, bare, subset="easy")
    with pytest.raises(ValueError, match="valid: pedestrian"):
        CityPersonsDataset(images, bare, classes=["car"])
    per_image = root / "gtBboxCityPersons/val/bochum" / f"{STEMS[2]}_gtBboxCityPersons.json"
    per_image.write_text(json.dumps({"imgHeight": H, "imgWidth": W,
                                     "objects": [{"label": "cyclist", "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match="unknown label 'cyclist'"):
        CityPersonsDataset(images, root / "gtBboxCityPersons/val")
    (images / "bochum" / f"{STEMS[2]}_leftImg8bit.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image.*missing"):
        CityPersonsDataset(images, root / "val_gt.json")


# --- bench and train through the CLI -----------------------------------------------------------------

def _leaf_keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        if k == "config":
            continue
        out |= _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


# COCO's first eight class names; the rest are placeholders (only names matter to the label maps).
_NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"] + [
    f"class{k}" for k in range(8, 80)]


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory) -> Path:
    """A random-init YOLOv5n checkpoint whose classes carry COCO names (a .yaml model has none)."""
    from ultralytics import YOLO

    yolo = YOLO("yolov5nu.yaml", task="detect", verbose=False)
    yolo.model.names = dict(enumerate(_NAMES))
    path = tmp_path_factory.mktemp("detector") / "tiny.pt"
    yolo.save(str(path))
    return path


def test_bench_cli_on_cityscapes_and_citypersons(root, tmp_path, tiny_detector):
    from argos.cli import main

    common = ["--weights", str(tiny_detector), "--img-size", "64", "--proposer", "oracle", "--warmup", "0",
              "--no-progress", "--threads", "1"]
    runs = {
        "cityscapes": ["--dataset", "cityscapes", "--images", str(root / "leftImg8bit/val")],
        "citypersons": ["--dataset", "citypersons", "--images", str(root / "leftImg8bit/val"),
                        "--annotations", str(root / "val_gt.json"), "--subset", "reasonable"],
    }
    # The same boxes as a COCO instances file (the detector's 80 classes): the reference for the JSON keys.
    names = dict(enumerate(_NAMES))
    cat_id = {v: k + 1 for k, v in names.items()}
    gt = CityscapesDataset.from_root(root, riders="person").coco.dataset
    anns = [dict(a, category_id=cat_id[gt_name]) for a in gt["annotations"]
            for gt_name in [{c["id"]: c["name"] for c in gt["categories"]}[a["category_id"]]]]
    coco_json = tmp_path / "instances.json"
    coco_json.write_text(json.dumps({"images": gt["images"], "annotations": anns,
                                     "categories": [{"id": k + 1, "name": v} for k, v in names.items()]}))
    runs["coco"] = ["--images", str(root / "leftImg8bit/val"), "--annotations", str(coco_json)]
    results = {}
    for name, args in runs.items():
        out = tmp_path / f"{name}.json"
        assert main(["bench", *args, *common, "--json", str(out)]) == 0, name
        results[name] = json.loads(out.read_text())
    for name, r in results.items():
        assert r["images"] == 3, name
        assert _leaf_keys(r) == _leaf_keys(results["coco"]), name
        # the oracle proposer saw every ground-truth box (ignore regions included)
        assert r["argos"]["regions_detected"] == 1.0, name
    assert results["cityscapes"]["config"]["dataset"] == "cityscapes"
    assert results["citypersons"]["config"]["subset"] == "reasonable"
    assert main(["bench", "--dataset", "citypersons", "--images", str(root / "leftImg8bit/val"), *common]) == 2
    assert main(["bench", "--dataset", "cityscapes", "--images", str(root / "leftImg8bit/val"),
                 "--classes", "unicorn", *common]) == 2


def test_train_qunet_one_step_from_cityscapes(root, tmp_path):
    from argos.cli import main
    from argos.proposers.qunet.checkpoint import load_checkpoint
    from argos.proposers.qunet.targets import cityscapes_samples

    samples = cityscapes_samples(root / "leftImg8bit/val", classes=["person"], indices="0:1")
    np.testing.assert_array_equal(samples[0].mask, _mask(PERSON_A) | _mask(PERSON_B))
    out = tmp_path / "cs.qunet"
    rc = main(["train", "qunet", "--source", "cityscapes", "--images", str(root / "leftImg8bit/val"),
               "--train-range", "0:2", "--val-range", "2:3", "--width", "4", "--depth", "2",
               "--input-size", "32", "64", "--epochs", "1", "--batch-size", "2", "--max-steps", "1",
               "--out", str(out), "--device", "cpu", "--threads", "1"])
    assert rc == 0
    _, info = load_checkpoint(out)
    assert info.meta["data"]["source"] == "cityscapes" and info.metrics["steps"] == 1
    assert info.metrics["val"]["images"] == 1


class _AnswerAdapter(Adapter):
    """Reports fixed detections for each image, found by its pixels: a perfect detector with extras."""

    names = dict(enumerate(_NAMES))

    def __init__(self, answers: Dict[bytes, Tuple[list, list, list]]) -> None:
        self.answers = answers
        self._net = nn.Identity()

    @property
    def module(self) -> nn.Module:
        return self._net

    def preprocess(self, images):
        batch = torch.stack([torch.from_numpy(np.ascontiguousarray(im)) for im in images])
        return batch, [im.shape[:2] for im in images]

    def forward(self, batch):
        return batch

    def postprocess(self, raw, metas):
        out = []
        for im, size in zip(raw.numpy(), metas):
            boxes, scores, labels = self.answers.get(im.tobytes(), ([], [], []))
            out.append(Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                                  torch.tensor(labels, dtype=torch.int64), tuple(size)))
        return out

    def flops(self, input_hw):
        return 1.0


def _bench_with(answers, **cfg_kwargs):
    from argos.tools.bench import BenchConfig, _bench_coco, _open_dataset

    cfg = BenchConfig(warmup=0, **cfg_kwargs)
    fast = argos.wrap(_AnswerAdapter(answers), proposer="full")
    return _bench_coco(cfg, fast, _open_dataset(cfg), False, 0)


def _rgb(stem: str) -> bytes:
    return np.ascontiguousarray(_bgr(stem)[:, :, ::-1]).tobytes()


def test_bench_scores_a_perfect_detector_perfectly(root):
    """Scoring through the label maps: exact boxes under COCO names score 1; unmapped classes and
    detections on crowd / ignore regions neither help nor hurt."""
    person, car, airplane = 0, 2, 4
    answers = {
        _rgb(STEMS[0]): ([BOXES[24000], BOXES[24001], BOXES[25000], BOXES[26000], [101, 6, 110, 14], [0, 0, 30, 30]],
                         [0.9, 0.8, 0.7, 0.9, 0.95, 0.99], [person, person, person, car, car, airplane]),
        _rgb(STEMS[2]): ([[60, 30, 70, 50]], [0.9], [person]),
    }
    r = _bench_with(answers, dataset="cityscapes", images=str(root / "leftImg8bit/val"))  # riders -> person
    for side in ("baseline", "argos"):
        assert r[side]["map50_95"] == pytest.approx(1.0) and r[side]["recall"] == pytest.approx(1.0)
        assert r[side]["precision"] == pytest.approx(1.0)
    answers = {
        # the reasonable pedestrian, the heavy one (an ignore region here) and the rider (ignore)
        _rgb(STEMS[0]): ([[40, 2, 60, 62], [5, 4, 15, 59], [20, 5, 30, 57], [0, 0, 9, 9]], [0.9, 0.95, 0.97, 0.99],
                         [person, person, person, car]),
        _rgb(STEMS[2]): ([[60, 2, 70, 62]], [0.8], [person]),
    }
    r = _bench_with(answers, dataset="citypersons", images=str(root / "leftImg8bit/val"),
                    annotations=str(root / "gtBboxCityPersons/val"), subset="reasonable")
    assert r["baseline"]["map50_95"] == pytest.approx(1.0) and r["baseline"]["precision"] == pytest.approx(1.0)
    r = _bench_with(answers, dataset="citypersons", images=str(root / "leftImg8bit/val"),
                    annotations=str(root / "val_gt.json"))  # no subset: the small pedestrian is missed
    assert r["baseline"]["recall"] == pytest.approx(3 / 4)


def test_bench_segmentation_on_cityscapes(root, tmp_path):
    """A segmentation model on Cityscapes: mIoU and pixel accuracy from the labelIds maps."""
    from argos.tools.bench import BenchConfig, format_table, run_bench

    cfg = BenchConfig(dataset="cityscapes", images=str(root / "leftImg8bit" / "val"), detector="pspnet",
                      detector_kwargs={"depth": 18}, img_size=64, proposer="oracle", executor="packed_crops",
                      warmup=0, threads=1)
    result = run_bench(cfg, progress=False)
    assert result["task"] == "segmentation"
    for side in ("baseline", "argos"):
        assert 0.0 <= result[side]["miou"] <= 1.0 and 0.0 <= result[side]["pixel_accuracy"] <= 1.0
    assert 0.0 <= result["agreement"]["pixel_agreement_in_region"] <= 1.0
    assert "mIoU" in format_table(result)
