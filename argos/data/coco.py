"""COCO instances datasets: images, boxes and binary foreground masks.

Boxes are ``xyxy`` in original-image pixels; category ids are COCO's own (1..90 for COCO 2017).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

__all__ = ["CocoSample", "CocoDataset", "COCO80_NAMES"]

#: The 80 COCO 2017 detection classes in category-id order: the contiguous 0..79 ids that YOLO
#: models trained on COCO use (``COCO80_NAMES[k]`` is the name of model class ``k``).
COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

PathLike = Union[str, os.PathLike]
ClassSpec = Union[str, int, Sequence[Union[str, int]], None]

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


@dataclass
class CocoSample:
    """One COCO image with its (class-filtered) annotations.

    Args:
        image (np.ndarray[H, W, 3] uint8): RGB pixels.
        image_id (int): COCO image id.
        file_name (str): file name relative to the images directory.
        boxes (Tensor[M, 4] float32): ``xyxy`` boxes in pixels.
        category_ids (Tensor[M] int64): COCO category ids.
        iscrowd (Tensor[M] bool): crowd (RLE) annotations.
        image_size (tuple[int, int]): ``(height, width)``.
    """

    image: np.ndarray
    image_id: int
    file_name: str
    boxes: torch.Tensor
    category_ids: torch.Tensor
    iscrowd: torch.Tensor
    image_size: Tuple[int, int]

    def targets(self) -> Dict[str, torch.Tensor]:
        """Ground truth as ``{"boxes", "labels", "iscrowd"}`` (the form metrics take)."""
        return {"boxes": self.boxes, "labels": self.category_ids, "iscrowd": self.iscrowd}


def _read_image(path: PathLike) -> np.ndarray:
    """Decode an image file to ``np.ndarray[H, W, 3]`` uint8 RGB.

    Unlike :func:`argos.io.read_image`, EXIF orientation is ignored: COCO annotations refer
    to the stored pixel grid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows.
    data = np.fromfile(str(path), dtype=np.uint8)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(data, flags) if data.size else None
    if bgr is None:
        raise ValueError(f"could not decode image file (corrupt or unsupported format): {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _check_instances(data: object, path: Path) -> None:
    """Raise ValueError unless ``data`` looks like a COCO instances file."""
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a COCO instances file: top level is {type(data).__name__}, not an object")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO instances file: missing key(s) {missing}")
    for key, required in (("images", _IMAGE_KEYS), ("annotations", _ANNOTATION_KEYS), ("categories", _CATEGORY_KEYS)):
        entries = data[key]
        if not isinstance(entries, list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(entries).__name__}")
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or any(k not in entry for k in required):
                raise ValueError(f"{path}: {key}[{n}] must be an object with keys {list(required)}")
    for n, ann in enumerate(data["annotations"]):
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{path}: annotations[{n}].bbox must be [x, y, w, h], got {bbox!r}")


