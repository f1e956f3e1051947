"""PSPNet semantic segmentation: a dilated torchvision ResNet and a pyramid pooling module.

The network (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017):

- a torchvision ResNet-18/50/101 whose last two stages trade their stride for dilation, so the
  features have output stride 8;
- a pyramid pooling module (PPM) on ``layer4``: average pools to ``1x1, 2x2, 3x3, 6x6`` bins,
  a 1x1 conv (to ``C / len(bins)`` channels) + BN + ReLU per bin, bilinear upsampling back,
  concatenated with the features;
- a 3x3 conv + BN + ReLU + dropout and a 1x1 classifier;
- optionally an auxiliary classifier on ``layer3``, run in training mode only.

Random init by default (nothing is downloaded). ``backbone_weights`` loads a local torchvision
ImageNet ``ResNet`` state dict, ``weights`` a full checkpoint written by
:meth:`PSPNetAdapter.save`.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argos.adapters.base import Adapter, check_batch
from argos.adapters.yolov5 import LetterboxMeta, letterbox
from argos.structures import SegmentationMap

__all__ = ["PSPNetAdapter", "PSPNetConfig", "PSPNet", "PyramidPooling", "PoolBranch", "CITYSCAPES_CLASSES"]

#: The 19 Cityscapes train classes, in train-id order.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

# ImageNet statistics of torchvision's ResNet weights, RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FORMAT = "argos.pspnet"
DEPTHS = (18, 50, 101)


@dataclass(frozen=True)
class PSPNetConfig:
    """Architecture of a :class:`PSPNet`.

    Args:
        depth: ResNet depth, one of 18, 50, 101.
        num_classes: output classes.
        bins: output sizes of the pyramid pooling branches.
        dropout: dropout before the classifiers (training only).
        aux_head: add the auxiliary classifier on ``layer3`` (its output only in training mode).
    """

    depth: int = 50
    num_classes: int = 19
    bins: Tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    aux_head: bool = False

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {self.depth!r}")
        if int(self.num_classes) != self.num_classes or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        bins = tuple(int(b) for b in self.bins)
        if not bins or min(bins) < 1:
            raise ValueError(f"bins must be a non-empty sequence of positive sizes, got {self.bins!r}")
        object.__setattr__(self, "bins", bins)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def features(self) -> Tuple[int, int]:
        """Channels of ``(layer3, layer4)``."""
        return (256, 512) if self.depth == 18 else (1024, 2048)


def _dilate_basic_layer(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """Give a torchvision ``BasicBlock`` stage stride 1 and dilation, in place.

    torchvision's ``replace_stride_with_dilation`` refuses BasicBlocks; this follows its rule
    for Bottlenecks: the conv that carried the stride keeps the previous stage's dilation, the
    convs after it get ``dilation``. Parameter names and shapes do not change.
    """
    for i, block in enumerate(layer):
        convs = ((block.conv1, previous if i == 0 else dilation), (block.conv2, dilation))
        for conv, d in convs:
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


class DilatedResNet(nn.Module):
    """A torchvision ResNet trunk with output stride 8; returns ``(layer3, layer4)`` features.

    Parameter names are those of torchvision's ``ResNet`` (without ``fc``), so its ImageNet
    state dicts load directly.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        from torchvision.models import resnet18, resnet50, resnet101

        if depth == 18:
            net = resnet18(weights=None)
            _dilate_basic_layer(net.layer3, 1, 2)
            _dilate_basic_layer(net.layer4, 2, 4)
        else:
            build = {50: resnet50, 101: resnet101}[depth]
            net = build(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)


