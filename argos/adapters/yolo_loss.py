"""A compact YOLOv5-style detection loss for anchor heads (:class:`~argos.adapters.resnet_yolo.YOLOHead`).

Matching (YOLOv5's ``build_targets``): a ground-truth box is assigned, on every level, to each
anchor whose width and height ratios to the box stay below ``anchor_t`` (both ways), in the
cell holding the box centre and in the two neighbouring cells nearest to that centre (the
decoded centre offset ``2 sigmoid - 0.5`` spans ``(-0.5, 1.5)``, so they can reach it).

Terms: box ``1 - GIoU`` on matched predictions; objectness BCE on every prediction with the
matched predictions' (detached, clamped) GIoU as target, levels weighted ``balance``; class BCE
with one-hot targets on matched predictions. Gains follow YOLOv5's defaults, scaled as YOLOv5
scales them for the number of levels, classes and the image size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["YOLOLossConfig", "YOLOLoss", "giou"]


@dataclass(frozen=True)
class YOLOLossConfig:
    """Gains and matching of :class:`YOLOLoss` (YOLOv5 ``hyp.scratch-low`` values)."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    balance: Tuple[float, float, float] = (4.0, 1.0, 0.4)


def giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalised IoU of paired boxes Tensor[N, 4] ``cx, cy, w, h`` -> Tensor[N]."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + eps
    hull = (torch.maximum(a2, b2) - torch.minimum(a1, b1)).prod(1) + eps
    iou = inter / union
    return iou - (hull - union) / hull