class CocoDataset:
    """A COCO instances JSON plus its images directory; images are decoded lazily.

    Args:
        images_dir: folder holding the files named by ``images[].file_name``.
        annotations: path to the instances JSON (e.g. ``instances_val2017.json``).
        classes: which categories count as objects (targets and foreground), by name
            (``"person"``) or category id (``1``); ``None`` keeps all.

    Raises:
        FileNotFoundError: ``images_dir`` or ``annotations`` does not exist.
        ValueError: the JSON is invalid or not an instances file, or ``classes`` names an
            unknown category.
    """

    def __init__(self, images_dir: PathLike, annotations: PathLike, classes: ClassSpec = None) -> None:
        self.images_dir = Path(images_dir)
        self.annotations_path = Path(annotations)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images directory not found: {self.images_dir}")
        if not self.annotations_path.is_file():
            raise FileNotFoundError(f"annotations file not found: {self.annotations_path}")
        try:
            with open(self.annotations_path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.annotations_path} is not valid JSON: {e}") from e
        _check_instances(data, self.annotations_path)

        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()

        self.categories: Dict[int, str] = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        self.class_ids: List[int] = self._resolve_classes(classes)
        self._class_set = set(self.class_ids)
        self.image_ids: List[int] = sorted(int(i) for i in self.coco.imgs)

    def _resolve_classes(self, classes: ClassSpec) -> List[int]:
        if classes is None:
            return sorted(self.categories)
        if isinstance(classes, (str, int)):
            classes = [classes]
        if len(classes) == 0:
            raise ValueError("classes is empty; pass None to keep all categories")
        by_name = {name: cid for cid, name in self.categories.items()}
        ids = []
        for c in classes:
            if isinstance(c, str):
                if c not in by_name:
                    raise ValueError(f"unknown class {c!r}; valid names: {', '.join(sorted(by_name))}")
                ids.append(by_name[c])
            elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if int(c) not in self.categories:
                    raise ValueError(
                        f"unknown category id {int(c)}; valid ids: {', '.join(map(str, sorted(self.categories)))}"
                    )
                ids.append(int(c))
            else:
                raise TypeError(f"classes must be names (str) or category ids (int), got {c!r}")
        return sorted(set(ids))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"CocoDataset(images={len(self)}, annotations={len(self.coco.anns)}, "
            f"classes={len(self.class_ids)}/{len(self.categories)}, images_dir='{self.images_dir}')"
        )

    def _image_id(self, index: int) -> int:
        n = len(self.image_ids)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return self.image_ids[index]

    def _annotations(self, image_id: int) -> List[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, []) if int(a["category_id"]) in self._class_set]

    def image_size(self, index: int) -> Tuple[int, int]:
        """``(height, width)`` from the JSON, without decoding the image."""
        info = self.coco.imgs[self._image_id(index)]
        return int(info["height"]), int(info["width"])

    def targets(self, index: int) -> Dict[str, torch.Tensor]:
        """Ground truth of image ``index`` without decoding it.

        Returns:
            ``{"boxes": Tensor[M, 4] float32 xyxy, "labels": Tensor[M] int64 category ids,
            "iscrowd": Tensor[M] bool}``, filtered by ``classes``.
        """
        anns = self._annotations(self._image_id(index))
        if anns:
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).float()
        else:
            boxes = torch.zeros(0, 4)
        labels = torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64)
        iscrowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool)
        return {"boxes": boxes, "labels": labels, "iscrowd": iscrowd}

    def __getitem__(self, index: int) -> CocoSample:
        image_id = self._image_id(index)
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = _read_image(path)
        expected = (int(info["height"]), int(info["width"]))
        if image.shape[:2] != expected:
            raise ValueError(
                f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but the annotations say "
                f"{expected[0]}x{expected[1]}"
            )
        t = self.targets(index)
        return CocoSample(image, image_id, str(info["file_name"]), t["boxes"], t["labels"], t["iscrowd"], expected)

    def iter_images(self) -> Iterator[CocoSample]:
        """Yield every sample in ``image_ids`` order."""
        for i in range(len(self)):
            yield self[i]

    def foreground_mask(self, index: int, source: str = "masks") -> np.ndarray:
        """Union of the objects of image ``index`` as ``np.ndarray[H, W]`` bool.

        Args:
            source: ``"masks"`` rasterizes instance polygons / RLE (annotations without a
                segmentation fall back to their box); ``"boxes"`` fills each box, covering the
                pixels whose area the box overlaps (rows ``floor(y1)..ceil(y2)-1``).

        Crowd regions are included; only ``classes`` count.
        """
        if source not in ("masks", "boxes"):
            raise ValueError(f"source must be 'masks' or 'boxes', got {source!r}")
        image_id = self._image_id(index)
        h, w = self.image_size(index)
        mask = np.zeros((h, w), dtype=bool)
        rles = []
        for ann in self._annotations(image_id):
            if source == "masks" and ann.get("segmentation"):
                rles.append(self.coco.annToRLE(ann))
            else:
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                r0, r1 = max(0, math.floor(y)), min(h, math.ceil(y + bh))
                c0, c1 = max(0, math.floor(x)), min(w, math.ceil(x + bw))
                mask[r0:r1, c0:c1] = True
        if rles:
            with warnings.catch_warnings():
                # pycocotools 2.0.11's decode trips numpy 2's __array__(copy=...) deprecation.
                warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
                mask |= mask_utils.decode(mask_utils.merge(rles, intersect=0)).astype(bool)
        return mask

    def label_map(self, model_names: Union[Dict[int, str], Sequence[str]]) -> Dict[int, int]:
        """Map a model's class ids to this dataset's category ids.

        Names are matched exactly. If some do not match but the model has as many classes as
        the dataset has categories, class ids are paired with category ids in sorted order
        (e.g. YOLO's 0..79 with COCO's 1..90), with a warning.

        Raises:
            ValueError: names do not all match and the class counts differ.
        """
        if isinstance(model_names, (list, tuple)):
            model_names = dict(enumerate(model_names))
        by_name = {name: cid for cid, name in self.categories.items()}
        unmatched = {k: v for k, v in model_names.items() if v not in by_name}
        if not unmatched:
            return {int(k): by_name[v] for k, v in model_names.items()}
        if len(model_names) == len(self.categories):
            warnings.warn(
                f"{len(unmatched)} model class name(s) not in the dataset (e.g. "
                f"{next(iter(unmatched.values()))!r}); pairing class ids with category ids in sorted order",
                stacklevel=2,
            )
            return {int(k): cid for k, cid in zip(sorted(model_names), sorted(self.categories))}
        shown = ", ".join(f"{k}: {v!r}" for k, v in list(unmatched.items())[:10])
        raise ValueError(
            f"cannot map model classes to dataset categories: {len(unmatched)} of {len(model_names)} "
            f"model class names are not dataset categories ({shown}{', ...' if len(unmatched) > 10 else ''}), "
            f"and the model has {len(model_names)} classes while the dataset has {len(self.categories)} "
            f"categories, so they cannot be paired in order"
        )
