"""Cascade Mask R-CNN with a Swin-T backbone, through mmdet 3.3 (mmcv 2.1, mmengine).

mmdet ships no Swin-T cascade config, so the model is composed here: mmdet's bundled
``cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py`` with its ResNet-50 backbone replaced by
Swin-T (96 channels, depths 2-2-6-2, window 7) and the FPN inputs set to match: 80.7M
parameters. mmdet is imported only when the adapter is built; it never downloads.

Preprocessing is mmdet's test pipeline: resize keeping the aspect ratio so that the long side is
``img_size`` (``Resize(scale=(img_size, img_size), keep_ratio=True)``), then the model's data
preprocessor (mean/std normalisation, zero padding bottom/right to a multiple of 32).
:meth:`CascadeMaskRCNNAdapter.forward` runs the backbone and neck; RPN and the cascade RoI
heads need each image's size before padding, so they run in ``postprocess`` with the metas,
exactly as mmdet's ``TwoStageDetector.predict`` chains them.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from argos.adapters.base import Adapter, check_batch, check_thresholds
from argos.adapters.yolov5 import LetterboxMeta
from argos.structures import Detections

__all__ = ["CascadeMaskRCNNAdapter", "MMDetFeatures", "swin_t_cascade_mask_rcnn_config"]

_BASE_CONFIG = "cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py"

SWIN_T = dict(
    type="SwinTransformer",
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.2,
    patch_norm=True,
    out_indices=(0, 1, 2, 3),
    with_cp=False,
    convert_weights=True,
    init_cfg=None,  # random init: nothing to download
)
SWIN_T_CHANNELS = [96, 192, 384, 768]


def _require_mmdet() -> None:
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the cascade_mask_rcnn adapter needs mmdet 3.3, mmcv 2.1 and mmengine: "
            "pip install 'argos-cv[mmdet]'"
        ) from e


def swin_t_cascade_mask_rcnn_config(conf: float = 0.05, max_det: int = 100, proposals: int = 1000) -> Any:
    """The model config (an ``mmengine.ConfigDict``) of Swin-T Cascade Mask R-CNN on COCO.

    Args:
        conf: RCNN score threshold (``test_cfg.rcnn.score_thr``).
        max_det: detections kept per image (``test_cfg.rcnn.max_per_img``).
        proposals: RPN proposals kept per image (``test_cfg.rpn.max_per_img``).
    """
    _require_mmdet()
    import mmdet
    from mmengine.config import Config

    path = Path(mmdet.__file__).parent / ".mim" / "configs" / _BASE_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"mmdet's bundled config {_BASE_CONFIG} not found under {path.parent.parent}")
    model = Config.fromfile(str(path)).model
    model.backbone = dict(SWIN_T)
    model.neck.in_channels = list(SWIN_T_CHANNELS)
    model.test_cfg.rcnn.score_thr = float(conf)
    model.test_cfg.rcnn.max_per_img = int(max_det)
    model.test_cfg.rpn.max_per_img = int(proposals)
    return model


@dataclass
class MMDetFeatures:
    """What :meth:`CascadeMaskRCNNAdapter.forward` returns.

    Attributes:
        input_hw: ``(h, w)`` of the padded network input.
        features (tuple[Tensor]): FPN levels, strides 4 to 64.
    """

    input_hw: Tuple[int, int]
    features: Tuple[torch.Tensor, ...]


class _BackboneRPN(nn.Module):
    """Backbone, neck and RPN head of an mmdet two-stage detector (for FLOP counting)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        cls_scores, bbox_preds = self.detector.rpn_head(self.detector.extract_feat(x))
        return list(cls_scores) + list(bbox_preds)


