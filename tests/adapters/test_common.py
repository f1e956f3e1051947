"""The suite every registered adapter passes: it builds without downloads, runs on a real image,
``full`` proposer + each executor equals the unwrapped model, and its FLOPs agree with fvcore.

Models are tiny (shallow depth, small input, random init) so the suite stays fast on CPU. A new
adapter must get an entry in ``TINY``: the first test fails until it does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import argos
from argos.adapters import Adapter
from argos.assets import assets_dir
from argos.structures import Detections, SegmentationMap

# Random-init detectors score ~1e-5 (YOLO objectness prior) to ~1/81 (two-stage heads): the
# thresholds below keep detections to compare.
TINY: Dict[str, Dict[str, Any]] = {
    "yolov5": dict(cfg="yolov5nu.yaml", img_size=128, conf=1e-9),
    "resnet_yolo": dict(depth=18, img_size=128, conf=1e-9),
    "dynconv": dict(depth=18, img_size=128, conf=1e-9),
    "pspnet": dict(depth=18, img_size=128),
    "torchvision": dict(model="fasterrcnn_mobilenet_v3_large_320_fpn", img_size=160, conf=0.0),
    "cascade_mask_rcnn": dict(img_size=160, conf=0.01, max_det=3, proposals=20),
    # Exported models: the tiny yolov5nu above, exported to ONNX (see _exported_kwargs).
    "onnx": dict(img_size=128, conf=1e-9),
    "openvino": dict(img_size=128, conf=1e-9, precision="f32"),
}
#: adapters that run an exported file, not a torch network: no ``module``, no gather_scatter.
EXPORTED = {"onnx", "openvino"}
# Which executors each adapter works with. gather_scatter needs a convolutional network (Swin's
# attention has no sparse path); the full proposer makes it take its dense path everywhere.
EXECUTORS: Dict[str, Tuple[str, ...]] = {
    "cascade_mask_rcnn": ("masked", "packed_crops"),
    "onnx": ("masked", "packed_crops"),
    "openvino": ("masked", "packed_crops"),
}
ALL_EXECUTORS = ("masked", "packed_crops", "gather_scatter")
NAMES = argos.list_adapters()


def _needs(name: str) -> None:
    if name == "cascade_mask_rcnn":
        pytest.importorskip("mmdet", reason="the mmdet extra is not installed")
    if name in EXPORTED:
        pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    if name == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed")


@pytest.fixture(scope="module")
def exported_source(tmp_path_factory):
    """(the torch adapter, its ONNX export): the tiny yolov5nu of TINY at 128."""
    from argos.tools.export_detector import export_detector

    torch.manual_seed(0)
    source = argos.ADAPTERS.build("yolov5", **TINY["yolov5"])
    path = tmp_path_factory.mktemp("exported") / "tiny_yolov5nu.onnx"
    export_detector(source, path, img_size=128, dynamic_batch=True)
    return source, path


@pytest.fixture(scope="module")
def built(request) -> Callable[[str], Adapter]:
    cache: Dict[str, Adapter] = {}

    def get(name: str) -> Adapter:
        _needs(name)
        if name not in cache:
            torch.manual_seed(0)
            extra = {"weights": request.getfixturevalue("exported_source")[1]} if name in EXPORTED else {}
            cache[name] = argos.ADAPTERS.build(name, **TINY[name], **extra)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A real photo (the first shared COCO image) when the assets are here, else a synthetic one."""
    root = assets_dir()
    path = None if root is None else next(iter(sorted(Path(root, "data/coco128/images/train2017").glob("*.jpg"))), None)
    if path is not None:
        bgr = cv2.imread(str(path))
        return np.ascontiguousarray(cv2.cvtColor(cv2.resize(bgr, (200, 150)), cv2.COLOR_BGR2RGB))
    rng = np.random.default_rng(0)
    img = np.full((150, 200, 3), 90, np.uint8)
    img[30:120, 40:110] = rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)
    return img


def test_every_adapter_has_a_tiny_config():
    assert sorted(TINY) == sorted(NAMES), "add new adapters to TINY (and EXECUTORS if needed)"


@pytest.mark.parametrize("name", NAMES)
def test_builds(built, name):
    adapter = built(name)
    assert isinstance(adapter, Adapter)
    if name in EXPORTED:
        with pytest.raises(TypeError, match="not torch"):
            adapter.module
    else:
        assert isinstance(adapter.module, nn.Module)
    assert adapter.task in ("detection", "segmentation")
    assert adapter.names and all(isinstance(k, int) and isinstance(v, str) for k, v in adapter.names.items())
    assert adapter.stride > 0 and adapter.img_size % adapter.stride == 0


