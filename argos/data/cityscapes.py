"""Cityscapes ``gtFine`` instance and semantic labels.

Expected layout (the official one)::

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png   16-bit
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      8-bit (semantic only)

``split`` is ``train``, ``val`` or ``test``. A pixel of ``*_instanceIds.png`` holds
``label_id * 1000 + k`` for the ``k``-th instance of a class, or the bare label id (< 1000)
for stuff and for crowd regions (a group of cars drawn as one polygon).

The dataset yields :class:`argos.data.coco.CocoSample`-compatible samples and builds a
pycocotools ground truth (``.coco``), so ``argos bench`` scores it like COCO. Boxes are
``xyxy`` pixels covering whole pixels (``x2 = last column + 1``). CityPersons pedestrian boxes
on the same images are in :mod:`argos.data.citypersons`.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from argos._deprecation import moved_names
from argos.data.coco import CocoSample, _read_image
from argos.structures import SegmentationMap

__all__ = [
    "CityscapesLabel", "LABELS", "INSTANCE_CLASSES", "TRAIN_CLASSES", "IGNORE_TRAIN_ID", "label_ids_to_train_ids",
    "CityscapesInstance", "decode_instance_ids", "CityscapesSample", "CityscapesDataset",
]

PathLike = Union[str, os.PathLike]
ClassSpec = Union[str, int, Sequence[Union[str, int]], None]


class CityscapesLabel(NamedTuple):
    """One row of the official Cityscapes label table."""

    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool


# The official table (cityscapesScripts ``labels.py``): 34 labels plus the license plate.
LABELS: Tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled", 0, 255, "void", False, True),
    ("ego vehicle", 1, 255, "void", False, True),
    ("rectification border", 2, 255, "void", False, True),
    ("out of roi", 3, 255, "void", False, True),
    ("static", 4, 255, "void", False, True),
    ("dynamic", 5, 255, "void", False, True),
    ("ground", 6, 255, "void", False, True),
    ("road", 7, 0, "flat", False, False),
    ("sidewalk", 8, 1, "flat", False, False),
    ("parking", 9, 255, "flat", False, True),
    ("rail track", 10, 255, "flat", False, True),
    ("building", 11, 2, "construction", False, False),
    ("wall", 12, 3, "construction", False, False),
    ("fence", 13, 4, "construction", False, False),
    ("guard rail", 14, 255, "construction", False, True),
    ("bridge", 15, 255, "construction", False, True),
    ("tunnel", 16, 255, "construction", False, True),
    ("pole", 17, 5, "object", False, False),
    ("polegroup", 18, 255, "object", False, True),
    ("traffic light", 19, 6, "object", False, False),
    ("traffic sign", 20, 7, "object", False, False),
    ("vegetation", 21, 8, "nature", False, False),
    ("terrain", 22, 9, "nature", False, False),
    ("sky", 23, 10, "sky", False, False),
    ("person", 24, 11, "human", True, False),
    ("rider", 25, 12, "human", True, False),
    ("car", 26, 13, "vehicle", True, False),
    ("truck", 27, 14, "vehicle", True, False),
    ("bus", 28, 15, "vehicle", True, False),
    ("caravan", 29, 255, "vehicle", True, True),
    ("trailer", 30, 255, "vehicle", True, True),
    ("train", 31, 16, "vehicle", True, False),
    ("motorcycle", 32, 17, "vehicle", True, False),
    ("bicycle", 33, 18, "vehicle", True, False),
    ("license plate", -1, -1, "vehicle", False, True),
))
_BY_ID: Dict[int, CityscapesLabel] = {l.id: l for l in LABELS}
_BY_NAME: Dict[str, CityscapesLabel] = {l.name: l for l in LABELS}
# Classes whose objects carry instance ids and are evaluated (caravan/trailer are ignored in eval).
INSTANCE_CLASSES: Tuple[str, ...] = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
_HAS_INSTANCES: Tuple[str, ...] = tuple(l.name for l in LABELS if l.has_instances)
# The 19 evaluated semantic classes, indexed by train id.
TRAIN_CLASSES: Tuple[str, ...] = tuple(l.name for l in sorted(LABELS, key=lambda l: l.train_id)
                                       if 0 <= l.train_id < 255)
IGNORE_TRAIN_ID = 255
_RIDERS = ("rider", "person", "ignore")

_TRAIN_ID_LUT = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
for _l in LABELS:
    if _l.id >= 0:
        _TRAIN_ID_LUT[_l.id] = _l.train_id if _l.train_id >= 0 else IGNORE_TRAIN_ID


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a ``*_labelIds.png`` array (np.ndarray[H, W] int) to train ids (np.ndarray[H, W] uint8).

    The 19 evaluated classes get 0..18 (:data:`TRAIN_CLASSES`); every other id, including
    values outside the table, gets :data:`IGNORE_TRAIN_ID` (255).
    """
    label_ids = np.asarray(label_ids)
    if label_ids.ndim != 2:
        raise ValueError(f"label ids must be a 2-D array, got shape {label_ids.shape}")
    ids = label_ids.astype(np.int64)
    out = np.full(ids.shape, IGNORE_TRAIN_ID, dtype=np.uint8)
    ok = (ids >= 0) & (ids < 256)
    out[ok] = _TRAIN_ID_LUT[ids[ok]]
    return out


