"""The bad-input matrix: every bad input, through the API and each CLI verb that takes it.

A row is one bad input. Through the CLI it checks the exit code, a message that names the
problem, that no traceback reaches the user, and that output files which existed before the
call are untouched. Through the API it checks the exception type and message. A few rows are
inputs that must *work* (non-contiguous arrays, a one-frame video, a missing output directory).

``python tests/test_bad_inputs.py`` prints the matrix with each row's message (RESULTS.md).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest
import torch

ASSETS = Path(os.environ.get("ARGOS_ASSETS", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = ASSETS / "weights" / "yolov5n.pt"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---- the bad files ---------------------------------------------------------------------------

def _frames(n: int, h: int = 120, w: int = 160) -> List[np.ndarray]:
    """BGR frames: a grey street with two dark 'people' walking."""
    out = []
    for k in range(n):
        f = np.full((h, w, 3), 150, np.uint8)
        cv2.rectangle(f, (10 + 3 * k, 40), (24 + 3 * k, 80), (40, 40, 40), -1)
        cv2.rectangle(f, (120 - 2 * k, 30), (132 - 2 * k, 70), (30, 60, 90), -1)
        out.append(f)
    return out


def _write_video(path: Path, frames: List[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2] if frames else (120, 160)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def make_files(root: Path) -> Dict[str, Path]:
    """Every bad (and the few good) input files, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    f: Dict[str, Path] = {}
    f["good_video"] = _write_video(root / "good.mp4", _frames(6))
    f["missing"] = root / "missing.mp4"
    f["empty"] = root / "empty.mp4"
    f["empty"].write_bytes(b"")
    f["directory"] = root / "folder.mp4"
    f["directory"].mkdir(exist_ok=True)
    f["unreadable"] = root / "unreadable.mp4"
    shutil.copy(f["good_video"], f["unreadable"])
    f["unreadable"].chmod(0)
    f["text_as_mp4"] = root / "text.mp4"
    f["text_as_mp4"].write_text("not a video\n" * 100)
    data = f["good_video"].read_bytes()
    f["truncated_mp4"] = root / "truncated.mp4"
    f["truncated_mp4"].write_bytes(data[: len(data) // 2])
    f["zero_frames"] = _write_video(root / "zero.mp4", [])
    f["one_frame"] = _write_video(root / "one.mp4", _frames(1))
    f["size_change"] = root / "sizes"
    f["size_change"].mkdir(exist_ok=True)
    for k, fr in enumerate(_frames(3)):
        cv2.imwrite(str(f["size_change"] / f"{k:03d}.png"), fr if k != 1 else cv2.resize(fr, (80, 60)))
    img = _frames(1)[0]
    for name, arr in (("gray_png", cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)),
                      ("rgba_png", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)),
                      ("png16", img.astype(np.uint16) * 257), ("tiny_png", img[:1, :1])):
        f[name] = root / f"{name}.png"
        cv2.imwrite(str(f[name]), arr)
    if WEIGHTS.is_file():
        f["truncated_pt"] = root / "truncated.pt"
        f["truncated_pt"].write_bytes(WEIGHTS.read_bytes()[: WEIGHTS.stat().st_size // 3])
    f["state_dict_pt"] = root / "state_dict.pt"
    torch.save({"model.0.conv.weight": torch.zeros(4, 3, 3, 3)}, f["state_dict_pt"])
    import torchvision

    f["other_framework_pt"] = root / "torchvision_model.pt"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=2), f["other_framework_pt"])
    f["corrupt_onnx"] = root / "model.onnx"
    f["corrupt_onnx"].write_bytes(b"\x08\x07garbage" * 64)
    from argos.proposers.qunet import QUNet, QUNetConfig, save_checkpoint

    f["qunet_other_preset"] = save_checkpoint(QUNet(QUNetConfig.from_preset("full_precision", width=4, depth=2,
                                                                            input_size=(64, 64))), root / "fp.qunet")
    f["file_as_dir"] = root / "plain_file"
    f["file_as_dir"].write_text("a file, not a directory\n")
    f.update(_onnx_files(root))
    return f


