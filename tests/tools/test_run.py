import json

import cv2
import numpy as np
import pytest

from argos.cli import main


@pytest.fixture(scope="module")
def clip(tmp_path_factory, assets):
    """16 PETS frames re-encoded as a small MJPG clip (written by the test)."""
    video = assets / "data/video/pets2009_s2l1_480x360.avi"
    if not video.is_file():
        pytest.skip(f"{video} missing")
    cap = cv2.VideoCapture(str(video))
    path = tmp_path_factory.mktemp("run") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 360))
    for _ in range(16):
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_run_writes_detections_summary_and_video(clip, yolov5n_weights, tmp_path, capsys):
    summary = tmp_path / "s.json"
    out = tmp_path / "annotated.mp4"
    args = ["run", str(clip), "--weights", str(yolov5n_weights), "--proposer", "distill", "--executor", "masked",
            "--compare", "--classes", "person", "--json", str(summary), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 16 and s["fps"] > 0
    assert {"median", "proposer", "detector"} <= set(s["latency_ms"])
    assert 0 < s["teacher_fraction"] <= 1 and 0 < s["area_processed"] <= 1
    assert {"baseline_fps", "speedup", "speedup_median", "agreement", "map50_vs_baseline"} <= set(s)
    # Throughput: key frames (slow) count through the mean, not the median.
    lat = s["latency_ms"]
    assert s["fps"] == pytest.approx(1e3 / lat["mean"])
    assert s["speedup"] == pytest.approx(lat["baseline_mean"] / lat["mean"])
    assert s["speedup_median"] == pytest.approx(lat["baseline"] / lat["median"])
    assert 0.5 <= s["agreement"] <= 1.0
    assert 0 < s["memory_mb"]["rss_first_frame"] <= s["memory_mb"]["rss_end"] * 2
    records = _lines(summary.with_suffix(".jsonl"))
    assert [r["frame"] for r in records] == list(range(16))
    assert any("person" in r["names"] for r in records)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    assert "speedup" in capsys.readouterr().out


def test_run_from_a_later_frame(clip, yolov5n_weights, tmp_path, capsys):
    """--start 10 --limit 4: frames 10-13, numbered as in the video; refused with several sources."""
    summary = tmp_path / "s.json"
    assert main(["run", str(clip), "--weights", str(yolov5n_weights), "--start", "10", "--limit", "4",
                 "--json", str(summary), "--no-progress"]) == 0
    assert json.loads(summary.read_text())["start"] == 10
    assert [r["frame"] for r in _lines(summary.with_suffix(".jsonl"))] == [10, 11, 12, 13]
    assert main(["run", str(clip), str(clip), "--weights", str(yolov5n_weights), "--start", "3",
                 "--out-dir", str(tmp_path / "many"), "--no-progress"]) != 0
    assert "--start is for one source" in capsys.readouterr().err


def test_run_on_truncated_video_keeps_decoded_frames(clip, yolov5n_weights, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    summary = tmp_path / "s.json"
    assert main(["run", str(cut), "--weights", str(yolov5n_weights), "--proposer", "motion",
                 "--json", str(summary), "--no-progress"]) == 0
    s = json.loads(summary.read_text())
    assert 0 < s["frames"] < 16
    assert len(_lines(summary.with_suffix(".jsonl"))) == s["frames"]
    if "decode_error" in s:
        assert f"frame {s['frames']}" in s["decode_error"]


def test_run_on_image_folder(tmp_path, yolov5n_weights, coco128):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.jpg"), cv2.cvtColor(coco128[i].image, cv2.COLOR_RGB2BGR))
    det = tmp_path / "d.jsonl"
    assert main(["run", str(tmp_path), "--weights", str(yolov5n_weights), "--proposer", "full",
                 "--detections", str(det), "--no-progress"]) == 0
    assert len(_lines(det)) == 3


def test_run_bad_source(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.mp4"), "--cfg", "yolov5nu.yaml", "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_compare_with_nothing_to_reproduce_says_so(tmp_path, yolov5n_weights, capsys):
    """A blank clip: the unwrapped detector finds nothing, so agreement is 1 by definition and
    mAP is undefined; the summary says None (not 0.0) and the CLI says n/a."""
    import cv2
    import numpy as np

    path = tmp_path / "blank.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for _ in range(4):
        vw.write(np.full((120, 160, 3), 128, np.uint8))
    vw.release()
    summary = tmp_path / "s.json"
    assert main(["run", str(path), "--weights", str(yolov5n_weights), "--img-size", "160", "--compare",
                 "--json", str(summary), "--no-progress"]) == 0
    s = json.loads(summary.read_text())
    assert s["reference_detections"] == 0 and s["agreement"] == 1.0 and s["map50_vs_baseline"] is None
    assert "agreement n/a" in capsys.readouterr().out
