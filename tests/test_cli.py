import json

import pytest

from argos.cli import main

GUIDE_KEYS = {
    "baseline": {"map50", "map50_95", "precision", "recall", "gflops", "latency_ms"},
    "argos": {"map50", "map50_95", "precision", "recall", "gflops", "gflops_proposer", "area_processed",
              "regions_detected", "latency_ms"},
}


def _bench_args(assets, weights, *extra):
    return [
        "bench", "--images", str(assets / "data/coco128/images/train2017"),
        "--annotations", str(assets / "data/coco128/annotations/instances_train2017.json"),
        "--weights", str(weights), "--limit", "4", "--warmup", "0", "--threads", "2", "--no-progress", *extra,
    ]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "oracle" in out and "masked" in out and "yolov5" in out


def test_bench_full_masked_matches_baseline(assets, yolov5n_weights, tmp_path, capsys, coco128):
    out = tmp_path / "b.json"
    assert main(_bench_args(assets, yolov5n_weights, "--proposer", "full", "--executor", "masked", "--json", str(out))) == 0
    r = json.loads(out.read_text())
    for side, keys in GUIDE_KEYS.items():
        assert keys <= set(r[side]), f"{side} misses {keys - set(r[side])}"
    assert {"median", "proposer", "detector", "overhead"} <= set(r["argos"]["latency_ms"])
    assert r["images"] == 4 and "speedup" in r and "recall_vs_baseline@0.5" in r["agreement"]
    assert r["argos"]["map50_95"] == pytest.approx(r["baseline"]["map50_95"], abs=5e-4)
    assert r["baseline"]["map50_95"] > 0.2
    assert r["argos"]["area_processed"] == 1.0 and r["agreement"]["recall_vs_baseline@0.5"] == 1.0
    assert "speedup" in capsys.readouterr().out


def test_bench_oracle_covers_every_object(assets, yolov5n_weights, tmp_path):
    out = tmp_path / "o.json"
    assert main(_bench_args(assets, yolov5n_weights, "--proposer", "oracle", "--proposer-opt", "dilation=4",
                            "--json", str(out))) == 0
    r = json.loads(out.read_text())
    assert r["argos"]["regions_detected"] == 1.0
    assert 0.0 < r["argos"]["area_processed"] < 0.9
    assert r["config"]["proposer_kwargs"] == {"dilation": 4}


def test_bench_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--images", str(tmp_path), "--annotations", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_demo_without_assets(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ARGOS_ASSETS", str(tmp_path / "nowhere"))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "ARGOS_ASSETS" in capsys.readouterr().err