class PoolBranch(nn.Sequential):
    """One PPM branch: ``AdaptiveAvgPool2d(bins)`` -> 1x1 conv -> BN -> ReLU (at ``bins x bins``)."""

    def __init__(self, bins: int, in_channels: int, channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(bins),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class PyramidPooling(nn.Module):
    """Tensor[B, C, h, w] -> Tensor[B, C + len(bins) * channels, h, w]: the input concatenated
    with each branch's output, upsampled bilinearly to ``(h, w)``."""

    def __init__(self, in_channels: int, bins: Sequence[int], channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(PoolBranch(b, in_channels, channels) for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(b(x), size=size, mode="bilinear", align_corners=False) for b in self.branches]
        return torch.cat([x, *pooled], dim=1)


def _classifier(in_channels: int, channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(channels, num_classes, 1),
    )


class PSPNet(nn.Module):
    """Tensor[B, 3, H, W] (normalised) -> class logits Tensor[B, num_classes, H/8, W/8].

    In training mode with ``config.aux_head`` it returns ``(logits, aux_logits)``, both at H/8.
    ``H`` and ``W`` must be multiples of 8.
    """

    stride = 8

    def __init__(self, config: PSPNetConfig) -> None:
        super().__init__()
        self.config = config
        c3, c4 = config.features
        reduced = c4 // len(config.bins)
        self.backbone = DilatedResNet(config.depth)
        self.ppm = PyramidPooling(c4, config.bins, reduced)
        self.head = _classifier(c4 + reduced * len(config.bins), c4 // 4, config.num_classes, config.dropout)
        self.aux_head = _classifier(c3, c3 // 4, config.num_classes, config.dropout) if config.aux_head else None

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"input height and width must be multiples of {self.stride}, got {tuple(x.shape[-2:])}")
        c3, c4 = self.backbone(x)
        out = self.head(self.ppm(c4))
        if self.training and self.aux_head is not None:
            return out, self.aux_head(c3)
        return out


def _read_checkpoint(path: Union[str, os.PathLike], what: str) -> Any:
    """``torch.load`` a trusted-format local file (tensors and plain containers only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"{p} is not a readable PyTorch {what} (torch.load with weights_only=True failed: {e})") from e


def _load_state(module: nn.Module, state: Mapping[str, Any], what: str, optional: Tuple[str, ...] = ()) -> None:
    """Strict ``load_state_dict`` with errors that name the file's kind; keys starting with one
    of ``optional`` may be missing from or extra in ``state``."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} must be a state dict (str -> Tensor)")
    state = {k: v for k, v in state.items() if not k.startswith(optional)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", sorted(shapes))):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ValueError(f"{what} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state)


class PSPNetAdapter(Adapter):
    """PSPNet for semantic segmentation; outputs one :class:`SegmentationMap` per image.

    Args:
        depth: ResNet depth (18, 50, 101); default 50.
        num_classes: output classes; default ``len(names)``, or 19 (Cityscapes train ids).
        img_size: long side of the network input, pixels (a multiple of 8).
        weights: a full checkpoint written by :meth:`save`; its architecture and class names
            are used (``depth``/``num_classes``/``names``/``config``, when given, must agree).
        backbone_weights: a local torchvision ImageNet ``ResNet`` state dict for the trunk
            (its ``fc`` is ignored); the heads stay randomly initialised.
        names: class names, one per class; default the Cityscapes train classes for 19 classes,
            ``class0, class1, ...`` otherwise.
        config: the whole architecture instead of ``depth``/``num_classes``.
        ignore_index: label of pixels that carry no class (see :class:`SegmentationMap`).
        device: where the model runs.

    :meth:`flops` counts one inference forward (eval mode), so the auxiliary head, which runs
    only in training, is not in it.

    Attributes:
        pad_value: RGB ``(124, 116, 104)``, the ImageNet mean in uint8. Letterbox and batch
            padding use it, and the ``masked`` executor paints inactive pixels with it: after
            normalisation it is about 0, the value that the convolutions' own zero padding
            and the sparse executor's inactive inputs hold, so "no image here" looks the same
            to the network in all three places.
        task: ``"segmentation"``; executors then return :class:`SegmentationMap` and label the
            pixels off the proposed mask as background.
        sparse_exclude: module types the ``gather_scatter`` executor leaves dense: the PPM
            branches, whose convs run on ``bins x bins`` pooled maps, not image positions.

    Under ``gather_scatter`` every other conv follows the masked-dense reference (its output is
    the dense output times the mask at its resolution). The PPM's average pools then run over
    the whole ``layer4`` map, inactive positions included. Those positions do not hold zeros:
    they hold what the reference holds there (zeroed conv outputs after BatchNorm shifts,
    ReLU and residual adds), so the pooled context equals the reference's exactly. It is not
    the context of the unmasked frame, and not an average over the active positions only.
    The branch convs run densely and unmasked (cheap at <= 6 x 6 cells, and counted at their
    dense cost); converting them would mask whole bins and, for strongly non-square inputs,
    is refused by the sparse context as not an image grid.
    """

    task = "segmentation"
    stride = 8
    pad_value = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)  # (124, 116, 104)
    sparse_exclude = (PoolBranch,)

    def __init__(
        self,
        depth: Optional[int] = None,
        num_classes: Optional[int] = None,
        *,
        img_size: int = 1024,
        weights: Union[str, os.PathLike, None] = None,
        backbone_weights: Union[str, os.PathLike, None] = None,
        names: Optional[Sequence[str]] = None,
        config: Optional[PSPNetConfig] = None,
        ignore_index: int = 255,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if int(img_size) != img_size or img_size < self.stride or img_size % self.stride:
            raise ValueError(f"img_size must be a positive multiple of {self.stride}, got {img_size!r}")
        if weights is not None and backbone_weights is not None:
            raise ValueError("give weights (a full checkpoint) or backbone_weights, not both")
        if config is not None and (depth is not None or num_classes is not None):
            raise ValueError("give config or depth/num_classes, not both")
        self.img_size = int(img_size)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device)

        state = None
        if weights is not None:
            ckpt = _read_checkpoint(weights, "PSPNet checkpoint")
            if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(
                    f"{weights} is not an argos PSPNet checkpoint (written by PSPNetAdapter.save); "
                    "for torchvision ImageNet ResNet weights use backbone_weights="
                )
            absent = sorted({"config", "names", "state_dict"} - set(ckpt))
            if absent:
                raise ValueError(f"{weights}: malformed PSPNet checkpoint, missing {absent}")
            try:
                saved = PSPNetConfig(**ckpt["config"])
            except TypeError as e:
                raise ValueError(f"{weights}: malformed PSPNet checkpoint ({e})") from e
            asked = {"depth": depth, "num_classes": num_classes}
            wrong = {k: v for k, v in asked.items() if v is not None and v != getattr(saved, k)}
            if (config is not None and config != saved) or wrong:
                raise ValueError(f"the checkpoint holds {saved}, which does not match {config or wrong}")
            if names is not None and list(names) != list(ckpt["names"]):
                raise ValueError("names differ from the class names stored in the checkpoint")
            config, names, state = saved, list(ckpt["names"]), ckpt["state_dict"]
        elif config is None:
            if num_classes is None:
                num_classes = len(names) if names is not None else len(CITYSCAPES_CLASSES)
            config = PSPNetConfig(depth=50 if depth is None else int(depth), num_classes=int(num_classes))
        if not isinstance(config, PSPNetConfig):
            raise TypeError(f"config must be a PSPNetConfig, got {type(config).__name__}")

        if names is None:
            names = CITYSCAPES_CLASSES if config.num_classes == 19 else [f"class{i}" for i in range(config.num_classes)]
        if len(names) != config.num_classes:
            raise ValueError(f"got {len(names)} class names for {config.num_classes} classes")
        self.names: Dict[int, str] = {i: str(n) for i, n in enumerate(names)}
        if 0 <= self.ignore_index < config.num_classes:
            raise ValueError(
                f"ignore_index {self.ignore_index} is a class id; use a value outside [0, {config.num_classes})"
            )
        self.config = config

        net = PSPNet(config)
        if state is not None:
            _load_state(net, state, f"checkpoint {weights}")
        elif backbone_weights is not None:
            trunk = _read_checkpoint(backbone_weights, "backbone state dict")
            _load_state(net.backbone, trunk, f"backbone_weights {backbone_weights} (ResNet-{config.depth})", ("fc.",))
        self._net = net.to(self.device).eval()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    # ---- Adapter API ----

    @property
    def module(self) -> nn.Module:
        return self._net

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write a full checkpoint (architecture, class names, weights) for ``weights=``."""
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": {**asdict(self.config), "bins": list(self.config.bins)},
                "names": [self.names[i] for i in range(len(self.names))],
                "state_dict": {k: v.detach().cpu() for k, v in self._net.state_dict().items()},
            },
            os.fspath(path),
        )

    def letterbox(self, image: np.ndarray, size: Optional[int] = None) -> Tuple[np.ndarray, LetterboxMeta]:
        """Resize the long side to ``size`` (default ``img_size``; aspect kept) and pad, centred,
        to multiples of 8 with :attr:`pad_value`. Same geometry as YOLOv5's ``letterbox``.

        Args:
            image (ndarray[H, W, 3] uint8 RGB).

        Returns:
            (ndarray[h, w, 3] uint8, :class:`~argos.adapters.yolov5.LetterboxMeta`).
        """
        out, meta = letterbox(image, self.img_size if size is None else int(size), self.stride, True, 0)
        (left, top), (h, w) = meta.pad, image.shape[:2]
        new_w, new_h = int(round(w * meta.ratio[0])), int(round(h * meta.ratio[1]))
        if out.shape[:2] != (new_h, new_w):
            colour = np.asarray(self.pad_value, np.uint8)
            out[:top], out[top + new_h :] = colour, colour
            out[:, :left], out[:, left + new_w :] = colour, colour
        return out, meta

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """Letterbox each image to ``img_size`` (see :meth:`letterbox`), pad the batch bottom/right
        to its largest ``(h, w)``, normalise with the ImageNet mean and std.

        Args:
            images: list of ndarray[H, W, 3] uint8 RGB.

        Returns:
            (Tensor[B, 3, h, w] float on ``device``, list of ``LetterboxMeta``).
        """
        return self._batch(images, native=False)

    def preprocess_native(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """:meth:`preprocess` at scale 1 (only padded to multiples of 8), for images already at
        network scale (the ``packed_crops`` executor's canvases)."""
        return self._batch(images, native=True)

    def _batch(self, images: Sequence[np.ndarray], native: bool) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        check_batch(images)
        boxed, metas = [], []
        for k, im in enumerate(images):
            b, meta = self.letterbox(im, max(im.shape[:2]) if native else None)
            boxed.append(b)
            metas.append(meta)
        h, w = max(b.shape[0] for b in boxed), max(b.shape[1] for b in boxed)
        arr = np.empty((len(boxed), h, w, 3), np.uint8)
        arr[:] = np.asarray(self.pad_value, np.uint8)
        for k, b in enumerate(boxed):
            arr[k, : b.shape[0], : b.shape[1]] = b
        batch = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float()
        return batch.sub_(self._mean).div_(self._std).contiguous(), metas

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, h, w] -> logits Tensor[B, num_classes, h/8, w/8]."""
        with torch.inference_mode():
            return self._net(batch)

    def postprocess(self, raw: torch.Tensor, metas: List[LetterboxMeta]) -> List[SegmentationMap]:
        """Logits -> one :class:`SegmentationMap` per image, at its original size.

        The logits are upsampled bilinearly to the network input, the letterbox padding is
        cropped off, the rest resized bilinearly to the original size; ``scores`` are the
        softmax probabilities (Tensor[C, H, W]), ``labels`` their argmax.
        """
        if raw.ndim != 4 or raw.shape[0] != len(metas) or raw.shape[1] != self.num_classes:
            raise ValueError(
                f"expected logits Tensor[{len(metas)}, {self.num_classes}, h, w], got {tuple(raw.shape)}"
            )
        input_hw = (raw.shape[-2] * self.stride, raw.shape[-1] * self.stride)
        logits = F.interpolate(raw.float(), size=input_hw, mode="bilinear", align_corners=False)
        out = []
        for x, meta in zip(logits, metas):
            (h, w), (left, top), (rw, rh) = meta.orig_size, meta.pad, meta.ratio
            new_h, new_w = int(round(h * rh)), int(round(w * rw))
            x = x[:, top : top + new_h, left : left + new_w]
            if (new_h, new_w) != (h, w):
                x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            scores = x.softmax(0)
            # max(0).indices: argmax's first-maximum rule, about 2x faster over the class dim on CPU.
            out.append(SegmentationMap(scores.max(0).indices.cpu(), (h, w), scores.cpu(), self.ignore_index))
        return out

    def __repr__(self) -> str:
        return (
            f"PSPNetAdapter(depth={self.config.depth}, classes={self.num_classes}, img_size={self.img_size}, "
            f"device={self.device})"
        )
