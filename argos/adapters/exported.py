"""Exported detectors: an ONNX file run under ONNX Runtime or OpenVINO.

Most CPU users who care about speed have exported their detector already. This adapter runs
that file as it is, so argos can wrap it and measure against it.

The output layout is recognised from the graph (one probe run on a blank image):

==========  ==========================================  =======================================
layout      outputs                                     decoding
==========  ==========================================  =======================================
yolov8      one ``[B, 4 + C, N]`` (ultralytics v8/11,   ``cx, cy, w, h`` then class scores
            v5u)
yolov5      one ``[B, 3 N, 5 + C]`` (original YOLOv5)   ``cx, cy, w, h, obj`` then class probs
yolox       one ``[B, N, 5 + C]`` (YOLOX, raw grid)     ``(x + gx) s, (y + gy) s, e^w s, e^h s``
end2end     one ``[B, K, 6]`` (ultralytics end2end)     ``x1, y1, x2, y2, score, class``
nanodet     per level ``[B, hw, C]`` class scores and   softmax over ``R + 1`` bins per side,
            ``[B, hw, 4 (R + 1)]`` distributions        distances from ``(x + 0.5) s``
==========  ==========================================  =======================================

``N`` is the number of grid cells over strides 8, 16, 32 (and 64 for P6 models); YOLOv5 has
three anchors per cell, which is how it is told apart from YOLOX. ``layout=`` overrides.

Class names, stride and input size come from the graph's metadata where the exporter wrote them
(ultralytics and ``argos export detector`` write ``names``, ``stride`` and ``imgsz``); ``names=``
overrides, and an 80-class model without names gets the COCO names.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from argos.adapters.base import Adapter, check_batch, check_thresholds
from argos.adapters.yolov5 import LetterboxMeta, boxes_to_original, letterbox, non_max_suppression, stack_padded
from argos.data.coco import COCO80_NAMES
from argos.metrics.flops import bookkeeping
from argos.structures import Detections

__all__ = ["ExportedAdapter", "LAYOUTS", "BACKENDS", "read_metadata", "detect_layout", "layout_info", "decode", "onnx_gflops",
           "OpenVINOAdapter"]

LAYOUTS = ("yolov8", "yolov5", "yolox", "end2end", "nanodet")
BACKENDS = ("onnxruntime", "openvino")
_STRIDE_SETS = ((8, 16, 32), (8, 16, 32, 64))
#: per layout: (pixel scale, channel order, mean, std) the exporters' own preprocessing uses.
_INPUT_DEFAULTS = {
    "yolov8": (1 / 255.0, "rgb", None, None),
    "yolov5": (1 / 255.0, "rgb", None, None),
    "end2end": (1 / 255.0, "rgb", None, None),
    "yolox": (1.0, "bgr", None, None),
    "nanodet": (1.0, "bgr", (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)),
}


# --------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------


def read_metadata(path: Union[str, os.PathLike]) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file (key -> value strings). Raises ``ValueError`` for a
    file that is not a readable ONNX model (truncated, corrupt, or something else entirely)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX model (truncated or corrupt?): {err}") from None
    if not proto.graph.node or not proto.graph.input:
        raise ValueError(f"{path} holds no ONNX graph (truncated or corrupt?)")
    return {p.key: p.value for p in proto.metadata_props}


def _parse_names(value: Any) -> Dict[int, str]:
    """``{0: 'person', ...}`` (ultralytics), ``['person', ...]``, a dict or a list -> id -> name."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"cannot read class names from {value[:80]!r}") from None
    if isinstance(value, dict):
        return {int(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return {i: str(v) for i, v in enumerate(value)}
    raise ValueError(f"class names must be a list or a dict, got {type(value).__name__}")


def load_names(names: Any) -> Dict[int, str]:
    """``names=``: a list, a dict, or a text file with one name a line."""
    if isinstance(names, (str, os.PathLike)) and Path(names).is_file():
        lines = [ln.strip() for ln in Path(names).read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise ValueError(f"names file {names} is empty; it needs one class name a line")
        return dict(enumerate(lines))
    if isinstance(names, (str, os.PathLike)) and not str(names).lstrip().startswith(("[", "{")):
        raise FileNotFoundError(f"names file not found: {names}")
    return _parse_names(names)


class _OrtRuntime:
    """An ONNX Runtime CPU session (:func:`argos._onnxruntime.cpu_session`): threads fixed, no spinning workers."""

    backend = "onnxruntime"

    def __init__(self, path: str, threads: int, precision: Optional[str] = None) -> None:
        if precision not in (None, "f32"):
            raise ValueError(f"onnxruntime runs the graph's own float32; precision={precision!r} is for backend='openvino'")
        from argos._onnxruntime import cpu_session

        try:
            self.session = cpu_session(path, threads, missing="backend='onnxruntime' needs it: pip install "
                                                              "onnxruntime (or argos-cv[export])")
        except ImportError:
            raise
        except Exception as err:
            raise ValueError(f"onnxruntime cannot load {path}: {err}") from None
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise ValueError(f"{path} has {len(inp)} inputs ({[i.name for i in inp]}); a detector takes one image")
        self.input_name = inp[0].name
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in inp[0].shape]
        self.input_type = inp[0].type
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class _OpenVinoRuntime:
    """The same file compiled by OpenVINO for the CPU, latency hint, threads fixed."""

    backend = "openvino"

    def __init__(self, path: str, threads: int, precision: Optional[str] = None) -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise ImportError("backend='openvino' needs OpenVINO: pip install openvino (or argos-cv[export])") from err
        core = ov.Core()
        try:
            model = core.read_model(path)
        except Exception as err:
            raise ValueError(f"OpenVINO cannot read {path}: {err}") from None
        if len(model.inputs) != 1:
            raise ValueError(f"{path} has {len(model.inputs)} inputs; a detector takes one image")
        port = model.inputs[0]
        self.input_name = port.get_any_name()
        self.input_shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        self.input_type = str(port.get_element_type())
        self.output_names = [o.get_any_name() for o in model.outputs]
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        result = self.request.infer({0: x})
        return [np.array(result[o]) for o in self.compiled.outputs]


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


def _cells(hw: Tuple[int, int], strides: Sequence[int]) -> List[int]:
    h, w = hw
    return [(-(-h // s)) * (-(-w // s)) for s in strides]


def _describe(outputs: Sequence[np.ndarray], names: Sequence[str]) -> str:
    return ", ".join(f"{n} {tuple(o.shape)}" for n, o in zip(names, outputs))


def detect_layout(outputs: Sequence[np.ndarray], output_names: Sequence[str], input_hw: Tuple[int, int]) -> Tuple[str, Dict[str, Any]]:
    """Which layout ``outputs`` (one run at network input ``input_hw``) are in.

    Returns ``(layout, info)``: ``info`` has ``nc`` (classes) and, where the layout needs them,
    ``strides``, ``reg_max`` and ``levels`` (the output indices, per level ``(cls, dis)``).
    Raises ``ValueError`` naming the output shapes when no layout fits.
    """
    first = outputs[0]
    if first.ndim == 3 and first.shape[0] >= 1:
        a, b = first.shape[1:]
        for strides in _STRIDE_SETS:
            n = sum(_cells(input_hw, strides))
            if b == n and a >= 5:
                return "yolov8", {"nc": a - 4, "strides": strides}
            if a == 3 * n and b >= 6:
                return "yolov5", {"nc": b - 5, "strides": strides}
            if a == n and b >= 6:
                return "yolox", {"nc": b - 5, "strides": strides}
        if b == 6 and len(outputs) == 1:
            return "end2end", {"nc": None}
    levels = _nanodet_levels(outputs, output_names, input_hw)
    if levels is not None:
        return "nanodet", levels
    raise ValueError(
        f"cannot recognise the detector's output layout from its outputs at input {input_hw[0]}x{input_hw[1]}: "
        f"{_describe(outputs, output_names)}. Known layouts: {', '.join(LAYOUTS)} (see argos.adapters.exported); "
        "if this is a detector, name its layout with layout=... (--detector-opt layout=...)"
    )


def layout_info(layout: str, outputs: Sequence[np.ndarray], output_names: Sequence[str], input_hw: Tuple[int, int]) -> Dict[str, Any]:
    """What :func:`detect_layout` returns, for a layout the user named: the outputs are checked
    against it, with an error naming their shapes where they do not fit."""
    first = outputs[0]
    cells = {sum(_cells(input_hw, st)): st for st in _STRIDE_SETS}
    bad = ValueError(f"layout={layout!r} does not fit the outputs at input {input_hw[0]}x{input_hw[1]}: "
                     f"{_describe(outputs, output_names)}")
    if layout == "nanodet":
        levels = _nanodet_levels(outputs, output_names, input_hw)
        if levels is None:
            raise bad
        return levels
    if first.ndim != 3:
        raise bad
    a, b = first.shape[1:]
    if layout == "yolov8" and a >= 5:
        return {"nc": a - 4, "strides": cells.get(b, _STRIDE_SETS[0])}
    if layout == "yolov5" and b >= 6:
        return {"nc": b - 5, "strides": cells.get(a // 3, _STRIDE_SETS[0])}
    if layout == "yolox" and b >= 6 and a in cells:
        return {"nc": b - 5, "strides": cells[a]}
    if layout == "end2end" and b == 6:
        return {"nc": None}
    raise bad


def _nanodet_levels(outputs: Sequence[np.ndarray], output_names: Sequence[str], input_hw) -> Optional[Dict[str, Any]]:
    """Per-level (class, distribution) output pairs, strides from the cell counts; None if not NanoDet."""
    if len(outputs) < 2 or len(outputs) % 2 or any(o.ndim != 3 for o in outputs):
        return None
    by_cells: Dict[int, List[int]] = {}
    for i, o in enumerate(outputs):
        by_cells.setdefault(int(o.shape[1]), []).append(i)
    if any(len(v) != 2 for v in by_cells.values()):
        return None
    for strides in _STRIDE_SETS + ((8, 16, 32, 64, 128),):
        cells = _cells(input_hw, strides)
        if sorted(cells) != sorted(by_cells) or len(cells) != len(by_cells):
            continue
        levels, nc, dis = [], set(), set()
        for s, n in zip(strides, cells):
            i, j = by_cells[n]
            ni, nj = output_names[i].lower(), output_names[j].lower()
            if ("dis" in ni or "reg" in ni or "box" in ni) and not ("dis" in nj or "reg" in nj or "box" in nj):
                i, j = j, i
            elif not any(k in ni + nj for k in ("dis", "reg", "box", "cls")):
                ki, kj = outputs[i].shape[2], outputs[j].shape[2]
                if (ki % 4 == 0) == (kj % 4 == 0):
                    return None  # cannot tell class scores from distributions by name or width
                if ki % 4 == 0:
                    i, j = j, i
            levels.append((i, j))
            nc.add(int(outputs[i].shape[2]))
            dis.add(int(outputs[j].shape[2]))
        if len(nc) != 1 or len(dis) != 1 or next(iter(dis)) % 4:
            return None
        return {"nc": nc.pop(), "strides": strides, "reg_max": dis.pop() // 4 - 1, "levels": levels}
    return None


def _grid(hw: Tuple[int, int], strides: Sequence[int], offset: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (Tensor[N, 2] x, y in input pixels, ``(i + offset) s``) and Tensor[N] strides."""
    xy, st = [], []
    for s in strides:
        gh, gw = -(-hw[0] // s), -(-hw[1] // s)
        ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
        xy.append((torch.stack((xs, ys), -1).reshape(-1, 2) + offset) * s)
        st.append(torch.full((gh * gw,), float(s)))
    return torch.cat(xy), torch.cat(st)


def decode(layout: str, outputs: Sequence[np.ndarray], info: Dict[str, Any], input_hw: Tuple[int, int]) -> Tuple[torch.Tensor, str]:
    """Raw outputs -> (predictions, head format) for :func:`argos.adapters.yolov5.non_max_suppression`."""
    if layout in ("yolov8", "yolov5", "end2end"):
        fmt = {"yolov8": "anchor_free", "yolov5": "anchor", "end2end": "end2end"}[layout]
        return torch.from_numpy(np.ascontiguousarray(outputs[0], dtype=np.float32)), fmt
    if layout == "yolox":
        p = torch.from_numpy(np.array(outputs[0], dtype=np.float32))
        centres, st = _grid(input_hw, info["strides"], 0.0)
        p[..., :2] = (p[..., :2] + centres / st[:, None]) * st[:, None]
        p[..., 2:4] = p[..., 2:4].exp() * st[:, None]
        return p, "anchor"
    if layout == "nanodet":
        bins = info["reg_max"] + 1
        centres, st = _grid(input_hw, info["strides"], 0.5)
        cls = torch.cat([torch.from_numpy(np.asarray(outputs[i], np.float32)) for i, _ in info["levels"]], 1)
        dis = torch.cat([torch.from_numpy(np.asarray(outputs[j], np.float32)) for _, j in info["levels"]], 1)
        b = dis.shape[0]
        prob = dis.reshape(b, -1, 4, bins).softmax(-1)
        dist = (prob * torch.arange(bins, dtype=torch.float32)).sum(-1) * st[None, :, None]  # [B, N, 4] l t r b
        x1y1, x2y2 = centres - dist[..., :2], centres + dist[..., 2:]
        box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1)
        return torch.cat((box, cls), -1).transpose(1, 2).contiguous(), "anchor_free"
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


class ExportedAdapter(Adapter):
    """An exported detector (``.onnx``) under ONNX Runtime or OpenVINO.

    Args:
        weights: the ``.onnx`` file.
        backend: ``"onnxruntime"`` or ``"openvino"``.
        img_size: long side of the network input. Default: the graph's ``imgsz`` metadata, else its
            fixed input size, else 640. A fixed-shape export runs at its own size only.
        layout: one of :data:`LAYOUTS`; default: recognised from the graph.
        names: class names (a list, a dict, or a text file with one a line); default: the graph's
            ``names`` metadata, else the COCO names for an 80-class model, else ``class0``, ...
        conf, iou, max_det, classes, agnostic, multi_label: as :class:`~argos.adapters.yolov5.YOLOv5Adapter`.
        threads: runtime threads; default ``torch.get_num_threads()``.
        input_scale, channel_order, mean, std: how pixels become the network input,
            ``((pixel * input_scale) - mean) / std`` in ``channel_order``; defaults per layout
            (``[0, 1]`` RGB for the YOLOs, 0-255 BGR for YOLOX, BGR mean/std for NanoDet).
        rect: letterbox only to the next stride multiple (dynamic-shape exports only).
        precision: OpenVINO's inference precision (``"f32"``, ``"bf16"``, ``"f16"``); default: the
            runtime's own choice, which is bf16 on CPUs with AMX (boxes then move by about a pixel
            against float32; the wrapped and unwrapped runs use the same precision).

    A dynamic-shape export runs every canvas at its own size (``preprocess_native``); a
    fixed-shape one gets canvases of its input size (:attr:`fixed_input_hw`). A dynamic batch
    dimension takes a whole pack in one call; a fixed batch of 1 runs the images in a loop.
    The ``gather_scatter`` executor needs a torch model and refuses this adapter.
    """

    pad_value = 114

    def __init__(
        self,
        weights: Union[str, os.PathLike],
        backend: str = "onnxruntime",
        img_size: Optional[int] = None,
        layout: Optional[str] = None,
        names: Any = None,
        conf: float = 0.001,
        iou: float = 0.65,
        max_det: int = 300,
        classes: Optional[Sequence[int]] = None,
        agnostic: bool = False,
        multi_label: bool = True,
        threads: Optional[int] = None,
        input_scale: Optional[float] = None,
        channel_order: Optional[str] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        rect: bool = True,
        precision: Optional[str] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if torch.device(device).type != "cpu":
            raise ValueError(f"the exported-model adapter runs on the CPU; got device={device!r}")
        check_thresholds(conf, iou, max_det)
        if channel_order not in (None, "rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.path = Path(weights)
        self.metadata = read_metadata(self.path)
        self.backend = backend
        self.threads = int(threads) if threads else max(1, torch.get_num_threads())
        if precision not in (None, "f32", "bf16", "f16"):
            raise ValueError(f"precision must be None, 'f32', 'bf16' or 'f16', got {precision!r}")
        self.precision = precision
        self._rt = (_OrtRuntime if backend == "onnxruntime" else _OpenVinoRuntime)(str(self.path), self.threads, precision)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.agnostic, self.multi_label = bool(agnostic), bool(multi_label)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.max_nms = 30000

        shape = self._rt.input_shape
        if len(shape) != 4:
            raise ValueError(f"{self.path.name}: input {self._rt.input_name!r} has shape {shape}; a detector takes "
                             "[batch, 3, height, width]")
        if shape[1] not in (None, 3):
            raise ValueError(f"{self.path.name}: input {self._rt.input_name!r} has {shape[1]} channels "
                             f"(shape {shape}); argos feeds 3-channel colour images")
        if "float" not in self._rt.input_type and "f32" not in self._rt.input_type:
            raise ValueError(f"{self.path.name}: input type {self._rt.input_type}; argos feeds float32 images")
        self.batch_size: Optional[int] = shape[0]
        fixed = (shape[2], shape[3]) if shape[2] and shape[3] else None
        if (shape[2] is None) != (shape[3] is None):
            raise ValueError(f"{self.path.name}: input shape {shape} fixes one side only; export both fixed or both dynamic")
        self.stride = int(self.metadata.get("stride", 32))
        meta_size = _meta_imgsz(self.metadata.get("imgsz"))
        if fixed is not None:
            if fixed[0] != fixed[1]:
                raise ValueError(f"{self.path.name}: fixed input {fixed[0]}x{fixed[1]} is not square; argos letterboxes "
                                 "to a square or to a dynamic shape: re-export square or with dynamic height/width")
            if img_size is not None and int(img_size) != fixed[0]:
                raise ValueError(f"{self.path.name} has a fixed {fixed[0]}x{fixed[1]} input; img_size={img_size} "
                                 f"cannot run on it: pass img_size={fixed[0]} (--img-size {fixed[0]}) or re-export "
                                 "with dynamic height/width (argos export detector, the default)")
            self.img_size, self.rect = fixed[0], False
        else:
            self.img_size, self.rect = int(img_size or meta_size or 640), bool(rect)
        self.fixed_input_hw: Optional[Tuple[int, int]] = fixed
        if self.img_size % self.stride:
            raise ValueError(f"img_size {self.img_size} must be a multiple of the model stride {self.stride}")

        # One probe run on a blank input tells the layout and the number of classes.
        probe_hw = fixed or _probe_hw(self.img_size, self.stride)
        try:
            outputs = self._rt(np.zeros((self.batch_size or 1, 3, *probe_hw), np.float32))
        except Exception as err:
            raise ValueError(f"{self.path.name} fails on a {probe_hw[0]}x{probe_hw[1]} input: {err}") from None
        if layout is None and self.metadata.get("layout") in LAYOUTS:
            layout = self.metadata["layout"]  # written by argos export detector
        if layout is None:
            layout, info = detect_layout(outputs, self._rt.output_names, probe_hw)
        else:
            info = layout_info(layout, outputs, self._rt.output_names, probe_hw)
        self.layout, self.layout_info = layout, info
        scale, order, m, s = _INPUT_DEFAULTS[self.layout]
        self.input_scale = float(scale if input_scale is None else input_scale)
        self.channel_order = channel_order or order
        self.mean = None if (mean if mean is not None else m) is None else np.asarray(mean if mean is not None else m, np.float32)
        self.std = None if (std if std is not None else s) is None else np.asarray(std if std is not None else s, np.float32)

        if names is not None:
            self.names = load_names(names)
        elif "names" in self.metadata:
            self.names = _parse_names(self.metadata["names"])
        elif info.get("nc") == 80:
            self.names = dict(enumerate(COCO80_NAMES))
        else:
            self.names = {i: f"class{i}" for i in range(int(info.get("nc") or 0))}
        nc = info.get("nc")
        if nc is not None and len(self.names) != nc:
            raise ValueError(f"{len(self.names)} class names for a model with {nc} classes ({self.path.name})")
        import torchvision.ops  # noqa: F401  (NMS; a second-long import belongs to loading, not to the first frame)

        self.head_format = {"yolov8": "anchor_free", "nanodet": "anchor_free", "end2end": "end2end"}.get(self.layout, "anchor")

    # ---- Adapter API ----

    @property
    def module(self) -> nn.Module:
        raise TypeError(
            f"{self.path.name} runs under {self.backend}, not torch: the gather_scatter executor rewrites a torch "
            "network and cannot run it; use executor='packed_crops' or 'masked', or wrap the .pt checkpoint"
        )

    def flops(self, input_hw: Tuple[int, int]) -> float:
        """GFLOPs of one forward at ``input_hw``: 2 x the Conv/Gemm/MatMul MACs of the graph (onnx shape inference)."""
        def count(hw: Tuple[int, int]) -> float:
            with bookkeeping():  # not inference: Wrapped leaves it out of the timings
                return onnx_gflops(self.path, (1, 3, *hw))

        return self._cached_flops(input_hw, count)

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """Letterbox to ``img_size`` (a fixed-shape export: to its square input) and stack,
        as :meth:`YOLOv5Adapter.preprocess <argos.adapters.yolov5.YOLOv5Adapter.preprocess>`."""
        return self._batch(images, native=False)

    def preprocess_native(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        """Images already at network scale (canvases): padded, never resized. A fixed-shape export
        pads each to its input size; larger ones are refused."""
        return self._batch(images, native=True)

    def _batch(self, images: Sequence[np.ndarray], native: bool) -> Tuple[torch.Tensor, List[LetterboxMeta]]:
        check_batch(images)
        boxed, metas = [], []
        for im in images:
            if native and self.fixed_input_hw is not None:
                b, meta = _pad_to(im, self.fixed_input_hw, self.pad_value)
            else:
                size, rect = (max(im.shape[:2]), True) if native else (self.img_size, self.rect)
                b, meta = letterbox(im, size, self.stride, rect, self.pad_value)
            boxed.append(b)
            metas.append(meta)
        arr = stack_padded(boxed, self.pad_value)
        if self.channel_order == "bgr":
            arr = arr[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
        if self.input_scale != 1.0:
            x.mul_(self.input_scale)
        if self.mean is not None:
            x.sub_(torch.from_numpy(self.mean).view(1, 3, 1, 1))
        if self.std is not None:
            x.div_(torch.from_numpy(self.std).view(1, 3, 1, 1))
        return x.contiguous(), metas

    def forward(self, batch: torch.Tensor) -> Tuple[List[np.ndarray], Tuple[int, int]]:
        """Tensor[B, 3, h, w] -> (the runtime's outputs, ``(h, w)``). A dynamic batch runs in one
        call; a fixed batch ``b`` runs ``b`` images a call (the last call padded with blanks)."""
        x = batch.detach().cpu().numpy().astype(np.float32, copy=False)
        hw = (int(x.shape[2]), int(x.shape[3]))
        if self.fixed_input_hw is not None and hw != self.fixed_input_hw:
            raise ValueError(f"{self.path.name} takes {self.fixed_input_hw} inputs only, got {hw}")
        b = self.batch_size
        if b is None or b == x.shape[0]:
            return self._rt(np.ascontiguousarray(x)), hw
        chunks = []
        for i in range(0, x.shape[0], b):
            part = x[i : i + b]
            if part.shape[0] < b:
                part = np.concatenate([part, np.zeros((b - part.shape[0], *part.shape[1:]), np.float32)])
            chunks.append(self._rt(np.ascontiguousarray(part)))
        return [np.concatenate([c[k] for c in chunks])[: x.shape[0]] for k in range(len(chunks[0]))], hw

    def postprocess(self, raw: Any, metas: List[LetterboxMeta]) -> List[Detections]:
        outputs, hw = raw
        pred, fmt = decode(self.layout, outputs, self.layout_info, hw)
        if pred.shape[0] != len(metas):
            raise ValueError(f"{pred.shape[0]} predictions for {len(metas)} metas")
        results = non_max_suppression(
            pred, fmt, self.conf, self.iou, self.classes, self.agnostic, self.multi_label, self.max_det, self.max_nms
        )
        return [Detections(boxes_to_original(b, m), s, l, m.orig_size) for (b, s, l), m in zip(results, metas)]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.fixed_input_hw)) if self.fixed_input_hw else "dynamic"
        return (f"ExportedAdapter({self.path.name}, backend={self.backend}, layout={self.layout}, classes={len(self.names)}, "
                f"img_size={self.img_size}, input={shape}, batch={self.batch_size or 'dynamic'})")


class OpenVINOAdapter(ExportedAdapter):
    """:class:`ExportedAdapter` under OpenVINO (the ``"openvino"`` adapter name)."""

    def __init__(self, weights: Union[str, os.PathLike], backend: str = "openvino", **kwargs: Any) -> None:
        if backend != "openvino":
            raise ValueError(f"the 'openvino' adapter runs OpenVINO; got backend={backend!r} (use the 'onnx' adapter)")
        super().__init__(weights, backend="openvino", **kwargs)


def _meta_imgsz(value: Optional[str]) -> Optional[int]:
    if not value:
        return None
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    if isinstance(parsed, (list, tuple)) and parsed:
        return int(max(parsed))
    return int(parsed) if isinstance(parsed, (int, float)) else None


def _probe_hw(size: int, stride: int) -> Tuple[int, int]:
    """A non-square probe (so height and width cannot be confused), both multiples of the stride."""
    return size, max(stride, (size * 3 // 4) // stride * stride)


def _pad_to(image: np.ndarray, hw: Tuple[int, int], pad_value: int) -> Tuple[np.ndarray, LetterboxMeta]:
    """Pad (centred, never resize) to ``hw``; an image larger than ``hw`` is refused."""
    h, w = image.shape[:2]
    if h > hw[0] or w > hw[1]:
        raise ValueError(f"a {h}x{w} canvas does not fit the model's fixed {hw[0]}x{hw[1]} input")
    top, left = (hw[0] - h) // 2, (hw[1] - w) // 2
    out = np.full((*hw, 3), pad_value, np.uint8)
    out[top : top + h, left : left + w] = image
    return out, LetterboxMeta(ratio=(1.0, 1.0), pad=(left, top), orig_size=(h, w), input_size=hw)


def onnx_gflops(path: Union[str, os.PathLike], input_shape: Tuple[int, int, int, int]) -> float:
    """2 x multiply-accumulates of the Conv, ConvTranspose, Gemm and MatMul nodes of an ONNX
    graph at one concrete input shape (shapes from ``onnx.shape_inference``)."""
    import onnx
    from onnx import shape_inference

    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.Clear()
        d.dim_value = int(v)
    proto = shape_inference.infer_shapes(proto, data_prop=True)
    shapes: Dict[str, List[int]] = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
    for init in proto.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in proto.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out and all(out):
                spatial = int(np.prod(out[2:])) if node.op_type == "Conv" else int(np.prod(shapes.get(node.input[0], [0])[2:]))
                macs += out[0] * (out[1] if node.op_type == "Conv" else w[0]) * spatial * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out) and all(a):
                macs += int(np.prod(out)) * a[-1]
    return 2.0 * macs / 1e9
