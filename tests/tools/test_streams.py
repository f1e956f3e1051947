"""``argos run SRC1 SRC2 ... --out-dir DIR``: per-stream outputs in run's formats, and the summary."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from argos.cli import main
from argos.tools.streams import stream_paths


def _clip(path, n, size):
    h, w = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for k in range(n):
        f = np.full((h, w, 3), 140, np.uint8)
        cv2.rectangle(f, (10 + 4 * k, 30), (30 + 4 * k, 80), (30, 40, 50), -1)
        vw.write(f)
    vw.release()
    return path


def test_two_sources_write_per_stream_files_and_a_summary(tmp_path, yolov5n_weights, capsys):
    a, b = _clip(tmp_path / "a.mp4", 5, (120, 160)), _clip(tmp_path / "b.mp4", 3, (96, 128))
    out = tmp_path / "out"
    rc = main(["run", str(a), str(b), "--weights", str(yolov5n_weights), "--img-size", "160", "--out-dir", str(out),
               "--compare", "--out", "--no-progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["streams"] == 2 and s["frames"] == 8 and s["ticks"] == 5
    assert s["fps_total"] > 0 and s["baseline_fps_total"] > 0 and s["speedup"] > 0
    for stem, n in (("a", 5), ("b", 3)):
        lines = [json.loads(x) for x in (out / f"{stem}.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in lines] == list(range(n))
        assert set(lines[0]) == {"frame", "boxes", "scores", "labels", "names"}
        per = json.loads((out / f"{stem}.json").read_text())
        assert per["frames"] == n and 0.0 <= per["agreement"] <= 1.0
        cap = cv2.VideoCapture(str(out / f"{stem}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n
    assert "2 streams | 8 frames in 5 ticks" in capsys.readouterr().out


def test_a_bad_source_is_reported_and_the_others_run(tmp_path, yolov5n_weights, capsys):
    a = _clip(tmp_path / "a.mp4", 3, (120, 160))
    out = tmp_path / "out"
    rc = main(["run", str(a), str(tmp_path / "gone.mp4"), "--weights", str(yolov5n_weights), "--img-size", "160",
               "--out-dir", str(out), "--no-progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 3 and "not found" in s["errors"][str(tmp_path / "gone.mp4")]
    assert "gone.mp4: 0 frames; error" in capsys.readouterr().err


def test_same_stem_refused_before_anything_runs(tmp_path, yolov5n_weights, capsys):
    (tmp_path / "x").mkdir()
    a = _clip(tmp_path / "a.mp4", 2, (64, 64))
    b = _clip(tmp_path / "x" / "a.mp4", 2, (64, 64))
    rc = main(["run", str(a), str(b), "--weights", str(yolov5n_weights), "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and "would both write" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("extra, match", [
    ([], "give --out-dir"),
    (["--out-dir", "D", "--json", "s.json"], "are for one source"),
])
def test_several_sources_need_out_dir_and_no_single_outputs(tmp_path, yolov5n_weights, capsys, extra, match):
    a, b = _clip(tmp_path / "a.mp4", 2, (64, 64)), _clip(tmp_path / "b.mp4", 2, (64, 64))
    extra = [str(tmp_path / e) if e in ("D", "s.json") else e for e in extra]
    assert main(["run", str(a), str(b), "--weights", str(yolov5n_weights), *extra]) == 2
    assert match in capsys.readouterr().err


def test_bare_out_needs_a_path_for_one_source(tmp_path, yolov5n_weights, capsys):
    a = _clip(tmp_path / "a.mp4", 2, (64, 64))
    assert main(["run", str(a), "--weights", str(yolov5n_weights), "--out"]) == 2
    assert "--out needs a path" in capsys.readouterr().err


def test_stream_paths_names_cameras_and_refuses_summary(tmp_path):
    paths = stream_paths([0, "x/cam.mp4"], tmp_path)
    assert paths[0]["jsonl"].name == "camera0.jsonl" and paths[1]["json"].name == "cam.json"
    with pytest.raises(ValueError, match="summary.json"):
        stream_paths(["a/summary.mp4"], tmp_path)
