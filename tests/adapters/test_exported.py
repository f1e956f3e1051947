"""ExportedAdapter: ONNX files under ONNX Runtime and OpenVINO, checked against independent references.

References: the torch model the file was exported from (``argos export detector`` of the shared
yolov5n), and for the YOLOX / NanoDet / YOLOv8 layouts, tiny random heads whose decoding is
written out again here, cell by cell, in plain numpy.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import argos  # noqa: E402
from argos.adapters.exported import ExportedAdapter, detect_layout, onnx_gflops  # noqa: E402
from argos.adapters.yolov5 import YOLOv5Adapter  # noqa: E402
from argos.tools.export_detector import export_detector  # noqa: E402


def _pets_frames(assets: Path, n: int, every: int = 7):
    cap = cv2.VideoCapture(str(assets / "data/video/pets2009_s2l1_480x360.avi"))
    frames = []
    while len(frames) < n:
        for _ in range(every):
            ok, f = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(f[..., ::-1]))
    if not frames:
        pytest.skip("PETS video not readable")
    return frames


@pytest.fixture(scope="module")
def exports(tmp_path_factory, yolov5n_weights):
    """yolov5n exported at 320: dynamic batch + dynamic shape, and static 320x320 batch 1."""
    d = tmp_path_factory.mktemp("onnx")
    dyn = export_detector(yolov5n_weights, d / "dyn.onnx", img_size=320, dynamic_batch=True)
    fixed = export_detector(yolov5n_weights, d / "fixed.onnx", img_size=320, static_shape=True)
    return {"dyn": Path(dyn["path"]), "fixed": Path(fixed["path"]), "report": dyn}


def _same(a, b, atol=1e-2):
    return len(a) == len(b) and torch.allclose(a.boxes, b.boxes, atol=atol) and torch.equal(a.labels, b.labels)


def test_export_report_and_metadata(exports):
    r = exports["report"]
    assert r["layout"] == "yolov5" and r["same_detections"]
    assert r["input"] == ["batch", 3, "height", "width"]
    ad = ExportedAdapter(exports["dyn"])
    assert ad.layout == "yolov5" and ad.img_size == 320 and ad.stride == 32
    assert ad.names[0] == "person" and len(ad.names) == 80
    assert ad.fixed_input_hw is None and ad.batch_size is None


def test_onnxruntime_matches_torch_checkpoint(exports, yolov5n_weights, assets):
    frames = _pets_frames(assets, 4)
    ref = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=320, conf=0.25)
    ort = ExportedAdapter(exports["dyn"], conf=0.25)
    n = 0
    for f in frames:
        a, b = ref([f])[0], ort([f])[0]
        assert _same(a, b), (len(a), len(b))
        n += len(a)
    assert n > 5  # people were found, so the comparison means something


def test_full_proposer_equals_unwrapped_exported_model(exports, assets):
    frames = _pets_frames(assets, 3)
    ort = ExportedAdapter(exports["dyn"], conf=0.25)
    for executor in ("masked", "packed_crops"):
        w = argos.wrap(ort, proposer="full", executor=executor)
        for f in frames:
            a, b = w(f), ort([f])[0]
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)


def test_batch_loop_equals_one_call(exports, assets):
    """A fixed batch of 1 runs a pack image by image; the dynamic-batch file takes it at once."""
    frames = _pets_frames(assets, 3)
    fixed = ExportedAdapter(exports["fixed"], conf=0.25)
    assert fixed.batch_size == 1 and fixed.fixed_input_hw == (320, 320)
    batch, metas = fixed.preprocess(frames)
    outputs, _ = fixed.forward(batch)
    assert outputs[0].shape[0] == 3
    for k, f in enumerate(frames):
        assert _same(fixed.postprocess(fixed.forward(batch[k : k + 1]), metas[k : k + 1])[0], fixed([f])[0], 1e-4)


def test_fixed_shape_export_gets_canvases_of_its_size(exports, assets):
    """One frame's crops can never beat its own 320x320 input, but the crops of several frames
    share one canvas of that size."""
    frames = _pets_frames(assets, 4)
    fixed = ExportedAdapter(exports["fixed"], conf=0.25)
    targets = [{"boxes": fixed([f])[0].boxes[:1]} for f in frames]
    assert all(len(t["boxes"]) for t in targets)
    w = argos.wrap(fixed, proposer="oracle", executor="packed_crops")
    out = w(frames, targets=targets)
    plan = w.executor.last_plan
    assert 1 <= plan.n_canvases < len(frames) and not any(plan.fallback)
    assert tuple(plan.canvas_hw) == (320, 320)
    assert all(len(d) for d in out)
    with pytest.raises(ValueError, match="fixed 320x320 input; img_size=640"):
        ExportedAdapter(exports["fixed"], img_size=640)


def test_oracle_packed_crops_close_to_unwrapped(exports, assets):
    """Crops at native scale find what the whole frame found around the oracle boxes."""
    from argos.metrics import recall_vs_reference

    frames = _pets_frames(assets, 4)
    ort = ExportedAdapter(exports["dyn"], conf=0.25)
    w = argos.wrap(ort, proposer="oracle", executor="packed_crops")
    refs, outs = [], []
    for f in frames:
        ref = ort([f])[0]
        refs.append(ref)
        outs.append(w(f, targets=[{"boxes": ref.boxes}]))
        assert w.last_stats.area_processed < 1.0
    assert recall_vs_reference(outs, refs, iou=0.5, min_score=0.25) >= 0.85


def test_gflops_from_graph_equal_torch_count(exports, yolov5n_weights):
    ref = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=320)
    ort = ExportedAdapter(exports["dyn"])
    for hw in ((256, 320), (320, 320)):
        assert ort.flops(hw) == pytest.approx(ref.flops(hw), rel=1e-3)
    assert onnx_gflops(exports["dyn"], (1, 3, 320, 320)) == pytest.approx(ref.flops((320, 320)), rel=1e-3)


def test_gather_scatter_refused_clearly(exports):
    # At wrap time: with a video proposer the executor may not run until well into a stream.
    with pytest.raises(TypeError, match="gather_scatter.*packed_crops"):
        argos.wrap(ExportedAdapter(exports["dyn"]), proposer="auto", executor="gather_scatter")


def test_openvino_backend_agrees_with_onnxruntime(exports, assets):
    pytest.importorskip("openvino")
    frames = _pets_frames(assets, 3)
    ort = ExportedAdapter(exports["dyn"], conf=0.25)
    ov = ExportedAdapter(exports["dyn"], backend="openvino", conf=0.25, precision="f32")
    ov_default = argos.build_adapter(str(exports["dyn"]), backend="openvino", conf=0.25)
    assert ov.backend == "openvino" and ov_default.backend == "openvino"
    for f in frames:
        a, b = ort([f])[0], ov([f])[0]
        assert _same(a, b, atol=0.05)
    w = argos.wrap(ov_default, proposer="full", executor="packed_crops")
    assert torch.equal(w(frames[0]).boxes, ov_default([frames[0]])[0].boxes)


def test_wrap_takes_onnx_path(exports):
    w = argos.wrap(str(exports["dyn"]), proposer="full", executor="masked", conf=0.3)
    assert isinstance(w.adapter, ExportedAdapter) and w.adapter.conf == 0.3


# --------------------------------------------------------------------------------------------
# Other layouts: tiny random heads, decoded again by hand
# --------------------------------------------------------------------------------------------


def _export(module: nn.Module, path: Path, hw=(64, 96), output_names=("output0",), dynamic=True, channels=3):
    module.eval()
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch", 1: "n"} for n in output_names})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, channels, *hw),), str(path), input_names=["images"],
                          output_names=list(output_names), dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


class _Levels(nn.Module):
    """Feature maps at strides 8, 16, 32 from a few random convolutions."""

    def __init__(self, out_ch: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 8, 3, 8, 1)
        self.down = nn.ModuleList([nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)])
        self.heads = nn.ModuleList([nn.Conv2d(8, out_ch, 1) for _ in range(3)])

    def maps(self, x):
        f = [torch.relu(self.stem(x))]
        for d in self.down:
            f.append(torch.relu(d(f[-1])))
        return [h(m) for h, m in zip(self.heads, f)]


class TinyYOLOX(_Levels):
    """YOLOX without decoding: per cell ``x, y, log w, log h`` raw, then sigmoid objectness and classes."""

    def __init__(self, nc=3):
        super().__init__(5 + nc, seed=1)

    def forward(self, x):
        outs = []
        for m in self.maps(x / 255):  # YOLOX takes 0-255 pixels
            m = m.flatten(2).transpose(1, 2)
            outs.append(torch.cat((m[..., :4] * 0.5, m[..., 4:].sigmoid()), -1))
        return torch.cat(outs, 1)


class TinyNanoDet(_Levels):
    """NanoDet's per-level exports: ``cls_pred_stride_s`` [B, hw, C] and ``dis_pred_stride_s`` [B, hw, 4 (R + 1)]."""

    def __init__(self, nc=2, reg_max=7):
        super().__init__(nc + 4 * (reg_max + 1), seed=2)
        self.nc = nc

    def forward(self, x):
        outs = []
        for m in self.maps(x):
            m = m.flatten(2).transpose(1, 2)
            outs += [m[..., : self.nc].sigmoid(), m[..., self.nc :] * 3]
        return tuple(outs)


