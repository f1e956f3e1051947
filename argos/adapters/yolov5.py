"""YOLOv5 adapter: original YOLOv5 checkpoints and ultralytics ``YOLO`` models (v5u/v8/11).

Original checkpoints are loaded without the ``yolov5`` package (see ``_yolov5_legacy``).
ultralytics is imported only when an ultralytics model is used.

Pre- and post-processing follow YOLOv5's ``detect.py``/``val.py``: letterbox to ``img_size`` on
the long side (grey 114 padding), NMS with ``score = objectness x class probability``
(anchor heads), class-aware, multi-label, boxes mapped back to original-image pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from argos.adapters.base import Adapter, check_batch, check_thresholds
from argos.fusion import fold_batchnorm_params
from argos.structures import Detections

__all__ = [
    "YOLOv5Adapter",
    "fold_batchnorm",
    "LetterboxMeta",
    "letterbox",
    "stack_padded",
    "boxes_to_original",
    "non_max_suppression",
]

HEAD_FORMATS = ("anchor", "anchor_free", "end2end")


# --------------------------------------------------------------------------------------------
# Letterbox and mapping back
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LetterboxMeta:
    """How one image was placed in the network input.

    Attributes:
        ratio (tuple[float, float]): ``(rw, rh)`` network pixels per original pixel.
        pad (tuple[int, int]): ``(left, top)`` padding in network pixels.
        orig_size (tuple[int, int]): ``(h, w)`` of the original image.
        input_size (tuple[int, int]): ``(h, w)`` of the letterboxed image, before batch padding.
    """

    ratio: Tuple[float, float]
    pad: Tuple[int, int]
    orig_size: Tuple[int, int]
    input_size: Tuple[int, int]


def letterbox(
    image: np.ndarray, img_size: int = 640, stride: int = 32, rect: bool = True, pad_value: int = 114
) -> Tuple[np.ndarray, LetterboxMeta]:
    """Resize the long side to ``img_size`` (aspect kept, ``cv2.INTER_LINEAR``) and pad, centred.

    Args:
        image (ndarray[H, W, 3] uint8).
        rect: pad each side only up to the next multiple of ``stride`` (YOLOv5 ``auto=True``);
            otherwise pad to ``img_size x img_size``.

    Returns:
        (ndarray[h, w, 3] uint8, LetterboxMeta).
    """
    h, w = image.shape[:2]
    r = img_size / max(h, w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (-new_w % stride, -new_h % stride) if rect else (img_size - new_w, img_size - new_h)
    # YOLOv5 splits odd padding with round(d/2 -+ 0.1): the extra pixel goes right/bottom.
    left, right = int(round(dw / 2 - 0.1)), int(round(dw / 2 + 0.1))
    top, bottom = int(round(dh / 2 - 0.1)), int(round(dh / 2 + 0.1))
    if dw or dh:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
        )
    meta = LetterboxMeta(
        ratio=(new_w / w, new_h / h), pad=(left, top), orig_size=(h, w), input_size=image.shape[:2]
    )
    return image, meta


def stack_padded(images: Sequence[np.ndarray], pad_value: int) -> np.ndarray:
    """Letterboxed images -> ndarray[B, h, w, 3] uint8, each padded bottom/right with ``pad_value``
    to the largest ``(h, w)`` (their metas' top/left offsets stay valid)."""
    h = max(b.shape[0] for b in images)
    w = max(b.shape[1] for b in images)
    arr = np.full((len(images), h, w, 3), pad_value, dtype=np.uint8)
    for k, b in enumerate(images):
        arr[k, : b.shape[0], : b.shape[1]] = b
    return arr


def boxes_to_original(boxes: torch.Tensor, meta: LetterboxMeta) -> torch.Tensor:
    """Tensor[N, 4] xyxy in network pixels -> original-image pixels, clipped to the image."""
    out = boxes.clone().float()
    (rw, rh), (left, top), (h, w) = meta.ratio, meta.pad, meta.orig_size
    out[:, [0, 2]] = ((out[:, [0, 2]] - left) / rw).clamp_(0, w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - top) / rh).clamp_(0, h)
    return out


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------


def _xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    xy, half = x[:, :2], x[:, 2:4] / 2
    return torch.cat((xy - half, xy + half), 1)


