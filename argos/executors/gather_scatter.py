"""The ``gather_scatter`` executor: the detector's convolutions compute only where proposals say.

The adapter's module is rewritten once by :func:`convert` (see ``argos/sparse/``):
every conv becomes a layer that, under a frame's mask, gathers the active tiles or positions of
its input into a dense tensor, runs the dense kernel and scatters back, leaving zeros elsewhere.
Semantics: the result equals the network in which each conv output (each ultralytics ``Conv``
block output, BatchNorm and activation included) is computed densely and multiplied by the
mask at that layer's resolution. With an all-active mask the original layers run, bit-exact.

Each proposal mask is mapped into the letterboxed network input (letterbox padding inactive),
so the network sees zeros outside it; a batch of whole-frame proposals runs the original
network. Detections whose centre lies off the mask are dropped, before NMS where the adapter's
raw output format is known (YOLOv5 adapter), so the constant predictions of inactive cells can
neither crowd out nor suppress real ones; ultralytics heads' class logits are also floored on
inactive cells, so that heads which pick their top-k inside the model never pick them.
"""
from __future__ import annotations

import copy
import time
import weakref
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from argos.adapters.base import Adapter
from argos.executors.base import Executor, check_background, is_segmentation, keep_inside
from argos.sparse import SparseContext, SparseConv2d, context_of, convert, sparse_layers
from argos.sparse.masks import KERNELS
from argos.structures import Detections, RegionProposals

__all__ = ["GatherScatterExecutor", "convert", "context_of", "sparse_layers", "SparseContext", "letterbox_mask"]


def letterbox_mask(mask: torch.Tensor, meta: Any, input_hw: Tuple[int, int]) -> torch.Tensor:
    """Map an original-image mask into the network input.

    Args:
        mask (Tensor[H, W] bool): proposal mask in original-image pixels.
        meta: a :class:`~argos.adapters.yolov5.LetterboxMeta` (``ratio``, ``pad``, ``orig_size``).
        input_hw: ``(h, w)`` of the network input (the batch, padding included).

    Returns:
        Tensor[h, w] bool: a network pixel is active when any original pixel under it is;
        letterbox and batch padding are inactive.
    """
    (rw, rh), (left, top) = meta.ratio, meta.pad
    H, W = mask.shape
    new_w, new_h = int(round(W * rw)), int(round(H * rh))
    out = torch.zeros(input_hw, dtype=torch.bool)
    if (new_h, new_w) == (H, W):
        resized = mask
    else:
        resized = F.adaptive_max_pool2d(mask[None, None].to(torch.float32), (new_h, new_w))[0, 0] > 0
    h = min(new_h, input_hw[0] - top)
    w = min(new_w, input_hw[1] - left)
    out[top : top + h, left : left + w] = resized[:h, :w]
    return out


def _suppress_outside(raw: Any, head_format: str, mask: torch.Tensor) -> Any:
    """Zero the scores of raw YOLO predictions whose box centre is off ``mask`` (Tensor[B, h, w]).

    Formats as in :func:`argos.adapters.yolov5.non_max_suppression`.
    """
    pred = raw[0] if isinstance(raw, (tuple, list)) else raw
    B, h, w = mask.shape
    m = mask.to(pred.device)
    if head_format == "anchor_free":  # [B, 4 + nc, N], cx cy w h
        cx, cy = pred[:, 0], pred[:, 1]
    elif head_format == "anchor":  # [B, N, 5 + nc], cx cy w h obj cls
        cx, cy = pred[..., 0], pred[..., 1]
    else:  # end2end [B, K, 6], x1 y1 x2 y2 score cls
        cx, cy = (pred[..., 0] + pred[..., 2]) / 2, (pred[..., 1] + pred[..., 3]) / 2
    ix = cx.floor().long().clamp_(0, w - 1)
    iy = cy.floor().long().clamp_(0, h - 1)
    b = torch.arange(B, device=pred.device).view(B, 1).expand_as(ix)
    keep = m[b, iy, ix]  # [B, N]
    if head_format == "anchor_free":
        pred[:, 4:] *= keep[:, None].to(pred.dtype)
    else:
        pred[..., 4] *= keep.to(pred.dtype)
    return raw


