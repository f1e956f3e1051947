"""YOLOv5 adapter: original checkpoints, ultralytics models, letterbox mapping, NMS, FLOPs."""
from __future__ import annotations

import json
import os
import sys
import types
import zipfile

# ultralytics must never go online from the tests; set before anything imports it.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import numpy as np
import pytest
import torch
from torch import nn

from argos.adapters import _yolov5_legacy as legacy
from argos.adapters.yolov5 import (
    LetterboxMeta,
    YOLOv5Adapter,
    boxes_to_original,
    letterbox,
    non_max_suppression,
)
from argos.metrics.flops import count_gflops
from argos.structures import Detections


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Tensor[N, 4], Tensor[M, 4] xyxy -> Tensor[N, M]; written out, not torchvision's."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _check_detections(d: Detections, image_size, nc: int, max_det: int) -> None:
    h, w = image_size
    assert d.image_size == (h, w)
    assert len(d) <= max_det
    assert torch.all(d.boxes[:, 0] >= 0) and torch.all(d.boxes[:, 2] <= w)
    assert torch.all(d.boxes[:, 1] >= 0) and torch.all(d.boxes[:, 3] <= h)
    assert torch.all(d.boxes[:, 2] >= d.boxes[:, 0]) and torch.all(d.boxes[:, 3] >= d.boxes[:, 1])
    assert torch.all((d.labels >= 0) & (d.labels < nc))
    assert torch.all(d.scores[:-1] >= d.scores[1:]), "detections are sorted by score"


# ---------------------------------------------------------------------------------------------
# The real checkpoint
# ---------------------------------------------------------------------------------------------


def test_real_checkpoint_loads(yolov5n):
    assert len(yolov5n.names) == 80 and yolov5n.names[0] == "person"
    assert yolov5n.stride == 32 and yolov5n.head_format == "anchor"
    assert isinstance(yolov5n.module, legacy.LegacyYOLOv5) and not yolov5n.module.training
    assert all(p.dtype == torch.float32 for p in yolov5n.module.parameters()), "fp16 weights become float32"


def test_real_checkpoint_weights_equal_pickled(yolov5n_weights):
    # Reference: the tensors as pickled, read through the stand-ins without the rebuilt network.
    pickled = legacy.restricted_load(yolov5n_weights)["model"].state_dict()
    ours = YOLOv5Adapter(weights=yolov5n_weights, optimize=False).module.state_dict()
    assert ours.keys() == pickled.keys()
    for k, v in pickled.items():
        assert torch.equal(ours[k], v.float()), k