class TinyV8(_Levels):
    """An ultralytics-style decoded output [B, 4 + C, N]: boxes already in input pixels."""

    def __init__(self, nc=2):
        super().__init__(4 + nc, seed=3)

    def forward(self, x):
        outs = []
        for s, m in zip((8, 16, 32), self.maps(x)):
            b, _, h, w = m.shape
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            cx = (xs.flatten() + 0.5) * s
            cy = (ys.flatten() + 0.5) * s
            m = m.flatten(2)
            box = torch.stack((cx + m[:, 0], cy + m[:, 1], s * 2 * m[:, 2].sigmoid() + 4, s * 2 * m[:, 3].sigmoid() + 4), 1)
            outs.append(torch.cat((box, m[:, 4:].sigmoid()), 1))
        return torch.cat(outs, 2)


def _reference_nms(boxes, scores, conf, iou):
    """Multi-label, class-aware NMS in numpy (greedy, per class): sorted (box, score, class) rows."""
    rows = []
    for c in range(scores.shape[1]):
        keep = np.where(scores[:, c] > conf)[0]
        order = keep[np.argsort(-scores[keep, c], kind="stable")]
        chosen = []
        for i in order:
            ok = True
            for j in chosen:
                xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
                xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
                inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)
                area = lambda k: (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])  # noqa: E731
                if inter / (area(i) + area(j) - inter + 1e-9) > iou:
                    ok = False
                    break
            if ok:
                chosen.append(i)
        rows += [(boxes[i], scores[i, c], c) for i in chosen]
    rows.sort(key=lambda r: -r[1])
    return rows