def non_max_suppression(
    pred: torch.Tensor,
    head_format: str,
    conf: float = 0.001,
    iou: float = 0.65,
    classes: Optional[Sequence[int]] = None,
    agnostic: bool = False,
    multi_label: bool = True,
    max_det: int = 300,
    max_nms: int = 30000,
) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """YOLOv5 ``val.py`` NMS.

    Args:
        pred: ``"anchor"``: Tensor[B, N, 5 + nc] (``cx, cy, w, h, obj, cls...``), score = obj x cls,
            candidates need obj > conf. ``"anchor_free"``: Tensor[B, 4 + nc, N]
            (``cx, cy, w, h, cls...``). ``"end2end"``: Tensor[B, K, 6] (``x1, y1, x2, y2, score,
            class``), already suppressed: only filtered.
        multi_label: every class with score > conf is a candidate (else the best class only).
        agnostic: suppress across classes.
        max_nms: candidates kept (by score) before NMS.

    Returns:
        One ``(boxes Tensor[K, 4] xyxy input pixels, scores Tensor[K], labels Tensor[K] int64)``
        per image, sorted by score, ``K <= max_det``.
    """
    from torchvision.ops import batched_nms, nms  # torchvision import is slow; only when needed

    if head_format not in HEAD_FORMATS:
        raise ValueError(f"head_format must be one of {HEAD_FORMATS}, got {head_format!r}")
    pred = pred.float()
    out = []
    for p in pred:
        if head_format == "end2end":
            keep = p[:, 4] > conf
            boxes, scores, labels = p[keep, :4], p[keep, 4], p[keep, 5].long()
        else:
            if head_format == "anchor":
                p = p[p[:, 4] > conf]
                cls = p[:, 5:] * p[:, 4:5]
            else:
                p = p.T
                p = p[p[:, 4:].amax(1) > conf]
                cls = p[:, 4:]
            box = _xywh2xyxy(p[:, :4])
            if multi_label and cls.shape[1] > 1:
                i, j = (cls > conf).nonzero(as_tuple=False).T
                boxes, scores, labels = box[i], cls[i, j], j
            else:
                scores, labels = cls.max(1)
                keep = scores > conf
                boxes, scores, labels = box[keep], scores[keep], labels[keep]
        if classes is not None:
            keep = torch.isin(labels, torch.as_tensor(list(classes), device=labels.device))
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = scores.argsort(descending=True)
        if head_format != "end2end":
            order = order[:max_nms]
            boxes, scores, labels = boxes[order], scores[order], labels[order]
            order = nms(boxes, scores, iou) if agnostic else batched_nms(boxes, scores, labels, iou)
        order = order[:max_det]
        out.append((boxes[order], scores[order], labels[order].long()))
    return out


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


def _is_ultralytics_wrapper(obj: Any) -> bool:
    """An ultralytics ``YOLO``/``Model`` object (it holds the network in ``.model``)."""
    if not type(obj).__module__.startswith("ultralytics."):
        return False
    from ultralytics.engine.model import Model

    return isinstance(obj, Model)


def _head_format(net: nn.Module) -> str:
    """'anchor' (YOLOv5 Detect with objectness), 'anchor_free' or 'end2end' (ultralytics)."""
    for m in net.modules():
        if all(hasattr(m, a) for a in ("na", "no", "anchors", "nl")):
            return "anchor"
    heads = [m for m in net.modules() if hasattr(m, "reg_max") and hasattr(m, "nl")]
    if heads:
        return "end2end" if getattr(heads[-1], "end2end", False) else "anchor_free"
    raise ValueError(
        f"cannot tell the output format of {type(net).__name__}: no YOLOv5 (anchor) or "
        "ultralytics (anchor-free) detection head found"
    )


def fold_batchnorm(module: nn.Module) -> int:
    """Fold the eval-mode BatchNorm of every ultralytics ``Conv`` block of ``module`` into its
    convolution, in place; the block's ``bn`` becomes ``nn.Identity`` (its forward stays
    ``act(bn(conv(x)))``). Returns the number of blocks folded.

    The same outputs up to float rounding (:func:`~argos.fusion.fold_batchnorm_params`),
    one op less per block. For inference only: the folded model has no BatchNorm statistics
    left to train.
    """
    from ultralytics.nn.modules.conv import Conv

    n = 0
    for m in module.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if not isinstance(m, Conv) or "forward" in m.__dict__ or type(conv) is not nn.Conv2d:
            continue
        if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats:
            continue
        weight, bias = fold_batchnorm_params(conv.weight, conv.bias, bn)
        fused = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, bias=True, padding_mode=conv.padding_mode, device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
        with torch.no_grad():
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
        fused.requires_grad_(conv.weight.requires_grad)
        m.conv, m.bn = fused, nn.Identity()
        n += 1
    return n