def test_optimized_network_predicts_what_the_original_does(yolov5n, yolov5n_weights, assets):
    import cv2

    plain = YOLOv5Adapter(weights=yolov5n_weights, optimize=False)
    assert yolov5n.optimized and not plain.optimized
    bns = [m for m in plain.module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 57 and not any(isinstance(m, nn.BatchNorm2d) for m in yolov5n.module.modules())
    conv = next(m for m in yolov5n.module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = cv2.cvtColor(cv2.imread(str(assets / "data/coco128/images/train2017/000000000036.jpg")), cv2.COLOR_BGR2RGB)
    batch, metas = plain.preprocess([image])
    want, got = plain.forward(batch), yolov5n.forward(batch)
    # Boxes in input pixels (up to 640) and objectness/class scores: float rounding only.
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-4)
    (a,), (b,) = plain.postprocess(want, metas), yolov5n.postprocess(got, metas)
    keep_a, keep_b = a[a.scores >= 0.25], b[b.scores >= 0.25]
    assert len(keep_a) == len(keep_b) > 0
    torch.testing.assert_close(keep_b.boxes, keep_a.boxes, atol=1e-2, rtol=0)


def test_fold_batchnorm_by_hand():
    from ultralytics.nn.modules.conv import Conv

    from argos.adapters.yolov5 import fold_batchnorm

    torch.manual_seed(0)
    block = Conv(4, 6, 3, 2).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 9, 9)
    bn = block.bn
    ref = block.act((block.conv(x) - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
                    * bn.weight[:, None, None] + bn.bias[:, None, None])  # fmt: skip
    assert fold_batchnorm(block) == 1 and isinstance(block.bn, nn.Identity) and block.conv.bias is not None
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
    assert fold_batchnorm(block) == 0  # nothing left to fold


def test_real_checkpoint_detects_person(yolov5n, assets):
    import cv2

    path = assets / "data/coco128/images/train2017/000000000036.jpg"
    if not path.is_file():
        pytest.skip(f"image not found: {path}")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    (d,) = yolov5n([image])
    _check_detections(d, image.shape[:2], 80, 300)
    people = d[d.labels == 0]
    assert len(people) > 0 and people.scores.max() > 0.5
    # Ground truth (instances JSON, image 36): person bbox xywh [167.58, 162.89, 310.61, 465.19].
    gt = torch.tensor([[167.58, 162.89, 167.58 + 310.61, 162.89 + 465.19]])
    best = people.boxes[people.scores.argmax()][None]
    assert _box_iou(best, gt).item() > 0.7


def test_real_checkpoint_gflops(yolov5n):
    assert yolov5n.flops((640, 640)) == pytest.approx(4.5, abs=0.1)  # YOLOv5's table: 4.5


def test_hub_style_module_matches_weights(yolov5n):
    """A torch-hub-style module (``.names``, ``.stride``, tuple output) gives the same detections."""

    class HubLike(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net, self.names, self.stride = net, list(net.names.values()), net.stride

        def forward(self, x):
            return self.net(x), []  # YOLOv5 eval output: (predictions, per-level maps)

    hub = YOLOv5Adapter(model=HubLike(yolov5n.module))
    assert hub.head_format == "anchor" and hub.names == yolov5n.names
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    a, b = yolov5n([image])[0], hub([image])[0]
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)


# ---------------------------------------------------------------------------------------------
# Loading errors and the restricted unpickler
# ---------------------------------------------------------------------------------------------


class _RunsCommand:
    """Unpickling this runs a shell command (what the restricted unpickler must refuse)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_refuses_os_system(tmp_path):
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCommand(f"touch {sentinel}")}, path)
    with pytest.raises(legacy.UnsafeCheckpointError, match=r"system.*not allow"):
        legacy.restricted_load(path)
    assert not sentinel.exists()


def test_adapter_refuses_yolov5_checkpoint_with_os_system(tmp_path, monkeypatch):
    # A pickle that looks like a YOLOv5 checkpoint (a models.yolo class) but also calls os.system.
    fake = types.ModuleType("models.yolo")
    fake.Model = type("Model", (), {"__module__": "models.yolo"})
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.yolo", fake)
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": fake.Model(), "x": _RunsCommand(f"touch {sentinel}")}, path)
    monkeypatch.delitem(sys.modules, "models.yolo")
    with zipfile.ZipFile(path) as zf:
        assert legacy._pickle_globals(zf.read("evil/data.pkl")) >= {("models.yolo", "Model")}
    with pytest.raises(legacy.UnsafeCheckpointError, match="system"):
        YOLOv5Adapter(weights=path)
    with pytest.raises(legacy.UnsafeCheckpointError, match="system"):
        legacy.restricted_load(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"PK\x03\x04truncated"])
def test_corrupt_file_is_value_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint"):
        YOLOv5Adapter(weights=path)


def test_corrupt_pickle_inside_zip_is_value_error(tmp_path):
    path = tmp_path / "bad.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bad/data.pkl", b"\x80\x02\xffgarbage")
    with pytest.raises(ValueError, match="corrupt"):
        YOLOv5Adapter(weights=path)


def test_plain_state_dict_is_value_error(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ValueError, match="not a YOLOv5 or ultralytics"):
        YOLOv5Adapter(weights=path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        YOLOv5Adapter(weights=tmp_path / "nope.pt")


def test_constructor_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        YOLOv5Adapter()
    with pytest.raises(ValueError, match="exactly one"):
        YOLOv5Adapter(weights="a.pt", cfg="yolov5nu.yaml")
    with pytest.raises(ValueError, match="yaml"):
        YOLOv5Adapter(cfg="yolov5nu.pt")  # a bare .pt name would make ultralytics download


# ---------------------------------------------------------------------------------------------
# A small YOLOv5 network rebuilt from a yaml dict (no assets needed)
# ---------------------------------------------------------------------------------------------

_TINY_YAML = {
    "nc": 3,
    "depth_multiple": 0.33,
    "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],  # 0 /2
        [-1, 1, "Conv", [128, 3, 2]],  # 1 /4
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],  # 3 /8
        [-1, 1, "Conv", [512, 3, 2]],  # 4 /16
        [-1, 1, "SPPF", [512, 5]],
    ],
    "head": [
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],  # 6 /8
        [[-1, 3], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],  # 8 /8
        [[8, 5], 1, "Detect", ["nc", "anchors"]],
    ],
}


def test_tiny_yaml_rebuild_and_detect_semantics():
    net = legacy.LegacyYOLOv5(json.loads(json.dumps(_TINY_YAML))).eval()
    assert net.stride.tolist() == [8.0, 16.0]
    head = net.model[-1]
    # anchors are stored in stride units, as in YOLOv5 state dicts
    assert torch.allclose(head.anchors[1, 2], torch.tensor([59 / 16, 119 / 16]))
    # With zero conv weights and biases every sigmoid is 0.5: xy = cell centre, wh = anchor (pixels).
    for conv in head.m:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    n8, n16 = 3 * 8 * 12, 3 * 4 * 6
    assert out.shape == (1, n8 + n16, 5 + 3)
    level8 = out[0, :n8].view(3, 8, 12, 8)  # anchor, row, column, channel
    assert torch.allclose(level8[1, 2, 5, :4], torch.tensor([(5 + 0.5) * 8, (2 + 0.5) * 8, 16.0, 30.0]))
    level16 = out[0, n8:].view(3, 4, 6, 8)
    assert torch.allclose(level16[2, 3, 0, :4], torch.tensor([0.5 * 16, 3.5 * 16, 59.0, 119.0]))
    assert torch.allclose(out[..., 4:], torch.full_like(out[..., 4:], 0.5))


def test_tiny_yaml_rejects_unknown_module():
    cfg = json.loads(json.dumps(_TINY_YAML))
    cfg["backbone"][2] = [-1, 1, "C2f", [128]]
    with pytest.raises(ValueError, match="C2f"):
        legacy.LegacyYOLOv5(cfg)


# ---------------------------------------------------------------------------------------------
# Letterbox and mapping back
# ---------------------------------------------------------------------------------------------


def test_letterbox_by_hand():
    image = np.zeros((480, 640, 3), np.uint8)  # h, w
    out, meta = letterbox(image, img_size=320, stride=32, rect=True)
    # r = 0.5 -> 240 x 320; 240 -> 256 needs 16 rows: 8 on top, 8 below
    assert out.shape == (256, 320, 3)
    assert meta == LetterboxMeta(ratio=(0.5, 0.5), pad=(0, 8), orig_size=(480, 640), input_size=(256, 320))
    assert (out[:8] == 114).all() and (out[-8:] == 114).all() and (out[8:-8] == 0).all()

    out, meta = letterbox(image, img_size=320, stride=32, rect=False)
    assert out.shape == (320, 320, 3) and meta.pad == (0, 40)

    net_boxes = torch.tensor([[50.0, 33.0, 150.0, 133.0], [-10.0, 0.0, 400.0, 300.0]])
    back = boxes_to_original(net_boxes, LetterboxMeta((0.5, 0.5), (0, 8), (480, 640), (256, 320)))
    assert torch.allclose(back[0], torch.tensor([100.0, 50.0, 300.0, 250.0]))
    assert torch.allclose(back[1], torch.tensor([0.0, 0.0, 640.0, 480.0]))  # clipped to the image


def test_letterbox_odd_padding_goes_bottom_right():
    # 100x75 -> 60x45 (r = 0.6); 45 -> 50 columns with stride 10: 5 to split
    _, meta = letterbox(np.zeros((100, 75, 3), np.uint8), img_size=60, stride=10, rect=True)
    assert meta.input_size == (60, 50) and meta.pad == (2, 0)  # 45 -> 50: 2 left, 3 right


@pytest.mark.parametrize("rect", [True, False])
def test_letterbox_round_trip_of_a_drawn_box(rect):
    h, w = 333, 517
    x1, y1, x2, y2 = 101, 57, 300, 250
    image = np.zeros((h, w, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    out, meta = letterbox(image, img_size=256, stride=32, rect=rect)
    ys, xs = np.nonzero(out[..., 0] > 127)
    found = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    back = boxes_to_original(found, meta)[0]
    assert torch.allclose(back, torch.tensor([x1, y1, x2, y2], dtype=torch.float32), atol=2.5)


def test_batch_of_mixed_shapes_is_padded_bottom_right():
    adapter = YOLOv5Adapter(model=legacy.LegacyYOLOv5(json.loads(json.dumps(_TINY_YAML))), img_size=128)
    assert adapter.stride == 16
    wide = np.full((50, 100, 3), 7, np.uint8)
    tall = np.full((100, 40, 3), 9, np.uint8)
    batch, metas = adapter.preprocess([wide, tall])
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == torch.float32
    assert metas[0].input_size == (64, 128) and metas[1].input_size == (128, 64)
    assert metas[0].pad == (0, 0) and metas[1].pad == (6, 0)  # 40 -> 51 px wide, 13 px pad split 6/7
    assert torch.all(batch[0, :, 64:] == 114 / 255)  # batch padding below the wide image
    assert torch.all(batch[1, :, :, 64:] == 114 / 255)  # and right of the tall one
    assert torch.allclose(batch[1, :, :, 6:57], torch.full((3, 128, 51), 9 / 255))
    dets = adapter.postprocess(adapter.forward(batch), metas)
    assert [d.image_size for d in dets] == [(50, 100), (100, 40)]


@pytest.mark.parametrize("rect", [True, False])
def test_preprocess_native_pads_to_stride_without_resizing(rect):
    adapter = YOLOv5Adapter(model=legacy.LegacyYOLOv5(json.loads(json.dumps(_TINY_YAML))), img_size=128, rect=rect)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)  # preprocess would upscale it to 128 wide
    batch, (meta,) = adapter.preprocess_native([small])
    assert batch.shape == (1, 3, 48, 80)  # next multiples of the stride 16, whatever rect says
    assert meta.ratio == (1.0, 1.0) and meta.pad == (5, 4) and meta.orig_size == (40, 70)
    by_hand = np.full((48, 80, 3), 114, np.uint8)
    by_hand[4:44, 5:75] = small  # pads 8 -> 4/4 and 10 -> 5/5, centred
    assert torch.equal(batch[0], torch.from_numpy(by_hand).permute(2, 0, 1).float() / 255)
    # Larger than img_size: still scale 1.
    big = np.zeros((200, 96, 3), np.uint8)
    batch, (meta,) = adapter.preprocess_native([big])
    assert batch.shape == (1, 3, 208, 96) and meta.ratio == (1.0, 1.0)
    # A canvas with its long side at img_size and stride-multiple sides: the same as preprocess.
    canvas = rng.integers(0, 255, (48, 128, 3), dtype=np.uint8)
    if rect:
        a, (ma,) = adapter.preprocess([canvas])
        b, (mb,) = adapter.preprocess_native([canvas])
        assert torch.equal(a, b) and ma == mb
    dets = adapter.postprocess(adapter.forward(batch), [meta])
    assert dets[0].image_size == (200, 96)
    with pytest.raises(ValueError, match="uint8"):
        adapter.preprocess_native([np.zeros((8, 8, 3), np.float32)])


# ---------------------------------------------------------------------------------------------
# NMS against a brute-force reference
# ---------------------------------------------------------------------------------------------


def _reference_nms(boxes_xyxy, obj, cls, conf, iou, max_det):
    """Plain-Python greedy NMS, per class, multi-label, score = obj x cls."""
    cands = [
        (float(obj[i] * cls[i, c]), c, i)
        for i in range(len(obj))
        if obj[i] > conf
        for c in range(cls.shape[1])
        if obj[i] * cls[i, c] > conf
    ]
    cands.sort(reverse=True)
    kept = []
    for score, c, i in cands:
        if all(c != kc or _box_iou(boxes_xyxy[i][None], boxes_xyxy[ki][None]).item() <= iou for _, kc, ki in kept):
            kept.append((score, c, i))
    return kept[:max_det]


def _anchor_pred(boxes_xyxy, obj, cls):
    xywh = torch.cat(((boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2, boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]), 1)
    return torch.cat((xywh, obj[:, None], cls), 1)[None]


def test_nms_by_hand():
    boxes = torch.tensor([
        [0, 0, 100, 100],
        [5, 5, 100, 100],  # IoU 0.9025 with box 0
        [0, 0, 100, 100],  # same place as box 0, other class
        [200, 200, 300, 300],  # high class score, objectness under conf
    ], dtype=torch.float32)  # fmt: skip
    obj = torch.tensor([0.9, 0.8, 0.7, 0.0005])
    cls = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    pred = _anchor_pred(boxes, obj, cls)

    (b, s, l), = non_max_suppression(pred, "anchor", conf=0.001, iou=0.65)
    assert torch.allclose(s, torch.tensor([0.9, 0.7])) and l.tolist() == [0, 1]  # class-aware
    assert torch.allclose(b, boxes[[0, 2]])
    (b, s, l), = non_max_suppression(pred, "anchor", conf=0.001, iou=0.65, agnostic=True)
    assert l.tolist() == [0]
    (b, s, l), = non_max_suppression(pred, "anchor", conf=0.001, iou=0.95)
    assert torch.allclose(s, torch.tensor([0.9, 0.8, 0.7]))  # IoU 0.9025 < 0.95: kept
    (b, s, l), = non_max_suppression(pred, "anchor", conf=0.001, iou=0.65, classes=[1])
    assert l.tolist() == [1]
    (b, s, l), = non_max_suppression(pred, "anchor", conf=0.001, iou=0.65, max_det=1)
    assert len(s) == 1 and s.item() == pytest.approx(0.9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n, nc = 150, 3
    xy = torch.rand(n, 2, generator=g) * 200
    wh = 20 + torch.rand(n, 2, generator=g) * 60
    boxes = torch.cat((xy, xy + wh), 1)
    obj = torch.rand(n, generator=g)
    cls = torch.rand(n, nc, generator=g)
    conf, iou, max_det = 0.05, 0.5, 40
    ref = _reference_nms(boxes, obj, cls, conf, iou, max_det)

    (b, s, l), = non_max_suppression(_anchor_pred(boxes, obj, cls), "anchor", conf=conf, iou=iou, max_det=max_det)
    assert l.tolist() == [c for _, c, _ in ref]
    assert torch.allclose(s, torch.tensor([sc for sc, _, _ in ref]))
    assert torch.allclose(b, boxes[[i for _, _, i in ref]], atol=1e-4)

    # anchor-free layout (B, 4 + nc, N), no objectness: same as anchor format with obj = 1
    free = _anchor_pred(boxes, torch.ones(n), obj[:, None] * cls)[0]
    free = torch.cat((free[:, :4], free[:, 5:]), 1).T[None]
    (b2, s2, l2), = non_max_suppression(free, "anchor_free", conf=conf, iou=iou, max_det=max_det)
    assert torch.equal(l2, l) and torch.allclose(s2, s) and torch.allclose(b2, b, atol=1e-4)


def test_nms_best_class_only():
    boxes = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    pred = _anchor_pred(boxes, torch.tensor([1.0, 1.0]), torch.tensor([[0.6, 0.3], [0.2, 0.9]]))
    (_, s, l), = non_max_suppression(pred, "anchor", conf=0.1, multi_label=True)
    assert sorted(l.tolist()) == [0, 0, 1, 1]
    (_, s, l), = non_max_suppression(pred, "anchor", conf=0.1, multi_label=False)
    assert l.tolist() == [1, 0] and torch.allclose(s, torch.tensor([0.9, 0.6]))


# ---------------------------------------------------------------------------------------------
# ultralytics models and FLOPs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolov5nu():
    pytest.importorskip("ultralytics")
    return YOLOv5Adapter(cfg="yolov5nu.yaml", conf=0.0, multi_label=False, max_det=100)


def test_ultralytics_cfg_builds_and_detects(yolov5nu):
    assert yolov5nu.head_format == "anchor_free" and len(yolov5nu.names) == 80 and yolov5nu.stride == 32
    image = np.random.default_rng(0).integers(0, 256, (240, 360, 3), dtype=np.uint8)
    batch, metas = yolov5nu.preprocess([image])
    raw = yolov5nu.forward(batch)
    h, w = batch.shape[-2:]
    assert (h, w) == (448, 640)  # 240x360 -> 427x640, padded to a multiple of 32
    assert raw.shape == (1, 4 + 80, sum((h // s) * (w // s) for s in (8, 16, 32)))
    (d,) = yolov5nu.postprocess(raw, metas)
    assert isinstance(d, Detections) and len(d) == 100
    _check_detections(d, (240, 360), 80, 100)


def test_ultralytics_checkpoint_is_detected_by_content(yolov5nu, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "renamed_as_v5.pt"  # the name says nothing: the content decides
    yolo = YOLO("yolov5nu.yaml", task="detect", verbose=False)
    yolo.save(str(path))
    assert legacy.checkpoint_kind(path) == "ultralytics"
    adapter = YOLOv5Adapter(weights=path)
    assert adapter.head_format == "anchor_free" and adapter.names == yolov5nu.names


def test_flops_scale_with_area(yolov5nu):
    g640, g320 = yolov5nu.flops((640, 640)), yolov5nu.flops((320, 320))
    assert g640 > 0 and g640 / g320 == pytest.approx(4.0, rel=0.01)
    assert g640 == pytest.approx(7.7, abs=0.2)  # ultralytics' table for yolov5nu: 7.7


def test_count_gflops_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 10*10*8 outputs x 3*9 MACs
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 10*10*8 x 2*9
        nn.Flatten(),
        nn.Linear(800, 4),  # 4 x 800
    )
    macs = 800 * 27 + 800 * 18 + 4 * 800
    assert count_gflops(net, (1, 3, 10, 10)) == pytest.approx(2 * macs / 1e9)
    assert net.training, "training flag restored"
