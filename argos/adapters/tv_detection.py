"""torchvision detection models (``torchvision.models.detection``) as argos adapters.

Supported families: ``GeneralizedRCNN`` (Faster, Mask and Keypoint R-CNN), ``RetinaNet``, ``FCOS``
and ``SSD`` (SSD300, SSDlite). Models are built with ``weights=None, weights_backbone=None``: this
module never downloads.

The model's own ``transform`` does the preprocessing (normalise, resize, pad to 32), so the
adapter's batch is the network input. :meth:`TorchvisionAdapter.forward` runs only the backbone
(FPN included): the stages after it need each image's size before batch padding, which a batch
tensor does not carry, so they run in :meth:`~TorchvisionAdapter.postprocess` with the metas,
exactly as the model's own ``forward`` chains them.

Labels: torchvision's COCO models predict COCO *category ids* (1..90, 0 = background, with the
ids COCO leaves unused, "N/A", in between). ``names`` maps the 80 real category ids to their
names; detections with an N/A id are dropped.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from argos.adapters.base import Adapter, check_batch, check_thresholds
from argos.adapters.yolov5 import LetterboxMeta
from argos.structures import Detections

__all__ = ["TorchvisionAdapter", "TorchvisionFeatures", "coco91_names"]


def coco91_names() -> Dict[int, str]:
    """COCO category id -> name as torchvision's COCO weights label them (80 ids in 1..90)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    categories = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # metadata only, no download
    return {i: c for i, c in enumerate(categories) if c not in ("__background__", "N/A")}


@dataclass
class TorchvisionFeatures:
    """What :meth:`TorchvisionAdapter.forward` returns.

    Attributes:
        batch (Tensor[B, 3, h, w]): the network input (the anchor generators need its shape).
        features (OrderedDict[str, Tensor]): backbone (+FPN) feature maps.
    """

    batch: torch.Tensor
    features: "OrderedDict[str, torch.Tensor]"


def _families():
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    return GeneralizedRCNN, RetinaNet, FCOS, SSD


def _num_classes(model: nn.Module) -> int:
    """Number of classes (background included) of a supported model."""
    rcnn, retina, fcos, ssd = _families()
    if isinstance(model, rcnn):
        return int(model.roi_heads.box_predictor.cls_score.out_features)
    if isinstance(model, (retina, fcos)):
        return int(model.head.classification_head.num_classes)
    return int(model.head.classification_head.num_columns)


def _thresholds_owner(model: nn.Module) -> nn.Module:
    """The module holding ``score_thresh``, ``nms_thresh`` and ``detections_per_img``."""
    rcnn = _families()[0]
    return model.roi_heads if isinstance(model, rcnn) else model