class CascadeMaskRCNNAdapter(Adapter):
    """Swin-T Cascade Mask R-CNN (mmdet), random init or a local mmdet checkpoint.

    Args:
        weights: local mmdet checkpoint (``{"state_dict": ...}`` or a bare state dict) of this
            architecture; never downloaded. ``None``: random init.
        img_size: long side of the network input, pixels.
        conf: score threshold of the final detections (mmdet's COCO evaluation uses 0.05).
        max_det: detections kept per image.
        proposals: RPN proposals per image that go through the cascade (mmdet's 1000). The
            three box stages cost 84 GFLOPs on 1000 proposals, against 121 for backbone, neck
            and RPN at 480 x 640; fewer make CPU runs fast and change the detections.
        device: where the model runs.

    Labels are COCO's 80 classes as ids 0..79 (mmdet's order); detections carry instance masks
    (``Detections.masks``, bool, original image size). ``module`` is the whole mmdet detector;
    :meth:`forward` runs its backbone and neck.
    """

    stride = 32
    returns_masks = True

    def __init__(
        self,
        weights: Union[str, os.PathLike, None] = None,
        img_size: int = 640,
        conf: float = 0.05,
        max_det: int = 100,
        proposals: int = 1000,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        check_thresholds(conf=conf, max_det=max_det)
        if proposals < 1:
            raise ValueError(f"proposals must be >= 1, got {proposals}")
        if img_size < self.stride:
            raise ValueError(f"img_size must be >= {self.stride}, got {img_size}")
        cfg = swin_t_cascade_mask_rcnn_config(conf, max_det, proposals)
        from mmdet.datasets import CocoDataset
        from mmdet.datasets.transforms import Resize
        from mmdet.registry import MODELS
        from mmengine.registry import DefaultScope

        # Nested configs (data preprocessor, heads) resolve in the default scope: mmdet's, for this build only.
        with DefaultScope.overwrite_default_scope("mmdet"):
            model = MODELS.build(cfg)
        if weights is not None:
            self._load(model, weights)
        self.device = torch.device(device)
        self.model: nn.Module = model.to(self.device).eval()
        self.img_size = int(img_size)
        self.conf, self.max_det = float(conf), int(max_det)
        self.iou = float(cfg.test_cfg.rcnn.nms.iou_threshold)
        self.names: Dict[int, str] = dict(enumerate(CocoDataset.METAINFO["classes"]))
        self._resize = Resize(scale=(self.img_size, self.img_size), keep_ratio=True)
        # Padding is 0 after normalisation, i.e. the mean colour.
        self.pad_value = int(round(float(self.model.data_preprocessor.mean.mean())))

    @staticmethod
    def _load(model: nn.Module, weights: Union[str, os.PathLike]) -> None:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{path} holds objects other than tensors and plain data (e.g. mmengine training state); "
                "save its 'state_dict' alone and load that file"
            ) from e
        # mmdet checkpoints are {"meta": ..., "state_dict": ...}; a bare state dict works too.
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not an mmdet checkpoint or state dict")
        # Checkpoints saved from a (Distributed)DataParallel wrapper prefix every key with "module.".
        model.load_state_dict({k[7:] if k.startswith("module.") else k: v for k, v in state.items()})

    @property
    def module(self) -> nn.Module:
        return self.model

    # ---- preprocessing ----

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """mmdet's test pipeline: long side resized to ``img_size`` (bilinear, aspect kept), then
        the data preprocessor (normalise, pad bottom/right to a multiple of 32).

        Returns:
            (Tensor[B, 3, h, w] normalised, list of :class:`LetterboxMeta` with ``pad=(0, 0)``,
            ``ratio`` = mmdet's ``scale_factor`` and ``input_size`` = its ``img_shape``).
        """
        return self._prepare(images, native=False)

    def preprocess_native(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """:meth:`preprocess` at scale 1 (normalise and pad only), for images already at network
        scale (the ``packed_crops`` executor's canvases)."""
        return self._prepare(images, native=True)

    def _prepare(self, images: Sequence[np.ndarray], native: bool) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        from mmdet.structures import DetDataSample

        check_batch(images)
        inputs, samples, metas = [], [], []
        for im in images:
            h, w = im.shape[:2]
            bgr = np.ascontiguousarray(im[..., ::-1])  # the data preprocessor expects mmcv's BGR
            if native:
                resized, scale = bgr, (1.0, 1.0)
            else:
                out = self._resize({"img": bgr, "img_shape": (h, w), "ori_shape": (h, w)})
                resized, scale = out["img"], tuple(float(s) for s in out["scale_factor"])
            rh, rw = resized.shape[:2]
            inputs.append(torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))))
            samples.append(DetDataSample(metainfo={"img_shape": (rh, rw), "ori_shape": (h, w), "scale_factor": scale}))
            metas.append(LetterboxMeta(ratio=scale, pad=(0, 0), orig_size=(h, w), input_size=(rh, rw)))
        data = self.model.data_preprocessor({"inputs": inputs, "data_samples": samples}, False)
        return data["inputs"], metas

    # ---- network ----

    def forward(self, batch: torch.Tensor) -> MMDetFeatures:
        """Tensor[B, 3, h, w] (from :meth:`preprocess`) -> FPN features."""
        with torch.inference_mode():
            features = self.model.extract_feat(batch)
        return MMDetFeatures((int(batch.shape[-2]), int(batch.shape[-1])), tuple(features))

    def postprocess(self, raw: MMDetFeatures, metas: List[LetterboxMeta]) -> List[Detections]:
        """RPN, cascade box and mask heads (mmdet's ``predict`` with ``rescale=True``)."""
        from mmdet.structures import DetDataSample

        if raw.features[0].shape[0] != len(metas):
            raise ValueError(f"{raw.features[0].shape[0]} images in the batch for {len(metas)} metas")
        samples = [
            DetDataSample(
                metainfo={
                    "img_shape": tuple(m.input_size),
                    "ori_shape": tuple(m.orig_size),
                    "scale_factor": tuple(m.ratio),
                    "batch_input_shape": raw.input_hw,
                }
            )
            for m in metas
        ]
        with torch.inference_mode():
            proposals = self.model.rpn_head.predict(raw.features, samples, rescale=False)
            results = self.model.roi_head.predict(raw.features, proposals, samples, rescale=True)
        out = []
        for r, m in zip(results, metas):
            h, w = m.orig_size
            boxes = r.bboxes.float().cpu().clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
            masks = r.masks.cpu().bool() if "masks" in r else torch.zeros(0, h, w, dtype=torch.bool)
            out.append(Detections(boxes, r.scores.float().cpu(), r.labels.cpu(), (h, w), masks))
        return out

    # ---- cost ----

    def roi_counts(self) -> Tuple[int, int]:
        """``(proposals, detections)`` :meth:`flops` assumes: the RPN's ``max_per_img`` and ``max_det``."""
        return int(self.model.test_cfg.rpn.max_per_img), self.max_det

    def flops(self, input_hw: Tuple[int, int]) -> float:
        """GFLOPs (2 x MACs) of one image at network input ``(h, w)``; cached.

        Counted: conv and linear layers (:func:`argos.metrics.flops.count_gflops`) plus the
        two attention matmuls of each Swin window (``q @ k^T`` and ``attn @ v``: 2 x N^2 x C MACs
        per window of N tokens), in the backbone, FPN and RPN head at that input, each cascade
        stage's box head on ``roi_counts()[0]`` proposals and each stage's mask head on
        ``roi_counts()[1]`` detections: the most they run at test time (the real numbers depend
        on the image). RoIAlign, NMS, mask pasting, norms and activations are not counted.
        """
        return self._cached_flops(input_hw, lambda hw: self.dense_flops(hw) + self.head_flops())

    def dense_flops(self, input_hw: Tuple[int, int]) -> float:
        """GFLOPs of backbone, neck and RPN head at network input ``(h, w)`` (see :meth:`flops`)."""
        from mmdet.models.backbones.swin import WindowMSA

        from argos.metrics.flops import count_gflops

        attention: List[int] = [0]

        def attention_macs(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            windows, n, c = inputs[0].shape
            attention[0] += 2 * windows * n * n * c

        handles = [m.register_forward_hook(attention_macs) for m in self.model.modules() if isinstance(m, WindowMSA)]
        try:
            convs = count_gflops(_BackboneRPN(self.model).eval(), (1, 3, int(input_hw[0]), int(input_hw[1])))
        finally:
            for h in handles:
                h.remove()
        return convs + 2.0 * attention[0] / 1e9

    def head_flops(self) -> float:
        """GFLOPs of the cascade RoI heads at ``roi_counts()`` (independent of the input size)."""
        from argos.metrics.flops import count_gflops

        proposals, detections = self.roi_counts()
        head = self.model.roi_head
        total = 0.0
        stages = [(proposals, e, h) for e, h in zip(head.bbox_roi_extractor, head.bbox_head)]
        stages += [(detections, e, h) for e, h in zip(head.mask_roi_extractor, head.mask_head)]
        for n, extractor, stage in stages:
            roi = (1, extractor.out_channels, *extractor.roi_layers[0].output_size)
            total += n * count_gflops(stage, roi)  # RoIs are independent: one RoI's cost times their number
        return total

    def __repr__(self) -> str:
        return (
            f"CascadeMaskRCNNAdapter(Swin-T, img_size={self.img_size}, conf={self.conf}, "
            f"max_det={self.max_det}, device={self.device})"
        )
