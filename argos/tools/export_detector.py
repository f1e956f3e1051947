"""``argos export detector``: a torch detector checkpoint -> an ONNX file the exported adapter reads back.

    argos export detector --weights yolov5n.pt --img-size 640 [--dynamic-batch] --out yolov5n.onnx

Height and width stay dynamic unless ``--static-shape`` (argos runs crops of many sizes, and a
fixed-shape export can only take canvases of its own size). The graph's metadata holds ``names``,
``stride``, ``imgsz`` and ``layout``, as ultralytics writes them. After writing, the file is
loaded under ONNX Runtime and checked against the torch model at two input shapes.
"""
from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from argos.adapters.yolov5 import YOLOv5Adapter

__all__ = ["export_detector", "main"]

INPUT_NAME, OUTPUT_NAME = "images", "output0"


class _RawHead(nn.Module):
    """The network with YOLOv5Adapter.forward's output only (no training-mode extras)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_detector(weights: Union[str, Path, "YOLOv5Adapter"], out: Union[str, Path], img_size: int = 640,
                    dynamic_batch: bool = False, static_shape: bool = False, opset: int = 17,
                    check: bool = True) -> Dict[str, object]:
    """Export a YOLOv5 / ultralytics checkpoint (``weights``, or a built
    :class:`~argos.adapters.yolov5.YOLOv5Adapter`, e.g. from a ``cfg``) to ONNX at ``out``.

    Returns a report: ``path``, ``layout``, ``input`` (the shape, symbolic dims as names),
    ``output`` and, with ``check``, ``max_abs_diff`` per checked input shape and ``same_detections``.
    Raises ``ValueError`` when the check finds the ONNX model disagreeing with torch.
    """
    from argos.adapters.yolov5 import YOLOv5Adapter

    if not isinstance(opset, int) or opset < 11:
        raise ValueError(f"opset must be an int >= 11, got {opset!r}")
    if isinstance(weights, YOLOv5Adapter):
        adapter, source = weights, "adapter"
        if adapter.img_size != img_size:
            raise ValueError(f"the adapter runs at img_size={adapter.img_size}, not {img_size}")
    else:
        adapter, source = YOLOv5Adapter(weights=weights, img_size=img_size, optimize=True), Path(weights).name
    net = copy.deepcopy(adapter.module).to(memory_format=torch.contiguous_format)  # the adapter stays as it was
    for m in net.modules():  # ultralytics heads cache anchors by shape unless told the shape varies
        if hasattr(m, "dynamic") and not static_shape:
            m.dynamic = True
        if hasattr(m, "_grids"):
            m._grids = {}
    model = _RawHead(net).eval()
    h = img_size
    w = h if static_shape else max(adapter.stride, (h * 3 // 4) // adapter.stride * adapter.stride)
    dummy = torch.zeros(1, 3, h, w)
    axes: Dict[str, Dict[int, str]] = {INPUT_NAME: {}, OUTPUT_NAME: {}}
    if dynamic_batch:
        axes[INPUT_NAME][0] = axes[OUTPUT_NAME][0] = "batch"
    if not static_shape:
        axes[INPUT_NAME].update({2: "height", 3: "width"})
        axes[OUTPUT_NAME][1 if adapter.head_format == "anchor" else 2] = "anchors"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(model, (dummy,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    layout = {"anchor": "yolov5", "anchor_free": "yolov8", "end2end": "end2end"}[adapter.head_format]
    import onnx

    proto = onnx.load(str(out))
    meta = {
        "names": repr(dict(adapter.names)), "stride": str(adapter.stride), "imgsz": repr([h, h]),
        "task": "detect", "layout": layout, "author": "argos export detector", "source": source,
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(out))
    report: Dict[str, object] = {"path": str(out), "layout": layout, "input": _shape(proto.graph.input[0]),
                                 "output": _shape(proto.graph.output[0])}
    if check:
        report.update(_check(adapter, model, out, h, static_shape))
    return report


def _shape(vi) -> List[Union[int, str]]:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _check(adapter, model: nn.Module, path: Path, size: int, static_shape: bool) -> Dict[str, object]:
    """ONNX Runtime against torch on two random images, one landscape and one portrait (the
    second is a shape the trace never saw, so a baked-in size shows here)."""
    from argos.adapters.exported import ExportedAdapter

    exported = ExportedAdapter(path, img_size=size, conf=adapter.conf, iou=adapter.iou)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (size * 3 // 4, size, 3), np.uint8), rng.integers(0, 255, (size, size // 2, 3), np.uint8)]
    diffs, same = {}, True
    for im in images:
        batch, metas = exported.preprocess([im])  # the same input for both
        with torch.no_grad():
            ref = model(batch).numpy()
        raw = exported.forward(batch)
        got = raw[0][0]
        if got.shape != ref.shape:
            raise ValueError(f"the ONNX model gives {got.shape} where torch gives {ref.shape} at input "
                             f"{tuple(batch.shape[2:])}: the export baked in a shape")
        diffs["x".join(map(str, batch.shape[2:]))] = float(np.abs(got - ref).max())
        a = adapter.postprocess(torch.from_numpy(ref), metas)[0]
        b = exported.postprocess(raw, metas)[0]
        same &= len(a) == len(b) and (len(a) == 0 or bool(torch.allclose(a.boxes, b.boxes, atol=0.05)))
    worst = max(diffs.values())
    if worst > 1e-2 * max(1.0, float(size)):
        raise ValueError(f"the ONNX model differs from torch by up to {worst:.3g} (per input shape: {diffs})")
    return {"max_abs_diff": diffs, "same_detections": same}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="argos export detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="YOLOv5 or ultralytics checkpoint (.pt)")
    p.add_argument("--img-size", type=int, default=640, help="input size written to the metadata (and of a static export)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension symbolic")
    p.add_argument("--static-shape", action="store_true", help="fix height and width to --img-size (square)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch check")
    a = p.parse_args(argv)
    from argos.tools.outputs import check_outputs

    try:
        if a.img_size < 32 or a.img_size % 32:
            raise ValueError(f"--img-size must be a positive multiple of 32, got {a.img_size}")
        if not a.out.endswith(".onnx"):
            raise ValueError(f"--out must name a .onnx file, got {a.out}")
        check_outputs([a.weights], [a.out])
        report = export_detector(a.weights, a.out, a.img_size, a.dynamic_batch, a.static_shape, a.opset,
                                 check=not a.no_check)
    except (ValueError, TypeError, OSError) as err:
        print(f"argos export detector: error: {err}", file=sys.stderr)
        return 2
    size = Path(report["path"]).stat().st_size / 1e6
    print(f"wrote {report['path']} ({size:.1f} MB, opset {a.opset}, layout {report['layout']}): "
          f"{INPUT_NAME}{report['input']} -> {OUTPUT_NAME}{report['output']}")
    if "max_abs_diff" in report:
        print(f"checked under onnxruntime against torch: max |diff| {report['max_abs_diff']}, "
              f"same detections: {report['same_detections']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
