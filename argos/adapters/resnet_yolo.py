"""ResNet-YOLO: a torchvision ResNet backbone, an FPN + PAN neck and a YOLOv5 anchor head.

The "flexible YOLO" layout: any classification backbone feeding YOLOv5's neck and head. Here the
backbone is a torchvision ResNet (C3-C5 at strides 8/16/32), the neck a top-down FPN followed by
a bottom-up PAN made of plain conv-BN-SiLU layers, and the head YOLOv5's: three anchors per cell
and level (YOLOv5's default COCO anchors), outputs decoded exactly as YOLOv5 decodes them
(``Tensor[B, N, 5 + nc]``: ``cx, cy, w, h`` in input pixels, objectness, class probabilities).
So the adapter reuses the YOLOv5 adapter's letterbox, NMS and mapping back.

Everything is built offline: random init by default, or an ImageNet torchvision backbone state
dict from a local file, or a full checkpoint written by :meth:`ResNetYOLOAdapter.save`.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from argos.adapters.yolov5 import YOLOv5Adapter

__all__ = [
    "ResNetYOLOConfig",
    "ResNetYOLO",
    "ResNetBackbone",
    "FPNPAN",
    "YOLOHead",
    "ConvBNAct",
    "ResNetYOLOAdapter",
    "YOLOV5_ANCHORS",
    "load_backbone_weights",
]

PathLike = Union[str, os.PathLike]

#: YOLOv5's default COCO anchors, ``(w, h)`` pairs in input pixels, for strides 8, 16, 32.
YOLOV5_ANCHORS: Tuple[Tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
STRIDES = (8, 16, 32)
RESNET_DEPTHS = (18, 34, 50, 101, 152)

# Checkpoint file layout written by save(); "format" tells the model families apart.
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ResNetYOLOConfig:
    """Architecture of a :class:`ResNetYOLO`.

    Attributes:
        depth: torchvision ResNet depth, one of 18, 34, 50, 101, 152.
        num_classes: detected classes.
        neck_channels: ``(n3, n4, n5)`` channels of the neck outputs at strides 8/16/32; ``None``:
            C3-C5's channels halved for bottleneck ResNets (256, 512, 1024), kept for basic ones
            (128, 256, 512).
        anchors: three levels of ``(w0, h0, w1, h1, ...)`` in input pixels (YOLOv5 format).
        names: class names; ``None``: COCO's 80 names when ``num_classes == 80``, else ``class<k>``.
    """

    depth: int = 50
    num_classes: int = 80
    neck_channels: Optional[Tuple[int, int, int]] = None
    anchors: Tuple[Tuple[float, ...], ...] = YOLOV5_ANCHORS
    names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {RESNET_DEPTHS}, got {self.depth!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        # Checkpoints hand back lists; keep the dataclass hashable and comparable.
        anchors = tuple(tuple(float(v) for v in level) for level in self.anchors)
        if len(anchors) != len(STRIDES) or any(len(a) != len(anchors[0]) or len(a) % 2 or not a for a in anchors):
            raise ValueError(
                f"anchors must be {len(STRIDES)} levels with the same even number of values (w, h pairs), "
                f"got {self.anchors!r}"
            )
        object.__setattr__(self, "anchors", anchors)
        if self.neck_channels is not None:
            nc = tuple(int(c) for c in self.neck_channels)
            if len(nc) != 3 or min(nc) < 1:
                raise ValueError(f"neck_channels must be 3 positive ints, got {self.neck_channels!r}")
            object.__setattr__(self, "neck_channels", nc)
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != self.num_classes:
                raise ValueError(f"{len(names)} names for num_classes={self.num_classes}")
            object.__setattr__(self, "names", names)

    @property
    def bottleneck(self) -> bool:
        return self.depth >= 50

    @property
    def backbone_channels(self) -> Tuple[int, int, int]:
        """Channels of C3, C4, C5."""
        return (512, 1024, 2048) if self.bottleneck else (128, 256, 512)

    @property
    def resolved_neck_channels(self) -> Tuple[int, int, int]:
        if self.neck_channels is not None:
            return self.neck_channels
        c3, c4, c5 = self.backbone_channels
        return (c3 // 2, c4 // 2, c5 // 2) if self.bottleneck else (c3, c4, c5)

    @property
    def resolved_names(self) -> Tuple[str, ...]:
        if self.names is not None:
            return self.names
        if self.num_classes == 80:
            from argos.data.coco import COCO80_NAMES

            return COCO80_NAMES
        return tuple(f"class{k}" for k in range(self.num_classes))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ResNetYOLOConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(known)}")
        return cls(**dict(d))


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """``SiLU(BN(Conv(x)))`` with 'same' padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(inplace=True),
        )


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; returns C3, C4, C5 (strides 8, 16, 32).

    Child names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so an ImageNet
    ``resnetXX`` state dict loads into it once its ``fc.*`` entries are dropped.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        import torchvision

        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {RESNET_DEPTHS}, got {depth!r}")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)


