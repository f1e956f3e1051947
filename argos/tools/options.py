"""Option parsing shared by the command-line tools."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

__all__ = ["parse_kv", "adapter_kwargs_for", "detector_for"]


def parse_kv(items: Optional[List[str]]) -> dict:
    """``["dilation=8", "source=masks"]`` -> ``{"dilation": 8, "source": "masks"}`` (JSON values)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def detector_for(detector: str, weights: Optional[str]) -> str:
    """The adapter that ``--weights`` asks for: an ``.onnx`` file under the default ``--detector
    yolov5`` runs in the exported-model adapter (``onnx``; OpenVINO with ``--detector openvino`` or
    ``--detector-opt backend=openvino``)."""
    if weights is not None and str(weights).lower().endswith(".onnx") and detector == "yolov5":
        return "onnx"
    return detector


def adapter_kwargs_for(detector: str, img_size: int, conf: Optional[float] = None, iou: Optional[float] = None,
                       weights: Optional[str] = None, cfg: Optional[str] = None,
                       extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Keyword arguments for adapter ``detector``: the common CLI options plus ``extra``
    (``--detector-opt``, which wins). ``conf``/``iou`` go only to adapters that take them (a
    segmentation model has neither); ``weights``/``cfg`` given to an adapter without them raise."""
    import inspect

    from argos.registry import ADAPTERS

    params = inspect.signature(ADAPTERS.get(detector)).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: Dict[str, Any] = {"img_size": img_size}
    for key, value in (("conf", conf), ("iou", iou)):
        if value is not None and (key in params or takes_any):
            kwargs[key] = value
    for key, value in (("weights", weights), ("cfg", cfg)):
        if value is None:
            continue
        if key not in params and not takes_any:
            raise ValueError(f"adapter {detector!r} takes no {key!r} option")
        kwargs[key] = value
    kwargs.update(extra or {})
    return kwargs


def native_img_size(source: Any, stride: int = 32) -> int:
    """``--img-size 0``: the long side of ``source``'s first frame, rounded up to ``stride``
    (the frame at its own scale: small objects stay as large as they are in the video)."""
    from argos.data.video import VideoReader

    for _, frame in VideoReader(int(source) if str(source).isdigit() else source, limit=1):
        h, w = frame.shape[:2]
        return -(-max(h, w) // stride) * stride
    raise ValueError(f"--img-size 0 takes the size of the first frame, but {source} gave none")