def _load_state_dict(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights not found: {os.fspath(path)}")
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    # torchvision's reference training scripts save {"model": state_dict, "optimizer": ...}.
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{os.fspath(path)} holds a {type(state).__name__}, not a state dict")
    model.load_state_dict(state)


def _roi_stages(model: nn.Module) -> List[Tuple[str, nn.Module, Tuple[int, int]]]:
    """R-CNN RoI heads as ``(kind, head + predictor, RoI size)``; kind is ``"box"`` or ``"det"``
    (mask / keypoint heads, which run on the final detections)."""
    if not isinstance(model, _families()[0]):
        return []
    h = model.roi_heads
    stages = [("box", h.box_roi_pool, h.box_head, h.box_predictor)]
    if h.has_mask():
        stages.append(("det", h.mask_roi_pool, h.mask_head, h.mask_predictor))
    if h.has_keypoint():
        stages.append(("det", h.keypoint_roi_pool, h.keypoint_head, h.keypoint_predictor))
    return [(kind, nn.Sequential(head, predictor), tuple(pool.output_size)) for kind, pool, head, predictor in stages]


class _CostProbe(nn.Module):
    """What :meth:`TorchvisionAdapter.flops` counts, as one forward on Tensor[1, 3, h, w]:
    backbone and dense heads, then the RoI heads on ``rois`` (box) and ``dets`` (mask /
    keypoint) zero RoIs."""

    def __init__(self, model: nn.Module, rois: int = 0, dets: int = 0) -> None:
        super().__init__()
        self.model, self.rois, self.dets = model, rois, dets
        self.stages = nn.ModuleList(s for _, s, _ in _roi_stages(model))
        self._roi = [(kind, size) for kind, _, size in _roi_stages(model)]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        m = self.model
        features = m.backbone(x)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        levels = list(features.values())
        if not self._roi:
            return list(m.head(levels).values())
        out = list(m.rpn.head(levels)[0])
        for stage, (kind, size) in zip(self.stages, self._roi):
            n = self.rois if kind == "box" else self.dets
            if n:
                r = stage(x.new_zeros(n, levels[0].shape[1], *size))
                out.extend(r if isinstance(r, tuple) else (r,))
        return out


class TorchvisionAdapter(Adapter):
    """Any ``torchvision.models.detection`` model.

    Args:
        model: a builder name (``"fasterrcnn_resnet50_fpn"``, ``"retinanet_resnet50_fpn"``,
            ``"maskrcnn_resnet50_fpn"``, ``"ssdlite320_mobilenet_v3_large"``, ...), built with random
            init, or a built model (``nn.Module``, put in eval mode; ``img_size``, ``conf`` and
            ``max_det`` are set on it).
        weights: local state dict (``.pth``) loaded into the model; never downloaded.
        img_size: long side of the network input, pixels: sets the transform's ``min_size`` and
            ``max_size`` to it, so that every image's long side is resized to exactly
            ``img_size`` (as YOLO letterboxing does; ``packed_crops`` assumes it). ``None`` keeps
            the model's resize (default 800/1333: short side 800, long side at most 1333) and
            ``img_size`` is its ``max_size``. Fixed-size models (SSD) only take their own size.
        conf: score threshold; ``None`` keeps the model's (0.05 for the COCO builders).
        max_det: detections kept per image; ``None`` keeps the model's.
        names: class id -> name; default: COCO names when the model has 91 classes, else
            ``"class_<id>"``. Detections whose label is not in ``names`` are dropped.
        device: where the model runs.
        **model_kwargs: passed to the builder (``num_classes``, ``min_size``, ...); only with a
            builder name.

    ``module`` is the model's backbone (FPN included): what :meth:`forward` runs and
    ``gather_scatter`` rewrites; the heads run in :meth:`postprocess`.
    """

    stride = 32

    def __init__(
        self,
        model: Union[str, nn.Module] = "fasterrcnn_resnet50_fpn",
        weights: Union[str, os.PathLike, None] = None,
        img_size: Optional[int] = None,
        conf: Optional[float] = None,
        max_det: Optional[int] = None,
        names: Optional[Mapping[int, str]] = None,
        device: Union[str, torch.device] = "cpu",
        **model_kwargs: Any,
    ) -> None:
        check_thresholds(conf=conf, max_det=max_det)
        if img_size is not None and img_size < self.stride:
            raise ValueError(f"img_size must be >= {self.stride}, got {img_size}")
        if img_size is not None and {"min_size", "max_size"} & set(model_kwargs):
            raise ValueError("give img_size or the builder's min_size/max_size, not both")
        net = self._build(model, model_kwargs)
        if not isinstance(net, _families()):
            kinds = ", ".join(f.__name__ for f in _families())
            raise TypeError(f"unsupported torchvision detector {type(net).__name__}; supported families: {kinds}")
        if weights is not None:
            _load_state_dict(net, weights)
        self.device = torch.device(device)
        self._model = net.to(self.device).eval()

        transform = net.transform
        if transform.fixed_size is not None:
            fixed = max(transform.fixed_size)
            if img_size is not None and img_size != fixed:
                raise ValueError(
                    f"{type(net).__name__} resizes every image to {transform.fixed_size}; img_size must be {fixed}"
                )
        elif img_size is not None:
            transform.min_size, transform.max_size = (int(img_size),), int(img_size)
        self.img_size = int(transform.max_size)
        # Batch padding is 0 after normalisation, i.e. the mean colour.
        self.pad_value = int(round(float(np.mean(transform.image_mean)) * 255))

        owner = _thresholds_owner(net)
        if conf is not None:
            owner.score_thresh = float(conf)
        if max_det is not None:
            owner.detections_per_img = int(max_det)
        if names is None:
            nc = _num_classes(net)
            names = coco91_names() if nc == 91 else {i: f"class_{i}" for i in range(1, nc)}
        self.names: Dict[int, str] = {int(k): str(v) for k, v in names.items()}

    @staticmethod
    def _build(model: Union[str, nn.Module], kwargs: Dict[str, Any]) -> nn.Module:
        if isinstance(model, nn.Module):
            if kwargs:
                raise ValueError(f"options {sorted(kwargs)} only apply when model is a builder name")
            return model
        if not isinstance(model, str):
            raise TypeError(f"model must be a torchvision builder name or an nn.Module, got {type(model).__name__}")
        import torchvision
        from torchvision.models import detection

        valid = torchvision.models.list_models(module=detection)
        if model not in valid:
            raise ValueError(f"unknown torchvision detection model {model!r}; valid: {', '.join(valid)}")
        if "weights_backbone" in kwargs:
            raise ValueError("weights_backbone is not an option here (nothing is downloaded); use weights=PATH")
        return torchvision.models.get_model(model, weights=None, weights_backbone=None, **kwargs)

    # ---- thresholds, as the model holds them ----

    @property
    def conf(self) -> float:
        return float(_thresholds_owner(self._model).score_thresh)

    @property
    def iou(self) -> float:
        """The model's NMS IoU threshold (``packed_crops`` merges crop duplicates with it)."""
        return float(_thresholds_owner(self._model).nms_thresh)

    @property
    def max_det(self) -> int:
        return int(_thresholds_owner(self._model).detections_per_img)

    # ---- Adapter API ----

    @property
    def model(self) -> nn.Module:
        """The whole torchvision model."""
        return self._model

    @property
    def module(self) -> nn.Module:
        return self._model.backbone

    @property
    def returns_masks(self) -> bool:  # type: ignore[override]
        """Mask R-CNN style models return instance masks."""
        heads = getattr(self._model, "roi_heads", None)
        return bool(heads is not None and heads.has_mask())

    def _to_tensors(self, images: Sequence[np.ndarray]) -> List[torch.Tensor]:
        check_batch(images)
        out = []
        for im in images:
            t = torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1)
            out.append(t.float().div_(255.0))
        return out

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """The model's transform: normalise, resize, pad to a multiple of 32 (bottom/right).

        Returns:
            (Tensor[B, 3, h, w] normalised, list of :class:`LetterboxMeta` with ``pad=(0, 0)``
            and ``input_size`` = the resized image before batch padding).
        """
        tensors = self._to_tensors(images)
        image_list, _ = self._model.transform(tensors)
        return image_list.tensors, [self._meta(t, hw) for t, hw in zip(tensors, image_list.image_sizes)]

    def preprocess_native(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """:meth:`preprocess` at scale 1 (normalise and pad only), for images already at network
        scale (the ``packed_crops`` executor's canvases). Fixed-size models (SSD) cannot."""
        transform = self._model.transform
        if transform.fixed_size is not None:
            raise ValueError(
                f"{type(self._model).__name__} resizes every image to {transform.fixed_size}; it cannot run at scale 1"
            )
        tensors = self._to_tensors(images)
        batch = transform.batch_images([transform.normalize(t) for t in tensors], transform.size_divisible)
        return batch, [self._meta(t, tuple(t.shape[-2:])) for t in tensors]

    @staticmethod
    def _meta(image: torch.Tensor, resized: Sequence[int]) -> LetterboxMeta:
        (h, w), (rh_, rw_) = image.shape[-2:], (int(resized[0]), int(resized[1]))
        return LetterboxMeta(ratio=(rw_ / w, rh_ / h), pad=(0, 0), orig_size=(int(h), int(w)), input_size=(rh_, rw_))

    def forward(self, batch: torch.Tensor) -> TorchvisionFeatures:
        """Tensor[B, 3, h, w] (from :meth:`preprocess`) -> the backbone's feature maps."""
        with torch.inference_mode():
            features = self._model.backbone(batch)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        return TorchvisionFeatures(batch, features)

    def postprocess(self, raw: TorchvisionFeatures, metas: List[LetterboxMeta]) -> List[Detections]:
        """Heads, NMS and mapping back, as the model's own ``forward`` does after its backbone."""
        if raw.batch.shape[0] != len(metas):
            raise ValueError(f"{raw.batch.shape[0]} images in the batch for {len(metas)} metas")
        from torchvision.models.detection.image_list import ImageList

        sizes = [tuple(m.input_size) for m in metas]
        images = ImageList(raw.batch, sizes)
        with torch.inference_mode():
            dets = self._heads(images, raw.features)
            dets = self._model.transform.postprocess(dets, sizes, [tuple(m.orig_size) for m in metas])
        known = torch.tensor(sorted(self.names), dtype=torch.int64)
        out = []
        for d, m in zip(dets, metas):
            labels = d["labels"].cpu()
            keep = torch.isin(labels, known)
            masks = d.get("masks")
            if masks is not None:
                masks = masks[:, 0].cpu()[keep] > 0.5  # per-pixel probabilities, thresholded as torchvision's docs do
            out.append(Detections(d["boxes"].cpu()[keep], d["scores"].cpu()[keep], labels[keep], m.orig_size, masks))
        return out

    def _heads(self, images: Any, features: "OrderedDict[str, torch.Tensor]") -> List[Dict[str, torch.Tensor]]:
        """Everything after the backbone, per family, in the model's own order."""
        m = self._model
        rcnn, retina, fcos, _ = _families()
        if isinstance(m, rcnn):
            proposals, _ = m.rpn(images, features)
            dets, _ = m.roi_heads(features, proposals, images.image_sizes)
            return dets
        levels = list(features.values())
        head_outputs = m.head(levels)
        anchors = m.anchor_generator(images, levels)
        if isinstance(m, (retina, fcos)):
            per_level = [x.size(2) * x.size(3) for x in levels]
            if isinstance(m, retina):  # RetinaNet has A anchors per location, FCOS one
                a = head_outputs["cls_logits"].size(1) // sum(per_level)
                per_level = [n * a for n in per_level]
            head_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
            anchors = [list(x.split(per_level)) for x in anchors]
        return m.postprocess_detections(head_outputs, anchors, images.image_sizes)

    def flops(self, input_hw: Tuple[int, int]) -> float:
        """GFLOPs (2 x MACs of conv/linear layers, :func:`argos.metrics.flops.count_gflops`) at
        network input ``(h, w)``; cached.

        Counted: backbone, FPN and dense heads at that input; R-CNN box heads on the RPN's
        ``post_nms_top_n`` proposals and mask/keypoint heads on ``max_det`` detections, the
        most they run at test time (the real numbers depend on the image). RoIAlign, NMS and
        mask pasting are not counted. :meth:`cost_probe` runs the same work as one module.
        """
        from argos.metrics.flops import count_gflops

        def count(hw: Tuple[int, int]) -> float:
            total = count_gflops(_CostProbe(self._model).eval(), (1, 3, *hw))
            rois, dets = self._roi_counts()
            c = int(getattr(self._model.backbone, "out_channels", 0))
            for kind, stage, size in _roi_stages(self._model):
                # RoIs are independent: one RoI's cost times their number.
                total += (rois if kind == "box" else dets) * count_gflops(stage.eval(), (1, c, *size))
            return total

        return self._cached_flops(input_hw, count)

    def _roi_counts(self) -> Tuple[int, int]:
        m = self._model
        rois = int(m.rpn.post_nms_top_n()) if isinstance(m, _families()[0]) else 0
        return rois, self.max_det

    def cost_probe(self) -> nn.Module:
        """An ``nn.Module`` (eval mode) whose forward on Tensor[1, 3, h, w] runs exactly the
        layers :meth:`flops` counts, all RoIs included (for checking the count)."""
        return _CostProbe(self._model, *self._roi_counts()).eval()

    def __repr__(self) -> str:
        return (
            f"TorchvisionAdapter({type(self._model).__name__}, classes={len(self.names)}, img_size={self.img_size}, "
            f"conf={self.conf}, max_det={self.max_det}, device={self.device})"
        )