class FPNPAN(nn.Module):
    """Top-down FPN then bottom-up PAN over C3-C5.

    Top-down: ``T5 = lat5(C5)``; ``T4 = fuse4([up(reduce5(T5)), lat4(C4)])``; ``T3`` likewise.
    Bottom-up: ``P3 = T3``; ``P4 = pan4([down3(P3), T4])``; ``P5 = pan5([down4(P4), T5])``.
    Laterals and reductions are 1x1, fusions 3x3, downsamplings 3x3 stride 2.

    Args:
        in_channels: channels of C3, C4, C5.
        channels: ``(n3, n4, n5)`` output channels at strides 8, 16, 32.
    """

    def __init__(self, in_channels: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        (c3, c4, c5), (n3, n4, n5) = in_channels, channels
        self.lat5, self.lat4, self.lat3 = ConvBNAct(c5, n5), ConvBNAct(c4, n4), ConvBNAct(c3, n3)
        self.reduce5, self.reduce4 = ConvBNAct(n5, n4), ConvBNAct(n4, n3)
        self.fuse4, self.fuse3 = ConvBNAct(2 * n4, n4, 3), ConvBNAct(2 * n3, n3, 3)
        self.down3, self.down4 = ConvBNAct(n3, n3, 3, 2), ConvBNAct(n4, n4, 3, 2)
        self.pan4, self.pan5 = ConvBNAct(n3 + n4, n4, 3), ConvBNAct(n4 + n5, n5, 3)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> List[torch.Tensor]:
        t5 = self.lat5(c5)
        l4 = self.lat4(c4)
        t4 = self.fuse4(torch.cat([self._up(self.reduce5(t5), l4), l4], 1))
        l3 = self.lat3(c3)
        t3 = self.fuse3(torch.cat([self._up(self.reduce4(t4), l3), l3], 1))
        p4 = self.pan4(torch.cat([self.down3(t3), t4], 1))
        p5 = self.pan5(torch.cat([self.down4(p4), t5], 1))
        return [t3, p4, p5]


class YOLOHead(nn.Module):
    """YOLOv5 detection head: a 1x1 conv per level to ``na x (5 + nc)`` channels.

    Training mode returns the raw maps, one ``Tensor[B, na, ny, nx, 5 + nc]`` (logits) per level,
    for a loss. Eval mode returns YOLOv5's decoded predictions ``Tensor[B, N, 5 + nc]``:
    ``xy = (2 sigmoid - 0.5 + cell) * stride``, ``wh = (2 sigmoid)^2 * anchor``, then sigmoid
    objectness and class probabilities; ``N = sum(na * ny * nx)``.

    Attributes ``na``, ``no``, ``nl`` and ``anchors`` (Tensor[nl, na, 2], pixels) match YOLOv5's
    ``Detect``, so tools that recognise YOLOv5 anchor heads recognise this one.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, anchors: Sequence[Sequence[float]], strides=STRIDES
    ) -> None:
        super().__init__()
        self.nc = int(num_classes)
        self.no = self.nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer(
            "anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2), persistent=False
        )
        self.stride = torch.tensor(strides, dtype=torch.float32)
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in in_channels)
        self._init_biases()

    def _init_biases(self) -> None:
        # YOLOv5's prior: ~8 objects per 640x640 image, class probability ~0.6 / nc.
        with torch.no_grad():
            for conv, s in zip(self.m, self.stride.tolist()):
                b = conv.bias.view(self.na, self.no)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0

    def forward(self, feats: Sequence[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        maps = []
        for conv, x in zip(self.m, feats):
            p = conv(x)
            B, _, ny, nx = p.shape
            maps.append(p.view(B, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return maps
        return torch.cat([self.decode(p, i).view(p.shape[0], -1, self.no) for i, p in enumerate(maps)], 1)

    def decode(self, p: torch.Tensor, level: int) -> torch.Tensor:
        """Raw map Tensor[B, na, ny, nx, no] of ``level`` -> decoded, same shape (pixels, probabilities)."""
        _, _, ny, nx, _ = p.shape
        stride = float(self.stride[level])
        # Built per call: cached inference tensors would break autograd outside inference mode.
        gy, gx = torch.meshgrid(
            torch.arange(ny, device=p.device, dtype=p.dtype), torch.arange(nx, device=p.device, dtype=p.dtype),
            indexing="ij",
        )
        grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)
        anchor = self.anchors[level].to(p.dtype).view(1, self.na, 1, 1, 2)
        y = p.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + grid) * stride
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        return torch.cat((xy, wh, y[..., 4:]), -1)


class ResNetYOLO(nn.Module):
    """ResNet backbone + FPN/PAN neck + YOLOv5 head (see the module docstring).

    ``names`` (dict) and ``stride`` (Tensor[3]) follow YOLOv5's model attributes.
    """

    def __init__(self, config: ResNetYOLOConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNetBackbone(config.depth)
        self.neck = FPNPAN(config.backbone_channels, config.resolved_neck_channels)
        self.head = YOLOHead(config.resolved_neck_channels, config.num_classes, config.anchors)
        self.names: Dict[int, str] = dict(enumerate(config.resolved_names))
        self.stride = self.head.stride

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Tensor[B, 3, H, W] in [0, 1], ``H, W`` multiples of 32 -> see :class:`YOLOHead`."""
        return self.head(self.neck(*self.backbone(x)))


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _torch_load(path: PathLike, what: str) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable PyTorch {what} (corrupt, or not saved by torch.save): {e}") from e


def _check_state_dict(
    module: nn.Module, state: Mapping[str, Any], path: PathLike, optional: Sequence[str] = ()
) -> None:
    """Raise ValueError unless ``state`` has exactly ``module``'s keys with the same shapes; keys
    of submodules named in ``optional`` (a dotted component, e.g. ``"gate"``) may be absent."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (str -> Tensor), got {type(state).__name__}")
    own = module.state_dict()
    optional = set(optional)
    missing = [k for k in own if k not in state and not optional.intersection(k.split(".")[:-1])]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        def show(xs: List[str]) -> str:
            return ", ".join(xs[:5]) + (f", ... ({len(xs)} in all)" if len(xs) > 5 else "")

        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"shape mismatches (file vs model): {show(wrong)}" if wrong else ""]  # fmt: skip
        raise ValueError(f"{path} does not fit {type(module).__name__}: " + "; ".join(p for p in parts if p))


def load_backbone_weights(backbone: nn.Module, path: PathLike, optional: Sequence[str] = ()) -> None:
    """Load a torchvision ``resnetXX`` ImageNet state dict (``torch.save(model.state_dict())``).

    The classifier (``fc.*``) is dropped; every other key must match the backbone exactly
    (names and shapes), except those of submodules named in ``optional`` (modules the backbone
    adds to torchvision's, e.g. DynConv's ``gate``), which keep their initialisation.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, not a state dict, or keys/shapes that do not match.
    """
    state = _torch_load(path, "backbone state dict")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a torchvision ResNet state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    _check_state_dict(backbone, state, path, optional)
    backbone.load_state_dict(state, strict=False)


def save_checkpoint(net: nn.Module, config: ResNetYOLOConfig, fmt: str, path: PathLike) -> None:
    """``{"format", "version", "config", "state_dict"}`` with ``torch.save``."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"format": fmt, "version": CHECKPOINT_VERSION, "config": config.to_dict(), "state_dict": state},
               os.fspath(path))  # fmt: skip