def _onnx_files(root: Path) -> Dict[str, Path]:
    """Exported models: the shared yolov5n at 160 (dynamic and fixed), a classifier, a grey-input
    network, a truncated export, and a names file with the wrong count."""
    import warnings

    from torch import nn

    f: Dict[str, Path] = {}
    try:
        import onnx  # noqa: F401  (the exports below need both)
        import onnxruntime  # noqa: F401
    except ImportError:
        return f
    for name, channels in (("classifier_onnx", 3), ("gray_onnx", 1)):
        net = nn.Sequential(nn.Conv2d(channels, 4, 3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
        f[name] = root / f"{name}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, channels, 64, 64),), str(f[name]), input_names=["images"],
                              dynamic_axes={"images": {2: "height", 3: "width"}}, opset_version=17, dynamo=False)
    if WEIGHTS.is_file():
        from argos.tools.export_detector import export_detector

        f["yolov5n_onnx"] = Path(export_detector(WEIGHTS, root / "y5n_160.onnx", 160, dynamic_batch=True)["path"])
        f["fixed_onnx"] = Path(export_detector(WEIGHTS, root / "y5n_160_fixed.onnx", 160, static_shape=True,
                                               check=False)["path"])
        data = f["yolov5n_onnx"].read_bytes()
        f["truncated_onnx"] = root / "truncated.onnx"
        f["truncated_onnx"].write_bytes(data[: len(data) // 2])
    f["three_names"] = root / "names.txt"
    f["three_names"].write_text("person\ncar\nbike\n")
    return f


# ---- running a row ---------------------------------------------------------------------------

@dataclass
class Row:
    """One bad input through one entry point.

    ``call(files, out)`` returns CLI argv (a list of str) or runs the API itself (a callable).
    ``expect``: an exception type for the API, an exit code for the CLI; ``match`` is a regex on
    the message (the exception text or stderr).
    """

    id: str
    call: Callable
    expect: object
    match: str = ""
    needs_weights: bool = True
    skip_root: bool = False
    outputs: Tuple[str, ...] = ()  # names under ``out`` that exist before the call and must survive


def run_cli(argv: List[str]) -> Tuple[int, str, str]:
    from argos.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def run_row(row: Row, files: Dict[str, Path], out: Path) -> Tuple[object, str]:
    """(exit code or exception type or "ok", message); raises AssertionError on a wrong outcome."""
    out.mkdir(parents=True, exist_ok=True)
    sentinels = {}
    for name in row.outputs:
        (out / name).write_text(f"kept {name}\n")
        sentinels[name] = (out / name).read_text()
    spec = row.call(files, out)
    if callable(spec):
        try:
            spec()
        except Exception as err:  # noqa: BLE001 - the row checks the type
            msg = str(err)
            assert isinstance(row.expect, type) and isinstance(err, row.expect), (
                f"{row.id}: expected {row.expect}, got {type(err).__name__}: {msg}")
            assert re.search(row.match, msg), f"{row.id}: message {msg!r} does not match {row.match!r}"
            return type(err).__name__, msg
        assert row.expect == "ok", f"{row.id}: expected {row.expect}, but the call worked"
        return "ok", ""
    rc, stdout, stderr = run_cli(spec)
    text = stderr.strip().splitlines()
    msg = text[-1] if text else ""
    assert "Traceback" not in stderr + stdout, f"{row.id}: a traceback reached the user:\n{stderr}"
    assert rc == row.expect, f"{row.id}: exit code {rc}, expected {row.expect}; stderr:\n{stderr}"
    if row.match:
        assert re.search(row.match, stderr + stdout), f"{row.id}: {stderr!r} does not match {row.match!r}"
        msg = next((line for line in (stderr + stdout).splitlines() if re.search(row.match, line)), msg)
    for name, before in sentinels.items():
        assert (out / name).read_text() == before, f"{row.id}: {name} was overwritten"
    return rc, msg


def _w() -> List[str]:
    return ["--weights", WEIGHTS, "--img-size", "160", "--no-progress"]


def _run(src_key: str, *extra) -> Callable:
    return lambda f, o: ["run", f[src_key], *_w(), "--limit", "3", "--json", o / "s.json", *extra]


def _bench(src_key: str, *extra) -> Callable:
    return lambda f, o: ["bench", "--video", f[src_key], *_w(), "--proposer", "full", "--limit", "3",
                         "--warmup", "0", "--json", o / "s.json", *extra]


def _pareto(src_key: str, *extra) -> Callable:
    return lambda f, o: ["pareto", f[src_key], *_w(), "--limit", "3", "--warmup", "0", "--skips", "2",
                         "--sizes", "128", "--json", o / "s.json", *extra]


VIDEO_ROWS = {
    # name: (message regex, exception of the API)
    "missing": (r"not found", FileNotFoundError),
    "empty": (r"empty", ValueError),
    "directory": (r"no image files", ValueError),
    "text_as_mp4": (r"cannot open video", ValueError),
    "truncated_mp4": (r"cannot open video|decoding stopped", ValueError),
    "zero_frames": (r"cannot open video|no frame", ValueError),
}
KEPT = ("s.json", "s.jsonl")


def _video_rows() -> List[Row]:
    rows = []
    for name, (match, api_error) in VIDEO_ROWS.items():
        rows.append(Row(f"video/{name}/run", _run(name), 2, match, outputs=KEPT))
        rows.append(Row(f"video/{name}/bench", _bench(name), 2, match, outputs=KEPT))
        rows.append(Row(f"video/{name}/pareto", _pareto(name), 2, match, outputs=("s.json",)))

        def api(f, o, name=name):
            from argos.data.video import VideoReader

            return lambda: list(VideoReader(str(f[name])))

        rows.append(Row(f"video/{name}/api", api, api_error, match, needs_weights=False))
    rows.append(Row("video/unreadable/run", _run("unreadable"), 2, r"ermission|cannot open", skip_root=True))
    rows.append(Row("video/one_frame/run (works)", _run("one_frame"), 0, r"1 frames"))
    rows.append(Row("video/one_frame/pareto", lambda f, o: ["pareto", f["one_frame"], *_w(), "--limit", "3",
                                                          "--json", o / "s.json"], 2, r"no frames after the 2 warm-up"))
    rows.append(Row("video/size_change/run (works, warns)", _run("size_change", "--proposer", "temporal"), 0,
                    r"frame 1 is 80x60 after 160x120 frames; the proposer started afresh"))
    rows.append(Row("video/size_change/pareto", _pareto("size_change"), 2, r"frame 1 is 80x60 after 160x120 frames"))
    return rows


def _wrapped():
    import argos

    return argos.wrap("yolov5", "full", "masked", weights=str(WEIGHTS), img_size=160)


def _image_rows() -> List[Row]:
    img = np.ascontiguousarray(_frames(1)[0][:, :, ::-1])

    def api(arr, expect, match):
        return lambda f, o: (lambda: _wrapped()(arr))

    rows = [
        Row("image/grayscale array", api(img[:, :, 0].copy(), None, None), ValueError, r"grayscale"),
        Row("image/RGBA array", api(np.dstack([img, np.full(img.shape[:2] + (1,), 255, np.uint8)]), None, None),
            ValueError, r"4-channel"),
        Row("image/16-bit array", api(img.astype(np.uint16) * 257, None, None), TypeError, r"uint16.*// 257"),
        Row("image/float NaN tensor", api(torch.full((3, 64, 64), float("nan")), None, None), ValueError, r"NaN"),
        Row("image/empty array", api(np.zeros((0, 0, 3), np.uint8), None, None), ValueError, r"empty image"),
        Row("image/1x1 (works)", api(img[:1, :1].copy(), None, None), "ok"),
        Row("image/10000x10000 (works)", api(np.zeros((10000, 10000, 3), np.uint8), None, None), "ok"),
        Row("image/missing file", lambda f, o: (lambda: _wrapped()(str(o / "nope.png"))), FileNotFoundError,
            r"not found"),
    ]
    for name in ("gray_png", "rgba_png", "png16", "tiny_png"):
        rows.append(Row(f"image/{name} file via run (works: decoded to RGB)", _run(name), 0, r"1 frames"))
    return rows


def _weight_rows() -> List[Row]:
    rows = []
    for name, match in (("truncated_pt", r"not a readable torch checkpoint"),
                        ("state_dict_pt", r"not a YOLOv5 or ultralytics detection checkpoint"),
                        ("other_framework_pt", r"not a YOLOv5 or ultralytics detection checkpoint"),
                        ("corrupt_onnx", r"ONNX")):
        for verb, build in (("run", _run), ("bench", _bench), ("pareto", _pareto)):
            def call(f, o, name=name, build=build):
                argv = build("good_video")(f, o)
                return [a if a != WEIGHTS else f[name] for a in argv]

            rows.append(Row(f"weights/{name}/{verb}", call, 2, match, outputs=KEPT))

        def api(f, o, name=name):
            from argos.wrap import build_adapter

            return lambda: build_adapter("yolov5", weights=str(f[name]), img_size=160)

        rows.append(Row(f"weights/{name}/api", api, ValueError, match))
    rows.append(Row("weights/QU-Net of another preset/run", _run("good_video", "--proposer", "qunet", "--proposer-opt",
                                                                "preset=all_quantized_dct", "weights=PLACEHOLDER"),
                    2, r"is preset 'full_precision', not 'all_quantized_dct'"))
    rows.append(Row("weights/yolov5 .pt as QU-Net/export", lambda f, o: ["export", "qunet", "--weights", WEIGHTS,
                                                                       "--onnx", o / "q.onnx"],
                    2, r"not a QU-Net checkpoint"))
    return rows


def _exported_rows() -> List[Row]:
    """Exported (.onnx) detectors through run and the API."""

    def run_with(model: str, *extra):
        def call(f, o):
            argv = _run("good_video", *extra)(f, o)
            return [a if a != WEIGHTS else f[model] for a in argv]

        return call

    def openvino_missing(f, o):
        def call():
            saved = sys.modules.get("openvino", "absent")
            sys.modules["openvino"] = None  # import openvino -> ImportError
            try:
                from argos.wrap import build_adapter

                build_adapter(str(f["yolov5n_onnx"]), backend="openvino")
            finally:
                if saved == "absent":
                    sys.modules.pop("openvino", None)
                else:
                    sys.modules["openvino"] = saved
        return call

    return [
        Row("exported/not a detector (classifier)/run", run_with("classifier_onnx"), 2,
            r"cannot recognise the detector's output layout.*\(1, 4\).*layout=", outputs=KEPT),
        Row("exported/1-channel input/run", run_with("gray_onnx"), 2, r"1 channels.*3-channel", outputs=KEPT),
        Row("exported/truncated .onnx/run", run_with("truncated_onnx"), 2, r"not a readable ONNX model|no ONNX graph",
            outputs=KEPT),
        Row("exported/unknown layout name/run", run_with("yolov5n_onnx", "--detector-opt", "layout=ssd"), 2,
            r"layout must be one of"),
        Row("exported/layout that does not fit/run", run_with("yolov5n_onnx", "--detector-opt", "layout=nanodet"), 2,
            r"layout='nanodet' does not fit the outputs"),
        Row("exported/names file of another length/run", run_with("yolov5n_onnx", "--detector-opt", "names=NAMES"), 2,
            r"3 class names for a model with 80 classes"),
        Row("exported/fixed-shape export at another --img-size/run",
            lambda f, o: [a if a != "160" else "192" for a in run_with("fixed_onnx")(f, o)], 2,
            r"fixed 160x160 input; img_size=192"),
        Row("exported/gather_scatter on ONNX Runtime/run", run_with("yolov5n_onnx", "--executor", "gather_scatter"), 2,
            r"gather_scatter executor rewrites a torch network"),
        Row("exported/unknown backend/run", run_with("yolov5n_onnx", "--detector-opt", "backend=tensorrt"), 2,
            r"backend must be one of"),
        Row("exported/openvino not installed/api", openvino_missing, ImportError, r"pip install openvino"),
        Row("exported/yolov5n .onnx/run (works)", run_with("yolov5n_onnx", "--compare"), 0, r"speedup"),
    ]


def _name_rows() -> List[Row]:
    rows = []
    for what, flag, match in (("proposer", "--proposer", r"unknown proposer 'nope'; valid names: distill, full"),
                              ("executor", "--executor", r"unknown executor 'nope'; valid names: gather_scatter"),
                              ("adapter", "--detector", r"unknown adapter 'nope'; valid names: .*yolov5"),
                              ("class", "--classes", r"unknown class\(es\) \['nope'\].*person")):
        rows.append(Row(f"names/{what}/run", _run("good_video", flag, "nope"), 2, match, outputs=KEPT))
        if what != "class":
            rows.append(Row(f"names/{what}/bench", _bench("good_video", flag, "nope"), 2, match, outputs=KEPT))
    rows.append(Row("names/proposer/pareto", _pareto("good_video", "--argos", "nope+masked"), 2,
                    r"unknown proposer 'nope'"))
    rows.append(Row("names/proposer/api", lambda f, o: (lambda: __import__("argos").wrap("yolov5", "nope", "masked")),
                    ValueError, r"valid names: distill, full, motion, oracle, qunet, temporal", needs_weights=False))
    return rows


def _option_rows() -> List[Row]:
    rows = []
    for verb, build in (("run", _run), ("bench", _bench), ("pareto", _pareto)):
        rows.append(Row(f"options/--threads 0/{verb}", build("good_video", "--threads", "0"), 2,
                        r"--threads: must be >= 1, got 0", outputs=KEPT))
        rows.append(Row(f"options/--limit -1/{verb}", build("good_video", "--limit", "-1"), 2,
                        r"--limit: must be >= 1, got -1", outputs=KEPT))
        rows.append(Row(f"options/--img-size 150 (not a stride multiple)/{verb}", build("good_video", "--img-size", "150"),
                        2, r"img_size 150 must be a multiple of the model stride 32", outputs=KEPT))
    rows += [
        Row("options/--out equal to the input/run", _run("good_video", "--out", "INPUT"), 2,
            r"is the input .*not overwritten"),
        Row("options/--detections equal to the input/run", _run("good_video", "--detections", "INPUT"), 2,
            r"is the input .*not overwritten"),
        Row("options/--json equal to the input/bench", lambda f, o: ["bench", "--video", f["good_video"], *_w(),
                                                                      "--json", f["good_video"]], 2, r"is the input"),
        Row("options/--json equal to the input/pareto", lambda f, o: ["pareto", f["good_video"], *_w(),
                                                                       "--json", f["good_video"]], 2, r"is the input"),
        Row("options/--out in a missing directory/run (works: created)", _run("one_frame", "--out", "NEWDIR"), 0,
            r"wrote .*new/dir/o\.mp4"),
        Row("options/--out under a plain file/run", _run("one_frame", "--out", "UNDERFILE"), 2,
            r"plain_file is a file, not a directory"),
        Row("options/--out with no video suffix/run", _run("one_frame", "--out", "TXT"), 2, r"cannot write video"),
        Row("options/--out in a read-only directory/run", _run("one_frame", "--out", "READONLY"), 2,
            r"not writable", skip_root=True),
    ]
    return rows


def _with_calibration(text_or_cal, *extra) -> Callable:
    """``argos run`` with a calibration file written first into the output folder."""
    def call(f, o):
        path = Path(o) / "cam.json"
        if isinstance(text_or_cal, str):
            path.write_text(text_or_cal)
        else:
            text_or_cal.save(path)
        return ["run", f["good_video"], *_w(), "--limit", "3", "--json", o / "s.json", "--calibration", path, *extra]
    return call


def _calibration_rows() -> List[Row]:
    from argos.calibration import Calibration

    def cal(**kw):
        return Calibration("temporal", "packed_crops", **kw)

    return [
        Row("calibration/another frame size/run", _with_calibration(cal(frame_size=(999, 999))), 2,
            r"made on 999x999 frames; these are \d+x\d+", outputs=KEPT),
        Row("calibration/another detector's classes/run", _with_calibration(cal(names={0: "cat"})), 2,
            r"made for a detector with 1 classes \(cat.*calibrate again with this detector", outputs=KEPT),
        Row("calibration/another input size/run", _with_calibration(cal(img_size=320)), 2,
            r"made at input size 320, not 160: pass --img-size 320", outputs=KEPT),
        Row("calibration/corrupt file/run", _with_calibration("{not json"), 2, r"is not valid JSON", outputs=KEPT),
        Row("calibration/video too short/calibrate", lambda f, o: ["calibrate", f["one_frame"], *_w(), "--out",
                                                                   o / "s.json"], 2,
            r"has 1 frames from frame 0; a calibration needs at least 32", outputs=KEPT),
    ]


ROWS = (_video_rows() + _image_rows() + _weight_rows() + _exported_rows() + _name_rows() + _option_rows()
        + _calibration_rows())


def _substitute(row: Row, files: Dict[str, Path], out: Path) -> Row:
    """Resolve the placeholders some rows use for paths that depend on the files."""
    ro = out / "readonly"
    subs = {"INPUT": files["good_video"], "NEWDIR": out / "new" / "dir" / "o.mp4",
            "UNDERFILE": files["file_as_dir"] / "o.mp4", "TXT": out / "o.txt", "READONLY": ro / "o.mp4",
            "weights=PLACEHOLDER": f"weights={files['qunet_other_preset']}",
            "names=NAMES": f"names={files['three_names']}"}
    call = row.call

    def wrapped_call(f, o):
        spec = call(f, o)
        if callable(spec):
            return spec
        if "READONLY" in spec:
            ro.mkdir(exist_ok=True)
            ro.chmod(0o555)
        return [subs.get(str(a), a) for a in spec]

    return Row(row.id, wrapped_call, row.expect, row.match, row.needs_weights, row.skip_root, row.outputs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, files, tmp_path):
    if row.needs_weights and not WEIGHTS.is_file():
        pytest.skip(f"needs {WEIGHTS}")
    if row.skip_root and IS_ROOT:
        pytest.skip("root reads and writes files whatever their permissions")
    if row.id.startswith("exported/") and "yolov5n_onnx" not in files:
        pytest.skip("needs onnx and onnxruntime (pip install argos-cv[export])")
    run_row(_substitute(row, files, tmp_path), files, tmp_path)


def test_noncontiguous_and_negative_stride_arrays_work_and_agree():
    if not WEIGHTS.is_file():
        pytest.skip(f"needs {WEIGHTS}")
    fast = _wrapped()
    img = np.ascontiguousarray(_frames(1)[0][:, :, ::-1])
    ref = fast(img)
    padded = np.zeros((img.shape[0], img.shape[1] + 7, 3), np.uint8)
    padded[:, : img.shape[1]] = img
    for arr in (np.asfortranarray(img), padded[:, : img.shape[1]], np.ascontiguousarray(img[::-1])[::-1]):
        assert not arr.flags["C_CONTIGUOUS"] and np.array_equal(arr, img)
        got = fast(arr)
        assert torch.equal(got.boxes, ref.boxes) and torch.equal(got.labels, ref.labels)
    # A mirrored frame gives the mirrored detections' count (a real view with negative strides).
    flipped = img[:, ::-1]
    assert flipped.strides[1] < 0
    assert len(fast(flipped)) == len(fast(np.ascontiguousarray(flipped)))


def test_a_row_that_succeeds_where_it_should_fail_is_reported(files, tmp_path):
    """The matrix's own check: an input that works but is listed as bad fails the row."""
    row = Row("self-check", _run("one_frame"), 2, "never", needs_weights=True)
    if not WEIGHTS.is_file():
        pytest.skip(f"needs {WEIGHTS}")
    with pytest.raises(AssertionError, match="exit code 0, expected 2"):
        run_row(row, files, tmp_path)


def main() -> int:
    """Print the matrix as markdown: row, outcome, message."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_files(root / "files")
        print("| input / entry point | outcome | message |\n|---|---|---|")
        for k, row in enumerate(ROWS):
            if row.skip_root and IS_ROOT:
                print(f"| {row.id} | skipped | (run as root: permissions do not apply) |")
                continue
            outcome, msg = run_row(_substitute(row, files, root / f"o{k}"), files, root / f"o{k}")
            outcome = f"exit {outcome}" if isinstance(outcome, int) else outcome
            msg = msg.replace(str(root), "…").replace("|", "\\|")
            print(f"| {row.id} | {outcome} | {msg[:220]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