class YOLOv5Adapter(Adapter):
    """Original YOLOv5 checkpoints and ultralytics YOLO detectors.

    Args:
        weights: local ``.pt``; original YOLOv5 or ultralytics, told apart by content.
        model: an ultralytics ``YOLO`` object, or a YOLOv5 torch-hub-style ``nn.Module`` with
            ``.names``, ``.stride`` and a forward returning YOLOv5 output. Put in eval mode.
        cfg: an ultralytics yaml name or path (``"yolov5nu.yaml"``, ``"yolo11n.yaml"``): random
            init, built offline.
        img_size: long side of the network input, pixels; a multiple of the model's stride.
        conf, iou: score threshold and NMS IoU threshold.
        max_det: detections kept per image.
        rect: letterbox only to the next stride multiple (else to ``img_size`` square).
        device: where the model runs.
        classes: keep only these class ids (model ids).
        agnostic: class-agnostic NMS.
        multi_label: one candidate per class above ``conf`` (YOLOv5 ``val.py``), else best class.
        optimize: for networks argos builds (``weights``, ``cfg``): fold BatchNorm into the
            convolutions (:func:`fold_batchnorm`, as ultralytics does before it predicts) and
            keep the weights channels-last, the layout oneDNN runs fastest. On the dev CPU this
            makes yolov5n about 20% faster at 640x480 and about a third faster on small crops
            (`benchmarks/adapter_optimize.py`).
            A ``model`` you pass is used as given.

    Exactly one of ``weights``, ``model``, ``cfg`` is given.
    """

    pad_value = 114

    def __init__(
        self,
        weights: Union[str, os.PathLike, None] = None,
        model: Any = None,
        cfg: Optional[str] = None,
        img_size: int = 640,
        conf: float = 0.001,
        iou: float = 0.65,
        max_det: int = 300,
        rect: bool = True,
        device: Union[str, torch.device] = "cpu",
        classes: Optional[Sequence[int]] = None,
        agnostic: bool = False,
        multi_label: bool = True,
        optimize: bool = True,
    ) -> None:
        given = [k for k, v in (("weights", weights), ("model", model), ("cfg", cfg)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of weights, model or cfg (got {given or 'none'})")
        check_thresholds(conf, iou, max_det)
        self.device = torch.device(device)
        self.img_size = int(img_size)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.rect, self.agnostic, self.multi_label = bool(rect), bool(agnostic), bool(multi_label)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.max_nms = 30000

        if weights is not None:
            net, names, stride = self._load_weights(weights)
        elif cfg is not None:
            net, names, stride = self._from_ultralytics(self._build_cfg(cfg))
        elif _is_ultralytics_wrapper(model):
            net, names, stride = self._from_ultralytics(model)
        elif isinstance(model, nn.Module):
            net, names, stride = model, getattr(model, "names", None), getattr(model, "stride", None)
            if names is None or stride is None:
                raise ValueError("a model given as nn.Module must have .names and .stride (YOLOv5 hub style)")
        else:
            raise TypeError(f"model must be an ultralytics YOLO object or an nn.Module, got {type(model).__name__}")

        net = net.to(self.device).eval()
        self.optimized = bool(optimize) and model is None
        if self.optimized:
            fold_batchnorm(net)
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        self.names: Dict[int, str] = (
            dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in names.items()}
        )
        self.stride = int(torch.as_tensor(stride).max().item())
        if self.img_size % self.stride:
            raise ValueError(f"img_size {self.img_size} must be a multiple of the model stride {self.stride}")
        self.head_format = _head_format(self._net)
        import torchvision.ops  # noqa: F401  (NMS; a second-long import belongs to loading, not to the first frame)

    # ---- construction helpers ----

    @staticmethod
    def _load_weights(weights: Union[str, os.PathLike]) -> Tuple[nn.Module, Any, Any]:
        from argos.adapters import _yolov5_legacy as legacy

        kind = legacy.checkpoint_kind(weights)  # FileNotFoundError / ValueError for bad files
        if kind == "yolov5":
            net = legacy.load_legacy_yolov5(weights)
            return net, net.names, net.stride
        from ultralytics import YOLO

        return YOLOv5Adapter._from_ultralytics(YOLO(os.fspath(weights), task="detect", verbose=False))

    @staticmethod
    def _build_cfg(cfg: str) -> Any:
        if not str(cfg).endswith((".yaml", ".yml")):
            # Anything else could make ultralytics download weights by that name.
            raise ValueError(f"cfg must be an ultralytics .yaml name or path, got {cfg!r}; use weights= for .pt")
        from ultralytics import YOLO

        return YOLO(str(cfg), task="detect", verbose=False)

    @staticmethod
    def _from_ultralytics(yolo: Any) -> Tuple[nn.Module, Any, Any]:
        net = yolo.model
        if not isinstance(net, nn.Module):
            raise ValueError(
                f"ultralytics model holds no nn.Module (got {type(net).__name__}); exported formats are not supported"
            )
        return net, yolo.names, net.stride

    # ---- Adapter API ----

    @property
    def module(self) -> nn.Module:
        return self._net

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """Letterbox each image (see :func:`letterbox`) and stack.

        Images whose letterboxed shapes differ (``rect=True`` with mixed aspect ratios) are padded
        bottom/right with ``pad_value`` to the largest ``(h, w)`` of the batch; ``metas`` stay valid
        since the top/left offsets do not change, but the extra padding can change detections
        slightly compared with running the images one by one.

        Args:
            images: list of ndarray[H, W, 3] uint8 RGB.

        Returns:
            (Tensor[B, 3, h, w] float in [0, 1] on ``device``, list of :class:`LetterboxMeta`).
        """
        return self._letterbox_batch(images, native=False)

    def preprocess_native(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """:meth:`preprocess` at scale 1, for images already at network scale (the ``packed_crops``
        executor's canvases): each is only padded, centred, to multiples of the stride and never
        resized, whatever ``img_size`` and ``rect`` say. :meth:`postprocess` maps back as usual."""
        return self._letterbox_batch(images, native=True)

    def _letterbox_batch(self, images: Sequence[np.ndarray], native: bool) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        check_batch(images)
        boxed, metas = [], []
        for k, im in enumerate(images):
            # Letterboxing to the image's own long side is a scale of exactly 1.
            size, rect = (max(im.shape[:2]), True) if native else (self.img_size, self.rect)
            b, meta = letterbox(im, size, self.stride, rect, self.pad_value)
            boxed.append(b)
            metas.append(meta)
        arr = stack_padded(boxed, self.pad_value)
        dtype = next(self._net.parameters()).dtype
        # Move as uint8 (4x less to copy), convert on the device.
        batch = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).contiguous()
        return batch.to(dtype).div_(255.0), metas

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, h, w] -> predictions before NMS: Tensor[B, N, 5 + nc] (``anchor``),
        Tensor[B, 4 + nc, N] (``anchor_free``) or Tensor[B, K, 6] (``end2end``), input pixels."""
        with torch.inference_mode():
            out = self._net(batch)
        return out[0] if isinstance(out, (tuple, list)) else out

    def postprocess(self, raw: Any, metas: List[LetterboxMeta]) -> List[Detections]:
        """Predictions (from :meth:`forward`) -> NMS -> one :class:`Detections` per image."""
        pred = raw[0] if isinstance(raw, (tuple, list)) else raw
        if pred.shape[0] != len(metas):
            raise ValueError(f"{pred.shape[0]} predictions for {len(metas)} metas")
        nc = len(self.names)
        expected = {"anchor": (-1, 5 + nc), "anchor_free": (1, 4 + nc), "end2end": (-1, 6)}[self.head_format]
        if pred.ndim != 3 or pred.shape[expected[0]] != expected[1]:
            raise ValueError(
                f"predictions of shape {tuple(pred.shape)} do not fit the {self.head_format!r} head "
                f"(dim {expected[0]} should be {expected[1]}); was the model's head mode changed?"
            )
        results = non_max_suppression(
            pred, self.head_format, self.conf, self.iou, self.classes, self.agnostic,
            self.multi_label, self.max_det, self.max_nms,
        )  # fmt: skip
        return [
            Detections(boxes_to_original(b, m).cpu(), s.cpu(), l.cpu(), m.orig_size)
            for (b, s, l), m in zip(results, metas)
        ]

    def __repr__(self) -> str:
        return (
            f"YOLOv5Adapter({type(self._net).__name__}, classes={len(self.names)}, head={self.head_format}, "
            f"img_size={self.img_size}, rect={self.rect}, device={self.device})"
        )