class YOLOLoss:
    """YOLOv5-style loss over the raw maps of an anchor head.

    Args:
        anchors: Tensor[nl, na, 2] anchor sizes in input pixels.
        strides: the levels' strides (e.g. ``(8, 16, 32)``).
        num_classes: classes of the head.

    Call with the head's training-mode output (one ``Tensor[B, na, ny, nx, 5 + nc]`` of logits
    per level) and one target dict per image: ``{"boxes": Tensor[M, 4] xyxy in network-input
    pixels, "labels": Tensor[M] int64 in 0..nc-1}``. Returns ``(loss, parts)``: the scalar to
    minimise (YOLOv5 scale: summed terms times the batch size) and its ``box``/``obj``/``cls``
    parts as floats.
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        strides: Sequence[float],
        num_classes: int,
        config: YOLOLossConfig = YOLOLossConfig(),
    ) -> None:
        if anchors.ndim != 3 or anchors.shape[-1] != 2 or anchors.shape[0] != len(strides):
            raise ValueError(f"anchors must be Tensor[nl, na, 2] with nl = len(strides), got {tuple(anchors.shape)}")
        if len(config.balance) != len(strides):
            raise ValueError(f"balance needs {len(strides)} level weights, got {config.balance}")
        self.anchors = anchors.detach().float()
        self.strides = [float(s) for s in strides]
        self.nc = int(num_classes)
        self.config = config

    def __call__(
        self, maps: Sequence[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        if len(maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} level maps, got {len(maps)}")
        B = maps[0].shape[0]
        if len(targets) != B:
            raise ValueError(f"{len(targets)} targets for a batch of {B}")
        dev = maps[0].device
        t = self._flatten(targets, dev)  # [T, 6]: image, class, cx, cy, w, h (pixels)
        cfg = self.config
        nl = len(maps)
        img_h = maps[0].shape[2] * self.strides[0]
        img_w = maps[0].shape[3] * self.strides[0]
        zero = maps[0].sum() * 0  # keeps the graph when there is nothing to match
        lbox, lobj, lcls = zero, zero, zero
        for level, p in enumerate(maps):
            if p.ndim != 5 or p.shape[-1] != 5 + self.nc:
                raise ValueError(f"level {level}: expected Tensor[B, na, ny, nx, {5 + self.nc}], got {tuple(p.shape)}")
            tobj = torch.zeros(p.shape[:4], device=dev, dtype=p.dtype)
            b, a, gj, gi, tbox, anchor, cls = self._match(t, level, p.shape[2], p.shape[3])
            if b.numel():
                ps = p[b, a, gj, gi]  # [n, 5 + nc]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchor
                g = giou(torch.cat((pxy, pwh), 1), tbox)
                lbox = lbox + (1.0 - g).mean()
                tobj[b, a, gj, gi] = g.detach().clamp(min=0).to(tobj.dtype)
                if self.nc > 1:
                    onehot = torch.zeros_like(ps[:, 5:])
                    onehot[torch.arange(len(cls), device=dev), cls] = 1.0
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot)
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * cfg.balance[level]
        scale = 3.0 / nl
        lbox = lbox * cfg.box * scale
        lobj = lobj * cfg.obj * scale * (img_h * img_w) / 640.0**2
        lcls = lcls * cfg.cls * scale * self.nc / 80.0
        parts = {"box": lbox.item(), "obj": lobj.item(), "cls": lcls.item()}
        return (lbox + lobj + lcls) * B, parts

    def _flatten(self, targets: Sequence[Mapping[str, torch.Tensor]], dev: torch.device) -> torch.Tensor:
        rows: List[torch.Tensor] = []
        for i, tg in enumerate(targets):
            boxes = torch.as_tensor(tg["boxes"], dtype=torch.float32, device=dev).reshape(-1, 4)
            labels = torch.as_tensor(tg["labels"], dtype=torch.int64, device=dev).reshape(-1)
            if len(boxes) != len(labels):
                raise ValueError(f"target {i}: {len(boxes)} boxes but {len(labels)} labels")
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.nc):
                raise ValueError(f"target {i}: labels must be in 0..{self.nc - 1}")
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = (wh > 0).all(1)
            cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
            idx = torch.full((len(labels), 1), float(i), device=dev)
            rows.append(torch.cat((idx, labels[:, None].float(), cxcy, wh), 1)[keep])
        return torch.cat(rows) if rows else torch.zeros(0, 6, device=dev)

    def _match(self, t: torch.Tensor, level: int, ny: int, nx: int):
        """Matched (image, anchor, row, col, target box in cell units relative to the cell,
        anchor in cells, class) for one level."""
        dev = t.device
        anchors = self.anchors[level].to(dev) / self.strides[level]  # [na, 2] cells
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        if not len(t):
            return empty, empty, empty, empty, torch.zeros(0, 4, device=dev), torch.zeros(0, 2, device=dev), empty
        g = t[:, 2:6] / self.strides[level]  # [T, 4] cells
        r = g[None, :, 2:] / anchors[:, None]  # [na, T, 2]
        ok = torch.max(r, 1 / r).amax(2) < self.config.anchor_t
        a, ti = ok.nonzero(as_tuple=True)
        gxy = g[ti, :2]
        # The centre cell, plus the horizontal and vertical neighbours nearest to the centre.
        frac = gxy % 1
        grid = torch.tensor([nx, ny], device=dev, dtype=gxy.dtype)
        left_up = (frac < 0.5) & (gxy > 1)
        right_down = (frac > 0.5) & (gxy < grid - 1)
        offsets = [torch.zeros_like(gxy)]
        keeps = [torch.ones(len(gxy), dtype=torch.bool, device=dev)]
        for axis in (0, 1):
            for sel, step in ((left_up, 1.0), (right_down, -1.0)):
                off = torch.zeros_like(gxy)
                off[:, axis] = step * 0.5
                offsets.append(off)
                keeps.append(sel[:, axis])
        a_all, ti_all, cells = [], [], []
        for off, keep in zip(offsets, keeps):
            a_all.append(a[keep])
            ti_all.append(ti[keep])
            cells.append((gxy[keep] - off[keep]).floor())
        a, ti, cell = torch.cat(a_all), torch.cat(ti_all), torch.cat(cells)
        gi = cell[:, 0].long().clamp(0, nx - 1)
        gj = cell[:, 1].long().clamp(0, ny - 1)
        tbox = torch.cat((g[ti, :2] - torch.stack((gi, gj), 1).to(g.dtype), g[ti, 2:]), 1)
        return t[ti, 0].long(), a, gj, gi, tbox, anchors[a], t[ti, 1].long()
