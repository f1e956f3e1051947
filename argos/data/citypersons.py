"""CityPersons pedestrian boxes on Cityscapes images.

Annotations come either as the per-image files
``ROOT/gtBboxCityPersons/{split}/{city}/{city}_{seq}_{frame}_gtBboxCityPersons.json`` or as one
COCO-style file (the conversion Pedestron / CSP evaluate on, e.g. ``val_gt.json``): ``images``
with ``file_name`` (or ``im_name``) such as
``frankfurt/frankfurt_000000_000294_leftImg8bit.png`` plus ``height``/``width``; ``annotations``
with ``bbox`` ``[x, y, w, h]``, ``category_id`` (1 = pedestrian), ``ignore``/``iscrowd`` and
optional ``vis_bbox``, ``height``, ``vis_ratio``.

The dataset yields :class:`argos.data.coco.CocoSample`-compatible samples (``iscrowd`` is the
ignore flag) and builds a pycocotools ground truth, so ``argos bench`` scores it like COCO.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from pycocotools.coco import COCO

from argos.data.cityscapes import ClassSpec, _fill_boxes, _make_coco, _map_by_name, _stem
from argos.data.coco import CocoSample, _read_image

__all__ = ["CITYPERSONS_LABELS", "CityPersonsSubset", "SUBSETS", "CityPersonsSample", "CityPersonsDataset"]

PathLike = Union[str, os.PathLike]


# Labels of the per-image files; only pedestrians are objects, the rest are ignore regions.
CITYPERSONS_LABELS: Tuple[str, ...] = ("pedestrian", "rider", "sitting person", "person (other)", "person group",
                                       "ignore")
PEDESTRIAN = 1


@dataclass(frozen=True)
class CityPersonsSubset:
    """Pedestrians counted as objects; the others become ignore regions (as in the official eval).

    Args:
        min_height, max_height: full-box height range in pixels (inclusive).
        min_visibility, max_visibility: visible-box area / full-box area range (inclusive).
    """

    min_height: float = 0.0
    max_height: float = math.inf
    min_visibility: float = 0.0
    max_visibility: float = 1.0

    def contains(self, height: np.ndarray, visibility: np.ndarray) -> np.ndarray:
        return ((height >= self.min_height) & (height <= self.max_height)
                & (visibility >= self.min_visibility) & (visibility <= self.max_visibility))


# The evaluation setups of the CityPersons benchmark.
SUBSETS: Dict[str, CityPersonsSubset] = {
    "reasonable": CityPersonsSubset(50, math.inf, 0.65, 1.0),
    "small": CityPersonsSubset(50, 75, 0.65, 1.0),
    "heavy": CityPersonsSubset(50, math.inf, 0.2, 0.65),
    "all": CityPersonsSubset(20, math.inf, 0.2, 1.0),
}


@dataclass
class CityPersonsSample(CocoSample):
    """A :class:`CocoSample` whose ``iscrowd`` is the ignore flag, plus CityPersons fields.

    Args:
        visible_boxes (Tensor[M, 4] float32): ``xyxy`` of the visible part.
        heights (Tensor[M] float32): full-box heights in pixels.
        visibility (Tensor[M] float32): visible area / full area, in [0, 1].
        names (list[str]): original labels (``"pedestrian"``, ``"rider"``, ...).
    """

    visible_boxes: Optional[torch.Tensor] = None
    heights: Optional[torch.Tensor] = None
    visibility: Optional[torch.Tensor] = None
    names: Optional[List[str]] = None

    @property
    def ignore(self) -> torch.Tensor:
        return self.iscrowd


@dataclass
class _Record:
    image_id: int
    file_name: str
    size: Tuple[int, int]
    boxes: np.ndarray  # [M, 4] xywh
    vis_boxes: np.ndarray  # [M, 4] xywh
    names: List[str]
    ignore: np.ndarray  # [M] bool, from the file
    heights: np.ndarray
    visibility: np.ndarray


def _xywh_list(value, where: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{where} must be [x, y, w, h], got {value!r}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be [x, y, w, h] numbers, got {value!r}") from err


def _visibility(full: np.ndarray, vis: np.ndarray) -> np.ndarray:
    area = full[:, 2] * full[:, 3]
    out = np.ones(len(full), dtype=np.float32)
    np.divide(vis[:, 2] * vis[:, 3], area, out=out, where=area > 0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _load_json(path: Path) -> object:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _records_from_coco(path: Path) -> List[_Record]:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path} is not a COCO-style CityPersons file: needs 'images' and 'annotations' lists")
    by_image: Dict[int, List[dict]] = {}
    for n, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "bbox" not in a:
            raise ValueError(f"{path}: annotations[{n}] must be an object with 'image_id' and 'bbox'")
        by_image.setdefault(int(a["image_id"]), []).append(a)
    cat_names = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", []) if "id" in c}
    records = []
    for n, im in enumerate(data["images"]):
        name = im.get("file_name", im.get("im_name")) if isinstance(im, dict) else None
        if name is None or not all(k in im for k in ("id", "height", "width")):
            raise ValueError(f"{path}: images[{n}] needs 'id', 'file_name' (or 'im_name'), 'height' and 'width'")
        anns = by_image.get(int(im["id"]), [])
        where = f"{path}: image {im['id']}"
        full = np.array([_xywh_list(a["bbox"], f"{where} bbox") for a in anns], dtype=np.float32).reshape(-1, 4)
        vis = np.array([_xywh_list(a.get("vis_bbox", a["bbox"]), f"{where} vis_bbox") for a in anns],
                       dtype=np.float32).reshape(-1, 4)
        visibility = _visibility(full, vis)
        for k, a in enumerate(anns):
            if "vis_ratio" in a:
                visibility[k] = float(a["vis_ratio"])
        heights = np.array([float(a.get("height", b[3])) for a, b in zip(anns, full)], dtype=np.float32)
        cats = [int(a.get("category_id", PEDESTRIAN)) for a in anns]
        ignore = np.array([c != PEDESTRIAN or bool(a.get("ignore", 0)) or bool(a.get("iscrowd", 0))
                           for a, c in zip(anns, cats)], dtype=bool)
        names = [cat_names.get(c, "pedestrian" if c == PEDESTRIAN else f"category {c}") for c in cats]
        records.append(_Record(int(im["id"]), str(name), (int(im["height"]), int(im["width"])), full, vis, names,
                               ignore, heights, visibility))
    return sorted(records, key=lambda r: r.image_id)


def _records_from_folder(folder: Path) -> List[_Record]:
    files = sorted(folder.glob("*/*_gtBboxCityPersons.json"))
    if not files:
        raise ValueError(f"no {{city}}/*_gtBboxCityPersons.json files in {folder} "
                         "(expected ROOT/gtBboxCityPersons/{split})")
    records = []
    for image_id, path in enumerate(files, start=1):
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list) \
                or "imgHeight" not in data or "imgWidth" not in data:
            raise ValueError(f"{path} is not a gtBboxCityPersons file: needs 'imgHeight', 'imgWidth' and 'objects'")
        objs = data["objects"]
        for n, o in enumerate(objs):
            if not isinstance(o, dict) or "label" not in o or "bbox" not in o:
                raise ValueError(f"{path}: objects[{n}] must have 'label' and 'bbox'")
            if o["label"] not in CITYPERSONS_LABELS:
                raise ValueError(f"{path}: objects[{n}] has unknown label {o['label']!r}; "
                                 f"valid: {', '.join(CITYPERSONS_LABELS)}")
        full = np.array([_xywh_list(o["bbox"], f"{path} bbox") for o in objs], dtype=np.float32).reshape(-1, 4)
        vis = np.array([_xywh_list(o.get("bboxVis", o["bbox"]), f"{path} bboxVis") for o in objs],
                       dtype=np.float32).reshape(-1, 4)
        names = [str(o["label"]) for o in objs]
        file_name = f"{path.parent.name}/{_stem(path)}_leftImg8bit.png"
        records.append(_Record(image_id, file_name, (int(data["imgHeight"]), int(data["imgWidth"])), full, vis,
                               names, np.array([n != "pedestrian" for n in names], dtype=bool), full[:, 3].copy(),
                               _visibility(full, vis)))
    return records


def _xyxy(xywh: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(xywh, dtype=np.float32)).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)


class CityPersonsDataset:
    """CityPersons pedestrian boxes on Cityscapes ``leftImg8bit`` images.

    Args:
        images_dir: ``ROOT/leftImg8bit/{split}``.
        annotations: a COCO-style JSON file (e.g. Pedestron's ``val_gt.json``) or the
            ``ROOT/gtBboxCityPersons/{split}`` folder of per-image files.
        subset: ``"reasonable"`` (height >= 50 px, visibility >= 0.65), ``"small"``,
            ``"heavy"``, ``"all"``, a :class:`CityPersonsSubset`, or None (every pedestrian).
            Pedestrians outside it become ignore regions, as in the official evaluation.
        classes: None or ``"pedestrian"`` (the one category, id 1; ``"person"`` is accepted).
        limit: first ``limit`` images (by image id) only.

    Every box is kept; non-pedestrian labels (riders, sitting persons, groups, ``ignore``) and
    boxes flagged ``ignore``/``iscrowd`` are ignore regions: ``iscrowd`` True, category 1, so
    pycocotools and :func:`argos.metrics.detection.precision_recall` neither reward nor punish
    detections on them.

    Raises:
        FileNotFoundError: a folder, the JSON or an image file is missing.
        ValueError: malformed JSON, an unknown subset or class.
    """

    def __init__(self, images_dir: PathLike, annotations: PathLike, subset: Union[str, CityPersonsSubset, None] = None,
                 classes: ClassSpec = None, limit: Optional[int] = None) -> None:
        self.images_dir = Path(images_dir)
        self.annotations_path = Path(annotations)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images directory not found: {self.images_dir}")
        if not self.annotations_path.exists():
            raise FileNotFoundError(f"CityPersons annotations not found: {self.annotations_path}")
        if isinstance(subset, str):
            if subset not in SUBSETS:
                raise ValueError(f"unknown CityPersons subset {subset!r}; valid: {', '.join(SUBSETS)}")
            subset = SUBSETS[subset]
        elif subset is not None and not isinstance(subset, CityPersonsSubset):
            raise TypeError(f"subset must be a name, a CityPersonsSubset or None, got {subset!r}")
        self.subset: Optional[CityPersonsSubset] = subset
        if classes is not None:
            for c in [classes] if isinstance(classes, (str, int)) else classes:
                if c not in ("pedestrian", "person", PEDESTRIAN):
                    raise ValueError(f"unknown CityPersons class {c!r}; valid: pedestrian (1)")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.categories: Dict[int, str] = {PEDESTRIAN: "pedestrian"}
        self.class_ids: List[int] = [PEDESTRIAN]

        if self.annotations_path.is_dir():
            records = _records_from_folder(self.annotations_path)
        else:
            records = _records_from_coco(self.annotations_path)
        self._records = records if limit is None else records[:limit]
        self.image_ids: List[int] = [r.image_id for r in self._records]
        self._paths = [self._image_path(r.file_name) for r in self._records]
        missing = [p for p in self._paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) named by the annotations are missing, e.g. {missing[0]}")
        self._coco: Optional[COCO] = None

    def _image_path(self, file_name: str) -> Path:
        direct = self.images_dir / file_name
        if direct.is_file() or "/" in file_name:
            return direct
        # Some conversions store bare names; Cityscapes files start with their city.
        return self.images_dir / file_name.split("_")[0] / file_name

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"CityPersonsDataset(images={len(self)}, subset={self.subset}, images_dir='{self.images_dir}')"

    def _index(self, index: int) -> int:
        n = len(self._records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return index % n

    def image_size(self, index: int) -> Tuple[int, int]:
        """``(height, width)`` from the annotations."""
        return self._records[self._index(index)].size

    def ignore(self, index: int) -> torch.Tensor:
        """Tensor[M] bool: ignore regions after the file's flags and ``subset``."""
        r = self._records[self._index(index)]
        out = r.ignore.copy()
        if self.subset is not None:
            out |= ~self.subset.contains(r.heights, r.visibility)
        return torch.from_numpy(out)

    def targets(self, index: int) -> Dict[str, torch.Tensor]:
        """``{"boxes": Tensor[M, 4] float32 xyxy, "labels": Tensor[M] int64 (all 1), "iscrowd": Tensor[M] bool}``;
        ``iscrowd`` is the ignore flag."""
        r = self._records[self._index(index)]
        return {"boxes": _xyxy(r.boxes), "labels": torch.full((len(r.boxes),), PEDESTRIAN, dtype=torch.int64),
                "iscrowd": self.ignore(index)}

    def __getitem__(self, index: int) -> CityPersonsSample:
        i = self._index(index)
        r, path = self._records[i], self._paths[i]
        image = _read_image(path)
        if image.shape[:2] != r.size:
            raise ValueError(f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but the annotations say "
                             f"{r.size[0]}x{r.size[1]}")
        t = self.targets(i)
        return CityPersonsSample(image, r.image_id, r.file_name, t["boxes"], t["labels"], t["iscrowd"], r.size,
                                 _xyxy(r.vis_boxes), torch.from_numpy(r.heights), torch.from_numpy(r.visibility),
                                 list(r.names))

    def foreground_mask(self, index: int, source: str = "boxes") -> np.ndarray:
        """Filled boxes (ignore regions included) as np.ndarray[H, W] bool.

        CityPersons has no masks, so ``source="masks"`` also fills the boxes.
        """
        if source not in ("masks", "boxes"):
            raise ValueError(f"source must be 'masks' or 'boxes', got {source!r}")
        return _fill_boxes(self.targets(index)["boxes"], self.image_size(index))

    @property
    def coco(self) -> COCO:
        """pycocotools ground truth of the (``limit``-ed) images; ignore regions are ``iscrowd``."""
        if self._coco is None:
            images, anns = [], []
            for i, r in enumerate(self._records):
                images.append({"id": r.image_id, "file_name": r.file_name, "height": r.size[0], "width": r.size[1]})
                for (x, y, w, h), crowd in zip(r.boxes.tolist(), self.ignore(i).tolist()):
                    anns.append({"id": len(anns) + 1, "image_id": r.image_id, "category_id": PEDESTRIAN,
                                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(crowd)})
            self._coco = _make_coco(images, anns, self.categories)
        return self._coco

    def label_map(self, model_names: Union[Dict[int, str], Sequence[str]]) -> Dict[int, int]:
        """Model classes named ``person`` or ``pedestrian`` -> 1; other classes are not scored."""
        return _map_by_name(model_names, {"person": PEDESTRIAN, "pedestrian": PEDESTRIAN})