def test_coco_demo_writes_overlay(assets, yolov5n_weights, tmp_path):
    assert main(["demo", "--coco", "--limit", "2", "--overlays", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    import cv2

    png = cv2.imread(str(tmp_path / "demo_coco" / "overlay.png"))
    assert png is not None and png.shape[0] > 100
    assert json.loads((tmp_path / "demo_coco" / "bench.json").read_text())["images"] == 2


def test_video_demo_writes_everything_it_prints(assets, yolov5n_weights, tmp_path, capsys):
    if not (assets / "data/video/pets2009_s2l1_480x360.avi").is_file():
        pytest.skip("PETS video missing")
    import cv2

    from argos.metrics.detection import recall_vs_reference
    from argos.tools.pareto import skip_point

    # Calibrate on frames 0-31 (the least a calibration takes), then run frames 32-43.
    assert main(["demo", "--calibrate-frames", "32", "--limit", "12", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["frames"] == 12 and summary["start"] == 32
    assert 0.0 <= summary["agreement"] <= 1.0 and summary["speedup"] > 0
    assert f"{summary['speedup']:.2f}x" in printed and f"{summary['agreement']:.3f}" in printed
    assert "frames 32-43 (held out from the calibration)" in printed
    # The run used what the calibration file says, and the default ran beside it.
    from argos.calibration import load_calibration

    cal = load_calibration(tmp_path / "demo_calibration.json")
    assert summary["calibration"]["config"] == cal.report["chosen"]["params"]["config"] in printed
    assert cal.report["frames"] == 30 and 0.0 <= summary["default"]["agreement"] <= 1.0
    lines = (tmp_path / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 12
    cap = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    assert decoded == 12
    for name in ("demo_side_by_side.png", "demo_timeline.png", "demo_pareto.png"):
        img = cv2.imread(str(tmp_path / name))
        assert img is not None and img.shape[0] > 100, name
    # The printed skip-2 agreement, recomputed by hand from the unwrapped detections of the run
    # (the JSON-lines file holds argos's, so re-run the unwrapped detector on the same frames).
    from argos.data.video import VideoReader
    from argos.wrap import build_adapter

    adapter = build_adapter(str(yolov5n_weights), img_size=640, conf=0.25)
    refs = [adapter.predict([f])[0]
            for _, f in VideoReader(assets / "data/video/pets2009_s2l1_480x360.avi", start=32, limit=12)]
    want = recall_vs_reference(skip_point(refs, 2), refs)
    skip2 = next(r for r in summary["alternatives"] if r["method"] == "skip: 1 frame in 2")
    assert skip2["agreement"] == pytest.approx(want, abs=1e-9)
    # The lower input size beside it, recomputed the same way.
    small = build_adapter(str(yolov5n_weights), img_size=512, conf=0.25)
    lows = [small.predict([f])[0]
            for _, f in VideoReader(assets / "data/video/pets2009_s2l1_480x360.avi", start=32, limit=12)]
    low = next(r for r in summary["alternatives"] if r["method"] == "unwrapped yolov5n at 512 px")
    assert low["agreement"] == pytest.approx(recall_vs_reference(lows, refs), abs=1e-9) and low["area"] == pytest.approx(0.64)
    # Too few frames to calibrate on is refused before anything runs.
    assert main(["demo", "--calibrate-frames", "10", "--out", str(tmp_path / "short"), "--no-progress"]) != 0
    assert "calibrate_frames must be 0 or >= 32" in capsys.readouterr().err


def test_bench_on_video_against_full_frame(assets, yolov5n_weights, tmp_path):
    video = assets / "data/video/pets2009_s2l1_480x360.avi"
    teacher = assets / "data/video/pets2009_s2l1_teacher_dets_768x576.json"
    if not video.is_file() or not teacher.is_file():
        pytest.skip("PETS video or teacher boxes missing")
    out = tmp_path / "v.json"
    args = ["bench", "--video", str(video), "--teacher", str(teacher), "--teacher-scale", "0.625",
            "--weights", str(yolov5n_weights), "--proposer", "full", "--executor", "masked", "--classes", "person",
            "--stride", "100", "--limit", "3", "--warmup", "0", "--no-progress", "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 3
    # Against its own output the full-frame detector is perfect, and so is argos with the full proposer.
    assert r["baseline"]["map50"] == pytest.approx(1.0) and r["argos"]["map50"] == pytest.approx(1.0)
    assert r["agreement"]["recall_vs_baseline@0.5"] == 1.0
    args[args.index("full")] = "oracle"
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["argos"]["area_processed"] < 0.3


def test_bench_proposer_and_train_forward_to_qunet(assets, tmp_path, capsys):
    images = assets / "data/coco128/images/train2017"
    annotations = assets / "data/coco128/annotations/instances_train2017.json"
    out = tmp_path / "p.json"
    assert main(["bench-proposer", "--proposer", "qunet", "--images", str(images), "--annotations", str(annotations),
                 "--range", "120:124", "--warmup", "0", "--no-progress", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert 0.0 < r["area_processed"] <= 1.0 and 0.0 <= r["regions_detected"] <= 1.0
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "qunet", "--help"])
    assert exit_info.value.code == 0 and "argos train qunet" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["list", "--bogus"])


def test_export_forwards_to_qunet(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "q.onnx"
    assert main(["export", "qunet", "--weights", "qunet-street", "--onnx", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_video_demo_without_calibration_runs_the_default_from_frame_0(assets, yolov5n_weights, tmp_path, capsys):
    if not (assets / "data/video/pets2009_s2l1_480x360.avi").is_file():
        pytest.skip("PETS video missing")
    assert main(["demo", "--calibrate-frames", "0", "--limit", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["start"] == 0 and summary["frames"] == 4
    assert "calibration" not in summary and "default" not in summary
    assert "argos (auto: key frames + motion)" in printed and not (tmp_path / "demo_calibration.json").exists()