@pytest.mark.parametrize("name", NAMES)
def test_forward_on_a_real_image(built, image, name):
    adapter = built(name)
    (out,) = adapter.predict([image])
    if adapter.task == "segmentation":
        assert isinstance(out, SegmentationMap) and out.image_size == image.shape[:2]
        assert out.labels.shape == image.shape[:2]
        assert int(out.labels.min()) >= 0 and int(out.labels.max()) < len(adapter.names)
    else:
        assert isinstance(out, Detections) and out.image_size == image.shape[:2]
        assert len(out) > 0, "thresholds in TINY should leave detections to compare"
        assert set(out.labels.tolist()) <= set(adapter.names)
        h, w = image.shape[:2]
        assert bool((out.boxes[:, 0::2] >= -1e-3).all() and (out.boxes[:, 0::2] <= w + 1e-3).all())
        assert bool((out.boxes[:, 1::2] >= -1e-3).all() and (out.boxes[:, 1::2] <= h + 1e-3).all())
        if adapter.returns_masks:
            assert out.masks is not None and tuple(out.masks.shape) == (len(out), h, w)


def _assert_same(a, b) -> None:
    if isinstance(a, SegmentationMap):
        assert torch.equal(a.labels, b.labels)
        if a.scores is not None and b.scores is not None:
            torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)
        return
    assert len(a) == len(b)
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)
    assert torch.equal(a.labels, b.labels)
    if a.masks is not None or b.masks is not None:
        assert torch.equal(a.masks, b.masks)


@pytest.mark.parametrize("executor", ALL_EXECUTORS)
@pytest.mark.parametrize("name", NAMES)
def test_full_proposer_equals_unwrapped(built, image, name, executor):
    if executor not in EXECUTORS.get(name, ALL_EXECUTORS):
        pytest.skip(f"{name} does not run under {executor}")
    adapter = built(name)
    (expected,) = adapter.predict([image])
    fast = argos.wrap(adapter, proposer="full", executor=executor)
    _assert_same(fast(image), expected)


def _fvcore_gflops(name: str, adapter: Adapter, hw: Tuple[int, int], built_source=None) -> Tuple[float, float]:
    """(ours, 2 x fvcore) in GFLOPs for the part of the model both can count."""
    from fvcore.nn import FlopCountAnalysis

    if name == "torchvision":
        probe, ours = adapter.cost_probe(), adapter.flops(hw)  # backbone + RPN + box head per proposal
    elif name == "cascade_mask_rcnn":
        from argos.adapters.cascade_mask_rcnn import _BackboneRPN

        probe, ours = _BackboneRPN(adapter.model).eval(), adapter.dense_flops(hw)  # heads: see its own tests
    elif name in EXPORTED:  # the graph's count against fvcore's count of the torch model it came from
        probe, ours = built_source.module.eval(), adapter.flops(hw)
    else:
        probe, ours = adapter.module.eval(), adapter.flops(hw)
    counter = FlopCountAnalysis(probe, torch.zeros(1, 3, *hw))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    # no_grad: earlier predict() calls cached inference-mode tensors (e.g. anchor grids) that
    # the trace must not record for autograd.
    with torch.no_grad():
        theirs = 2 * counter.total() / 1e9  # fvcore counts one flop per multiply-accumulate
    return ours, theirs


@pytest.mark.filterwarnings("ignore::FutureWarning")  # fvcore traces with torch.jit
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", NAMES)
def test_flops_within_5_percent_of_fvcore(built, name, request):
    adapter = built(name)
    source = request.getfixturevalue("exported_source")[0] if name in EXPORTED else None
    ours, theirs = _fvcore_gflops(name, adapter, (96, 128), source)
    assert ours > 0
    assert ours == pytest.approx(theirs, rel=0.05)


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_equals_its_torch_source(built, image, name, request):
    """The export of an ultralytics (anchor-free, ``yolov8`` layout) head gives its torch model's detections."""
    adapter = built(name)
    source = request.getfixturevalue("exported_source")[0]
    assert adapter.layout == "yolov8"
    (a,), (b,) = adapter.predict([image]), source.predict([image])
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-3)