# Inactive cells of a head's class-logit convs hold this instead of 0 (sigmoid -> 0 score), so
# that heads which pick their top-k candidates inside the model (end-to-end YOLO heads) never
# pick inactive cells. Representable in float16.
LOGIT_FLOOR = -1e4


def _floor_class_logits(module: torch.nn.Module) -> int:
    """Set :data:`LOGIT_FLOOR` on the class-logit convs of ultralytics detection heads; returns
    how many. (Anchor-based YOLOv5 heads need nothing: their inactive cells are suppressed by
    box centre before NMS.)"""
    n = 0
    for m in module.modules():
        if not all(hasattr(m, a) for a in ("cv3", "nc", "reg_max")):
            continue
        for name in ("cv3", "one2one_cv3"):
            for branch in getattr(m, name, None) or ():
                last = branch[-1] if isinstance(branch, torch.nn.Sequential) else branch
                if isinstance(last, SparseConv2d) and last.out_channels == m.nc:
                    last.inactive_value = LOGIT_FLOOR
                    n += 1
    return n


class GatherScatterExecutor(Executor):
    """Runs the detector's convolutions only on the proposed regions (block-sparse gather-scatter).

    Args:
        halo: extra context around the mask, in network-input pixels; each layer's mask is
            dilated by ``ceil(halo / stride)`` cells. 0 computes exactly the proposed region
            (rounded outward to each layer's cells).
        tile: see :func:`convert` (``None``: a per-layer, per-frame choice by a cost model).
        drop_outside: drop detections whose box centre lies off the mask.
        dense_above: a batch whose mean active share of the network input exceeds this runs the
            whole network densely (then filtered by the mask like ``masked``): near-full masks
            gain little and the sparse bookkeeping costs more on small models. 1.0 disables.
        inplace: convert the adapter's own module (it then runs the sparse layers; outside this
            executor they behave exactly as before) instead of a private deep copy of the adapter.
        background: segmentation adapters: label of the pixels off the mask (always applied);
            ``None``: the adapter's ``ignore_index``. See :attr:`Executor.background`.
        kernel: ``"auto"`` (the fused Triton kernel on CUDA when Triton is installed, PyTorch
            paths otherwise), ``"torch"`` or ``"triton"``; see :class:`SparseContext`.

    Segmentation adapters (``task == "segmentation"``) run the same way; the adapter's
    ``sparse_exclude`` (module types, optional) is passed to :func:`convert` as ``exclude``,
    e.g. PSPNet's pyramid pooling branches, whose convs run on pooled ``bins x bins`` maps.

    ``last_stats`` adds to the :class:`Executor` keys: ``overhead_ms`` (mask mapping and
    filtering), ``density`` (active share of the network input, per image), ``mode``
    (``"sparse"`` or ``"dense"``) and ``breakdown``
    (ms of the sparse forward: ``index`` building, ``gather``, ``conv``, ``scatter`` and
    ``dense`` = everything else, i.e. the layers left dense). ``gflops`` counts the
    multiply-accumulates actually executed (whole tiles, x2), plus the unconverted layers.
    """

    def __init__(
        self,
        halo: float = 0.0,
        tile: Any = None,
        drop_outside: bool = True,
        dense_above: float = 0.75,
        inplace: bool = False,
        background: Optional[int] = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.background = check_background(background)
        if halo < 0:
            raise ValueError(f"halo must be >= 0 pixels, got {halo}")
        if not 0.0 <= dense_above <= 1.0:
            raise ValueError(f"dense_above must be in [0, 1], got {dense_above}")
        self.dense_above = float(dense_above)
        self.halo, self.tile = float(halo), tile
        self.drop_outside, self.inplace = bool(drop_outside), bool(inplace)
        # adapter -> (adapter that runs the sparse module, its context); weak so adapters can go.
        self._converted: "weakref.WeakKeyDictionary[Adapter, Tuple[Adapter, SparseContext]]" = (
            weakref.WeakKeyDictionary()
        )

    def check_adapter(self, adapter: Adapter) -> None:
        adapter.module  # an adapter with no torch network (an ONNX runtime) says so here

    def prepare(self, adapter: Adapter) -> Tuple[Adapter, SparseContext]:
        """Convert ``adapter``'s module once; returns (the adapter to run, its context)."""
        entry = self._converted.get(adapter)
        if entry is None:
            ctx = SparseContext(halo=self.halo, kernel=self.kernel)
            adapter.module  # an adapter with no torch network (an ONNX runtime) says so here
            runner = adapter if self.inplace else copy.deepcopy(adapter)
            module = runner.module
            exclude = tuple(getattr(adapter, "sparse_exclude", ()))
            new = convert(module, inplace=True, tile=self.tile, context=ctx, exclude=exclude)
            if new is not module:
                raise TypeError(f"{type(adapter).__name__}.module is a bare Conv2d; gather_scatter needs a network")
            _floor_class_logits(new)
            entry = (runner, ctx)
            self._converted[adapter] = entry
        return entry

    def run(
        self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]
    ) -> List[Detections]:
        self._check(images, proposals)
        t0 = time.perf_counter()
        active = [i for i, p in enumerate(proposals) if bool(p.mask.any())]
        dets: List[Detections] = [self._empty_output(adapter, im.shape[:2]) for im in images]
        gflops = [0.0] * len(images)
        density = [0.0] * len(images)
        stats = {"detector_ms": 0.0, "overhead_ms": 0.0, "gflops": gflops, "input_hw": (0, 0), "density": density,
                 "mode": "empty", "breakdown": {}}  # fmt: skip
        if not active:
            stats["overhead_ms"] = (time.perf_counter() - t0) * 1e3
            self.last_stats = stats
            return dets
        runner, ctx = self.prepare(adapter)
        overhead = (time.perf_counter() - t0) * 1e3

        with torch.inference_mode():
            t1 = time.perf_counter()
            batch, metas = adapter.preprocess([images[i] for i in active])
            input_hw = (int(batch.shape[-2]), int(batch.shape[-1]))
            t2 = time.perf_counter()
            whole = all(bool(proposals[i].mask.all()) for i in active)
            if whole:
                # Whole frames: the original network, letterbox padding included (bit-exact).
                net_mask = torch.ones(len(active), *input_hw, dtype=torch.bool)
            else:
                net_mask = torch.stack([letterbox_mask(proposals[i].mask, m, input_hw) for i, m in zip(active, metas)])
            run_mask = net_mask
            if not whole and float(net_mask.float().mean()) > self.dense_above:
                run_mask = torch.ones_like(net_mask)
            t3 = time.perf_counter()
            with ctx.activate(run_mask.to(batch.device)):
                raw = runner.forward(batch)
                sparse = ctx.mode == "sparse"
                st = ctx.stats
            t4 = time.perf_counter()
            head_format = getattr(adapter, "head_format", None)
            if not whole and self.drop_outside and head_format in ("anchor", "anchor_free", "end2end"):
                raw = _suppress_outside(raw, head_format, net_mask)
            t5 = time.perf_counter()
            out = adapter.postprocess(raw, metas)
            t6 = time.perf_counter()
        for i, d in zip(active, out):
            dets[i] = d
        if is_segmentation(adapter):
            dets = [self._fill_outside(adapter, d, p.mask) for d, p in zip(dets, proposals)]
        elif self.drop_outside:
            dets = [keep_inside(d, p.mask) for d, p in zip(dets, proposals)]

        dense_gflops = adapter.flops(input_hw)
        for k, i in enumerate(active):
            density[i] = float(net_mask[k].float().mean())
            # Unconverted layers (and a full-frame batch) count at their dense cost.
            gflops[i] = dense_gflops - 2 * st.dense_macs / 1e9 + 2 * st.macs[k] / 1e9 if sparse else dense_gflops
        forward_ms = (t4 - t3) * 1e3
        kernels = st.index_ms + st.gather_ms + st.conv_ms + st.scatter_ms
        stats.update(
            detector_ms=(t2 - t1 + t4 - t3 + t6 - t5) * 1e3,
            overhead_ms=overhead + (t3 - t2 + t5 - t4) * 1e3 + (time.perf_counter() - t6) * 1e3,
            input_hw=input_hw,
            mode="sparse" if sparse else "dense",
            breakdown={
                "forward": forward_ms, "index": st.index_ms, "gather": st.gather_ms, "conv": st.conv_ms,
                "scatter": st.scatter_ms, "dense": max(0.0, forward_ms - kernels),
            } if sparse else {"forward": forward_ms, "dense": forward_ms},
        )  # fmt: skip
        self.last_stats = stats
        return dets