def _check_against(adapter, image, ref_boxes_scores, conf=0.3, iou=0.5):
    """Adapter output (network pixels: the test image is already at network size) vs the reference rows."""
    boxes, scores = ref_boxes_scores
    rows = _reference_nms(boxes, scores, conf, iou)
    det = adapter([image])[0]
    assert len(rows) > 0 and len(det) == len(rows)
    got = sorted(zip(det.boxes.numpy(), det.scores.numpy(), det.labels.numpy()), key=lambda r: -r[1])
    for (gb, gs, gl), (rb, rs, rl) in zip(got, rows):
        assert gl == rl and abs(gs - rs) < 1e-4 and np.allclose(gb, np.clip(rb, 0, [96, 64, 96, 64]), atol=1e-2)


def _image(seed=0, hw=(64, 96)):
    return np.random.default_rng(seed).integers(0, 255, (*hw, 3), np.uint8)


def test_yolox_layout_decoded_by_grid(tmp_path):
    model = TinyYOLOX()
    path = _export(model, tmp_path / "yolox.onnx")
    ad = ExportedAdapter(path, img_size=96, conf=0.3, iou=0.5)
    assert ad.layout == "yolox" and ad.channel_order == "bgr" and ad.input_scale == 1.0
    assert ad.names == {0: "class0", 1: "class1", 2: "class2"}
    im = _image()
    x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1)[None].float()  # BGR, 0-255
    raw = model(x)[0].detach().numpy()
    boxes, k = [], 0
    for s in (8, 16, 32):
        for gy in range(64 // s):
            for gx in range(96 // s):
                r = raw[k]
                cx, cy, w, h = (r[0] + gx) * s, (r[1] + gy) * s, np.exp(r[2]) * s, np.exp(r[3]) * s
                boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                k += 1
    _check_against(ad, im, (np.array(boxes), raw[:, 5:] * raw[:, 4:5]))


def test_nanodet_per_level_layout(tmp_path):
    model = TinyNanoDet()
    names = [f"{p}_pred_stride_{s}" for s in (8, 16, 32) for p in ("cls", "dis")]
    path = _export(model, tmp_path / "nanodet.onnx", output_names=names)
    ad = ExportedAdapter(path, img_size=96, conf=0.3, iou=0.5)
    assert ad.layout == "nanodet" and ad.layout_info["reg_max"] == 7 and len(ad.names) == 2
    im = _image(1)
    x = (torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1)[None].float()
         - torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)) / torch.tensor([57.375, 57.12, 58.395]).view(1, 3, 1, 1)
    outs = [o[0].detach().numpy() for o in model(x)]
    boxes, scores = [], []
    for lvl, s in enumerate((8, 16, 32)):
        cls, dis = outs[2 * lvl], outs[2 * lvl + 1]
        w = 96 // s
        for i in range(cls.shape[0]):
            cx, cy = (i % w + 0.5) * s, (i // w + 0.5) * s
            d = []
            for side in range(4):
                logits = dis[i, side * 8 : (side + 1) * 8]
                p = np.exp(logits - logits.max())
                d.append((p / p.sum() * np.arange(8)).sum() * s)
            boxes.append([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
            scores.append(cls[i])
    _check_against(ad, im, (np.array(boxes), np.array(scores)))


def test_yolov8_layout_and_names_override(tmp_path):
    model = TinyV8()
    path = _export(model, tmp_path / "v8.onnx")
    names_file = tmp_path / "names.txt"
    names_file.write_text("car\nbike\n")
    ad = ExportedAdapter(path, img_size=96, conf=0.3, iou=0.5, names=str(names_file))
    assert ad.layout == "yolov8" and ad.names == {0: "car", 1: "bike"}
    im = _image(2)
    x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255
    raw = model(x)[0].detach().numpy().T  # [N, 4 + C]
    cxcy, wh = raw[:, :2], raw[:, 2:4]
    _check_against(ad, im, (np.concatenate((cxcy - wh / 2, cxcy + wh / 2), 1), raw[:, 4:]))
    with pytest.raises(ValueError, match="3 class names for a model with 2 classes"):
        ExportedAdapter(path, img_size=96, names=["a", "b", "c"])


def test_layout_detection_by_cell_count():
    hw = (64, 96)
    n = 12 * 8 + 6 * 4 + 3 * 2
    assert detect_layout([np.zeros((1, 84, n))], ["o"], hw)[0] == "yolov8"
    assert detect_layout([np.zeros((1, 3 * n, 85))], ["o"], hw) == ("yolov5", {"nc": 80, "strides": (8, 16, 32)})
    assert detect_layout([np.zeros((1, n, 85))], ["o"], hw)[0] == "yolox"
    assert detect_layout([np.zeros((1, 300, 6))], ["o"], hw)[0] == "end2end"


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


class _Classifier(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, 2, 1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_not_a_detector_names_shapes_and_layout(tmp_path):
    path = _export(_Classifier(), tmp_path / "cls.onnx", dynamic=False, hw=(64, 64))
    with pytest.raises(ValueError, match=r"output layout.*output0 \(1, 4\).*layout="):
        ExportedAdapter(path)
    with pytest.raises(ValueError, match=r"layout='yolox' does not fit the outputs.*\(1, 4\)"):
        ExportedAdapter(path, layout="yolox")


def test_single_channel_input_refused(tmp_path):
    path = _export(_Classifier(channels=1), tmp_path / "gray.onnx", dynamic=False, hw=(64, 64), channels=1)
    with pytest.raises(ValueError, match="1 channels.*3-channel"):
        ExportedAdapter(path)


def test_truncated_and_corrupt_files(tmp_path, exports):
    data = exports["dyn"].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot an onnx model" * 50)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (cut, junk):
        with pytest.raises(ValueError, match="not a readable ONNX model|holds no ONNX graph|cannot load"):
            ExportedAdapter(path)
    with pytest.raises(ValueError, match="empty"):
        ExportedAdapter(empty)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        ExportedAdapter(tmp_path / "nope.onnx")


def test_openvino_missing_says_how_to_install(exports, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ImportError, match="pip install openvino"):
        ExportedAdapter(exports["dyn"], backend="openvino")


def test_unknown_backend_and_layout_names(exports):
    with pytest.raises(ValueError, match="backend must be one of"):
        ExportedAdapter(exports["dyn"], backend="tensorrt")
    with pytest.raises(ValueError, match="layout must be one of"):
        ExportedAdapter(exports["dyn"], layout="ssd")