def _read_png(path: Path, what: str, dtypes: Tuple[type, ...]) -> np.ndarray:
    """Decode a single-channel label PNG at its stored bit depth."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ValueError(f"could not decode {what} (corrupt or not a PNG): {path}")
    if arr.ndim != 2 or arr.dtype.type not in dtypes:
        raise ValueError(f"{path}: expected a single-channel {' or '.join(np.dtype(d).name for d in dtypes)} "
                         f"{what}, got shape {arr.shape} {arr.dtype}")
    return arr


def _mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` box of the True pixels, covering whole pixels."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _fill_boxes(boxes: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """Pixels whose area a box overlaps (rows ``floor(y1)..ceil(y2)-1``), as in CocoDataset."""
    h, w = size
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in boxes.tolist():
        r0, r1 = max(0, math.floor(y1)), min(h, math.ceil(y2))
        c0, c1 = max(0, math.floor(x1)), min(w, math.ceil(x2))
        mask[r0:r1, c0:c1] = True
    return mask


@dataclass
class CityscapesInstance:
    """One object (or crowd region) of an ``*_instanceIds.png``.

    Args:
        label_id (int): Cityscapes label id (24 = person, 26 = car, ...).
        name (str): label name.
        mask (np.ndarray[H, W] bool): its pixels.
        box (np.ndarray[4] float32): ``xyxy`` pixels, ``x2``/``y2`` one past the last pixel.
        crowd (bool): a group region without instance index (value < 1000).
        value (int): the pixel value in the PNG.
    """

    label_id: int
    name: str
    mask: np.ndarray
    box: np.ndarray
    crowd: bool
    value: int


def _resolve_instance_classes(classes: ClassSpec) -> List[int]:
    """Cityscapes class names / label ids with instances -> sorted label ids."""
    if classes is None:
        classes = INSTANCE_CLASSES
    if isinstance(classes, (str, int)):
        classes = [classes]
    if len(classes) == 0:
        raise ValueError("classes is empty; pass None for the default instance classes")
    valid = ", ".join(f"{n} ({_BY_NAME[n].id})" for n in _HAS_INSTANCES)
    ids = set()
    for c in classes:
        if isinstance(c, str):
            label = _BY_NAME.get(c)
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            label = _BY_ID.get(int(c))
        else:
            raise TypeError(f"classes must be names (str) or label ids (int), got {c!r}")
        if label is None or not label.has_instances:
            raise ValueError(f"unknown Cityscapes instance class {c!r}; valid: {valid}")
        ids.add(label.id)
    return sorted(ids)


def decode_instance_ids(instance_ids: np.ndarray, classes: ClassSpec = None) -> List[CityscapesInstance]:
    """Split an ``*_instanceIds.png`` array into objects and crowd regions of ``classes``.

    Args:
        instance_ids (np.ndarray[H, W] int): the PNG's values.
        classes: class names or label ids with instances (default :data:`INSTANCE_CLASSES`).

    Returns:
        Instances ordered by pixel value (crowd regions, value < 1000, come first).
    """
    instance_ids = np.asarray(instance_ids)
    if instance_ids.ndim != 2:
        raise ValueError(f"instance ids must be a 2-D array, got shape {instance_ids.shape}")
    keep = set(_resolve_instance_classes(classes))
    out = []
    for value in np.unique(instance_ids).tolist():
        label_id = value // 1000 if value >= 1000 else value
        if label_id not in keep:
            continue
        mask = instance_ids == value
        out.append(CityscapesInstance(int(label_id), _BY_ID[label_id].name, mask, _mask_box(mask),
                                      value < 1000, int(value)))
    return out


@dataclass
class CityscapesSample(CocoSample):
    """A :class:`CocoSample` plus the instance masks.

    Args:
        masks (Tensor[M, H, W] bool): one mask per box (crowd regions included).
    """

    masks: Optional[torch.Tensor] = None


def _image_files(images_dir: Path) -> List[Path]:
    files = sorted(images_dir.glob("*/*_leftImg8bit.png"))
    if not files:
        raise ValueError(f"no {{city}}/*_leftImg8bit.png files in {images_dir} (expected ROOT/leftImg8bit/{{split}})")
    return files


def _stem(path: Path) -> str:
    """``frankfurt_000000_000294`` from any Cityscapes file name."""
    parts = path.name.split("_")
    return "_".join(parts[:3])


def _default_gt_dir(images_dir: Path, folder: str) -> Path:
    # ROOT/leftImg8bit/{split} -> ROOT/{folder}/{split}
    if images_dir.parent.name != "leftImg8bit":
        raise ValueError(f"cannot infer the {folder} folder from {images_dir}: it is not ROOT/leftImg8bit/{{split}}; "
                         f"pass the annotations folder ROOT/{folder}/{{split}} explicitly")
    return images_dir.parent.parent / folder / images_dir.name


class CityscapesDataset:
    """Cityscapes ``leftImg8bit`` images with their ``gtFine`` instance and semantic labels.

    Args:
        images_dir: ``ROOT/leftImg8bit/{split}`` (city subfolders inside).
        gt_dir: ``ROOT/gtFine/{split}``; default: inferred from ``images_dir``.
        classes: instance classes that count as objects, by name or label id (default
            :data:`INSTANCE_CLASSES`: person, rider, car, truck, bus, train, motorcycle, bicycle).
        riders: ``"rider"`` keeps riders as their own class; ``"person"`` scores them as persons
            (COCO labels people on bikes ``person``); ``"ignore"`` makes them person-labelled
            ignore regions (``iscrowd``). The last two need ``person`` in ``classes``.
        limit: first ``limit`` images only (sorted by city and file name).

    Category ids are Cityscapes label ids (``categories``: id -> name). Image ids are 1..N in
    file order.

    Raises:
        FileNotFoundError: a folder, or an image's ``*_gtFine_instanceIds.png``, is missing.
        ValueError: no images, an unknown class, or a bad ``riders``.
    """

    def __init__(self, images_dir: PathLike, gt_dir: Optional[PathLike] = None, classes: ClassSpec = None,
                 riders: str = "rider", limit: Optional[int] = None) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images directory not found: {self.images_dir}")
        self.gt_dir = Path(gt_dir) if gt_dir is not None else _default_gt_dir(self.images_dir, "gtFine")
        if not self.gt_dir.is_dir():
            raise FileNotFoundError(f"gtFine directory not found: {self.gt_dir} (expected ROOT/gtFine/{{split}})")
        if riders not in _RIDERS:
            raise ValueError(f"riders must be one of {', '.join(_RIDERS)}, got {riders!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.label_ids: List[int] = _resolve_instance_classes(classes)
        person, rider = _BY_NAME["person"].id, _BY_NAME["rider"].id
        if riders != "rider" and person not in self.label_ids:
            raise ValueError(f"riders={riders!r} needs 'person' among the classes")
        self.riders = riders
        if riders != "rider" and rider not in self.label_ids:
            self.label_ids = sorted(self.label_ids + [rider])  # decoded, then relabelled as person
        # Categories as the detector is scored: riders merged/ignored leave the rider category out.
        self.class_ids: List[int] = [i for i in self.label_ids if riders == "rider" or i != rider]
        self.categories: Dict[int, str] = {i: _BY_ID[i].name for i in self.class_ids}

        files = _image_files(self.images_dir)
        self.files: List[Path] = files if limit is None else files[:limit]
        self.image_ids: List[int] = list(range(1, len(self.files) + 1))
        missing = [p for p in self.files if not self._gt_path(p, "instanceIds").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) have no instanceIds PNG, e.g. "
                                    f"{self._gt_path(missing[0], 'instanceIds')}")
        self._targets: Dict[int, Dict[str, torch.Tensor]] = {}
        self._sizes: Dict[int, Tuple[int, int]] = {}
        self._coco: Optional[COCO] = None

    @classmethod
    def from_root(cls, root: PathLike, split: str = "val", **kwargs) -> "CityscapesDataset":
        """``ROOT/leftImg8bit/{split}`` with ``ROOT/gtFine/{split}``."""
        root = Path(root)
        return cls(root / "leftImg8bit" / split, root / "gtFine" / split, **kwargs)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"CityscapesDataset(images={len(self)}, classes={list(self.categories.values())}, "
                f"images_dir='{self.images_dir}')")

    def _index(self, index: int) -> int:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return index % n

    def _gt_path(self, image: Path, kind: str) -> Path:
        return self.gt_dir / image.parent.name / f"{_stem(image)}_gtFine_{kind}.png"

    def file_name(self, index: int) -> str:
        """``{city}/{file}`` relative to ``images_dir``."""
        p = self.files[self._index(index)]
        return f"{p.parent.name}/{p.name}"

    def instance_ids(self, index: int) -> np.ndarray:
        """The raw ``*_instanceIds.png`` (np.ndarray[H, W] int32)."""
        path = self._gt_path(self.files[self._index(index)], "instanceIds")
        # Official files are 16-bit; 8-bit ones can only hold stuff ids but are still valid.
        arr = _read_png(path, "instanceIds PNG", (np.uint16, np.uint8)).astype(np.int32)
        self._sizes[self._index(index)] = arr.shape
        return arr

    def instances(self, index: int) -> List[CityscapesInstance]:
        """Objects and crowd regions of ``classes`` in image ``index`` (riders as given, not relabelled)."""
        return decode_instance_ids(self.instance_ids(index), self.label_ids)

    def _relabel(self, inst: CityscapesInstance) -> Tuple[int, bool]:
        """(category id, iscrowd) of an instance after the ``riders`` rule."""
        if inst.name == "rider" and self.riders != "rider":
            return _BY_NAME["person"].id, inst.crowd or self.riders == "ignore"
        return inst.label_id, inst.crowd

    def _decode(self, index: int) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        insts = self.instances(index)
        h, w = self._sizes[self._index(index)]
        cats = [self._relabel(x) for x in insts]
        t = {
            "boxes": torch.from_numpy(np.stack([x.box for x in insts])) if insts else torch.zeros(0, 4),
            "labels": torch.tensor([c for c, _ in cats], dtype=torch.int64),
            "iscrowd": torch.tensor([crowd for _, crowd in cats], dtype=torch.bool),
        }
        masks = (torch.from_numpy(np.stack([x.mask for x in insts])) if insts
                 else torch.zeros(0, h, w, dtype=torch.bool))
        self._targets[self._index(index)] = t
        return t, masks

    def targets(self, index: int) -> Dict[str, torch.Tensor]:
        """``{"boxes": Tensor[M, 4] float32 xyxy, "labels": Tensor[M] int64 label ids, "iscrowd": Tensor[M] bool}``.

        Decodes the instanceIds PNG once; later calls are cached.
        """
        i = self._index(index)
        if i not in self._targets:
            self._decode(i)
        return self._targets[i]

    def image_size(self, index: int) -> Tuple[int, int]:
        """``(height, width)`` of the label PNG."""
        i = self._index(index)
        if i not in self._sizes:
            self.targets(i)
        return self._sizes[i]

    def __getitem__(self, index: int) -> CityscapesSample:
        i = self._index(index)
        path = self.files[i]
        image = _read_image(path)
        t, masks = self._decode(i)
        size = self._sizes[i]
        if image.shape[:2] != size:
            raise ValueError(f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but its instanceIds PNG is "
                             f"{size[0]}x{size[1]}")
        return CityscapesSample(image, self.image_ids[i], self.file_name(i), t["boxes"], t["labels"], t["iscrowd"],
                                size, masks)

    def foreground_mask(self, index: int, source: str = "masks") -> np.ndarray:
        """Union of the objects of ``classes`` (crowd regions included) as np.ndarray[H, W] bool.

        Args:
            source: ``"masks"`` (instance pixels) or ``"boxes"`` (filled instance boxes).
        """
        if source not in ("masks", "boxes"):
            raise ValueError(f"source must be 'masks' or 'boxes', got {source!r}")
        if source == "boxes":
            return _fill_boxes(self.targets(index)["boxes"], self.image_size(index))
        ids = self.instance_ids(index)
        labels = np.where(ids >= 1000, ids // 1000, ids)
        return np.isin(labels, self.label_ids)

    def semantic(self, index: int) -> SegmentationMap:
        """Train-id map of ``*_gtFine_labelIds.png`` (19 classes, 255 = ignore)."""
        path = self._gt_path(self.files[self._index(index)], "labelIds")
        ids = _read_png(path, "labelIds PNG", (np.uint8, np.uint16))
        return SegmentationMap(torch.from_numpy(label_ids_to_train_ids(ids).astype(np.int64)),
                               ignore_index=IGNORE_TRAIN_ID)

    @property
    def coco(self) -> COCO:
        """pycocotools ground truth of all (``limit``-ed) images; decodes every instanceIds PNG once."""
        if self._coco is None:
            images, anns = [], []
            for i, image_id in enumerate(self.image_ids):
                t, (h, w) = self.targets(i), self.image_size(i)
                images.append({"id": image_id, "file_name": self.file_name(i), "height": h, "width": w})
                for box, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(), t["iscrowd"].tolist()):
                    x1, y1, x2, y2 = box
                    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(label),
                                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                 "iscrowd": int(crowd)})
            self._coco = _make_coco(images, anns, self.categories)
        return self._coco

    def label_map(self, model_names: Union[Dict[int, str], Sequence[str]]) -> Dict[int, int]:
        """Model class id -> Cityscapes label id, for model classes named like a selected class.

        COCO's ``person, bicycle, car, motorcycle, bus, train, truck`` share Cityscapes' names,
        so a COCO detector maps by name; Cityscapes' ``rider`` has no COCO class (see
        ``riders``). Model classes without a counterpart are left out (their detections are
        not scored).

        Raises:
            ValueError: no model class matches a selected class.
        """
        return _map_by_name(model_names, {name: cid for cid, name in self.categories.items()})


def _make_coco(images: List[dict], anns: List[dict], categories: Dict[int, str]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": k, "name": v} for k, v in sorted(categories.items())]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _map_by_name(model_names: Union[Dict[int, str], Sequence[str]], targets: Dict[str, int]) -> Dict[int, int]:
    if isinstance(model_names, (list, tuple)):
        model_names = dict(enumerate(model_names))
    out = {int(k): targets[v] for k, v in model_names.items() if v in targets}
    if not out:
        raise ValueError(f"no model class maps to a dataset class ({', '.join(sorted(targets))}); "
                         f"model classes: {', '.join(list(model_names.values())[:20])}")
    return out


# Names that lived here until the CityPersons split; one release of grace.
moved_names(__name__, "argos.data.citypersons",
            ("CITYPERSONS_LABELS", "CityPersonsSubset", "SUBSETS", "CityPersonsSample", "CityPersonsDataset"))