def load_checkpoint(path: PathLike, fmt: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(config dict, state dict) of a file written by :func:`save_checkpoint` with format ``fmt``."""
    ckpt = _torch_load(path, "checkpoint")
    if not isinstance(ckpt, Mapping) or not {"format", "config", "state_dict"} <= set(ckpt):
        raise ValueError(f"{path} is not an argos {fmt} checkpoint (expected keys format, config, state_dict)")
    if ckpt["format"] != fmt:
        raise ValueError(f"{path} holds a {ckpt['format']!r} checkpoint, not {fmt!r}")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported ({CHECKPOINT_VERSION})")
    if not isinstance(ckpt["config"], Mapping):
        raise ValueError(f"{path}: config must be a dict, got {type(ckpt['config']).__name__}")
    return dict(ckpt["config"]), ckpt["state_dict"]


# --------------------------------------------------------------------------------------------
# Adapter
# --------------------------------------------------------------------------------------------


class ResNetYOLOAdapter(YOLOv5Adapter):
    """Adapter for :class:`ResNetYOLO`: YOLOv5 pre/post-processing (letterbox, NMS, native-scale
    canvases for ``packed_crops``) around a ResNet-YOLO network.

    Args:
        config: the architecture; ``None``: ``ResNetYOLOConfig(depth=depth or 50)``.
        depth: shortcut for ``config.depth`` (must agree with ``config`` when both are given).
        weights: a checkpoint written by :meth:`save` (its config is used; ``config``/``depth``,
            if given, must agree).
        backbone_weights: a torchvision ImageNet ``resnetXX`` state dict for the backbone (the
            rest stays random). Not with ``weights``.
        img_size, conf, iou, max_det, rect, device, classes, agnostic, multi_label: as
            :class:`~argos.adapters.yolov5.YOLOv5Adapter`.
    """

    checkpoint_format = "argos.resnet_yolo"
    config_class = ResNetYOLOConfig

    def __init__(
        self,
        config: Optional[ResNetYOLOConfig] = None,
        *,
        depth: Optional[int] = None,
        weights: Optional[PathLike] = None,
        backbone_weights: Optional[PathLike] = None,
        img_size: int = 640,
        conf: float = 0.001,
        iou: float = 0.65,
        max_det: int = 300,
        rect: bool = True,
        device: Union[str, torch.device] = "cpu",
        classes: Optional[Sequence[int]] = None,
        agnostic: bool = False,
        multi_label: bool = True,
    ) -> None:
        if weights is not None and backbone_weights is not None:
            raise ValueError("give weights (a full checkpoint) or backbone_weights, not both")
        config, state = self._resolve_config(config, depth, weights)
        net = self._build(config)
        if state is not None:
            _check_state_dict(net, state, weights)  # type: ignore[arg-type]
            net.load_state_dict(state)
        elif backbone_weights is not None:
            load_backbone_weights(net.backbone, backbone_weights, self._backbone_extra_modules())
        super().__init__(
            model=net, img_size=img_size, conf=conf, iou=iou, max_det=max_det, rect=rect, device=device,
            classes=classes, agnostic=agnostic, multi_label=multi_label,
        )  # fmt: skip
        self.config = config

    def _resolve_config(
        self, config: Optional[ResNetYOLOConfig], depth: Optional[int], weights: Optional[PathLike]
    ) -> Tuple[ResNetYOLOConfig, Optional[Dict[str, torch.Tensor]]]:
        """(config, state dict from ``weights`` or None)."""
        cls = self.config_class
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        state = None
        if weights is not None:
            cfg_dict, state = load_checkpoint(weights, self.checkpoint_format)
            try:
                loaded = cls.from_dict(cfg_dict)
            except TypeError as e:
                raise ValueError(f"{weights}: invalid config in checkpoint: {e}") from e
            if config is not None and config != loaded:
                raise ValueError(f"{weights} was saved with {loaded}, which differs from the given {config}")
            config = loaded
        if config is None:
            config = cls() if depth is None else cls(depth=int(depth))
        if depth is not None and int(depth) != config.depth:
            raise ValueError(f"depth={depth} disagrees with the config's depth {config.depth}")
        return config, state

    # Overridden by DynConv, whose network and extra backbone modules differ.
    def _build(self, config: ResNetYOLOConfig) -> nn.Module:
        return ResNetYOLO(config)

    def _backbone_extra_modules(self) -> Tuple[str, ...]:
        """Names of backbone submodules that torchvision's ResNet does not have."""
        return ()

    def save(self, path: PathLike) -> None:
        """Write config and weights to ``path``; load with ``ResNetYOLOAdapter(weights=path)``."""
        save_checkpoint(self._net, self.config, self.checkpoint_format, path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(depth={self.config.depth}, classes={len(self.names)}, "
            f"img_size={self.img_size}, rect={self.rect}, device={self.device})"
        )
