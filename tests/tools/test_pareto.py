"""argos pareto: argos beside frame skipping, lower input sizes and a smaller model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from argos.structures import Detections
from argos.tools.pareto import (
    default_sizes,
    parse_argos_config,
    pareto_table,
    run_pareto,
    skip_point,
    write_outputs,
)


def _dets(box, score=0.9, label=0, size=(100, 100)):
    return Detections(torch.tensor([box], dtype=torch.float32), torch.tensor([score]), torch.tensor([label]), size)


def _recall_by_hand(cands, refs, iou=0.5, min_score=0.25):
    """Independent agreement: greedy one-to-one matching, references by descending score."""
    def area(b):
        return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])

    matched = total = 0
    for c, r in zip(cands, refs):
        cb = [(b.tolist(), int(l)) for b, s, l in zip(c.boxes, c.scores, c.labels) if s >= min_score]
        rb = sorted([(float(s), b.tolist(), int(l)) for b, s, l in zip(r.boxes, r.scores, r.labels) if s >= min_score],
                    key=lambda t: -t[0])
        total += len(rb)
        used = set()
        for _, b, l in rb:
            best, best_j = -1.0, None
            for j, (q, lq) in enumerate(cb):
                if j in used or lq != l:
                    continue
                ix = max(0.0, min(b[2], q[2]) - max(b[0], q[0])) * max(0.0, min(b[3], q[3]) - max(b[1], q[1]))
                v = ix / (area(b) + area(q) - ix) if ix > 0 else 0.0
                if v > best:
                    best, best_j = v, j
            if best_j is not None and best >= iou:
                used.add(best_j)
                matched += 1
    return 1.0 if total == 0 else matched / total


def test_skip_point_holds_the_last_key_frame():
    refs = [_dets([i, i, i + 10, i + 10]) for i in range(7)]
    held = skip_point(refs, 3)
    assert [int(d.boxes[0, 0]) for d in held] == [0, 0, 0, 3, 3, 3, 6]
    assert skip_point(refs, 1) == refs
    with pytest.raises(ValueError, match=">= 1"):
        skip_point(refs, 0)


def test_parse_argos_config():
    c = parse_argos_config("temporal+packed_crops:p.max_interval=4,e.margin=0,p.hold_score=0.7")
    assert (c.proposer, c.executor) == ("temporal", "packed_crops")
    assert c.proposer_kwargs == {"max_interval": 4, "hold_score": 0.7}
    assert c.executor_kwargs == {"margin": 0}
    assert parse_argos_config("full+masked").proposer_kwargs == {}
    for bad, msg in (("temporal", "PROPOSER\\+EXECUTOR"), ("a+b:margin=2", "prefix"), ("a+b:p.margin", "key=value")):
        with pytest.raises(ValueError, match=msg):
            parse_argos_config(bad)


def test_default_sizes():
    assert default_sizes(640) == [512, 416, 320]
    assert default_sizes(1280) == [960, 640]
    assert all(s % 32 == 0 and s < 800 for s in default_sizes(800))


@pytest.fixture(scope="module")
def pets(assets):
    video = assets / "data/video/pets2009_s2l1_480x360.avi"
    if not video.is_file():
        pytest.skip(f"PETS video not found at {video}")
    return video


def _frames(video, n):
    from argos.data.video import VideoReader

    return lambda: VideoReader(video, limit=n, stride=15)  # 15 frames apart: people move between them


def test_run_pareto_on_pets(pets, yolov5n_weights):
    from argos.adapters.yolov5 import YOLOv5Adapter

    def adapter(size):
        return YOLOv5Adapter(weights=str(yolov5n_weights), img_size=size, conf=0.25)

    baseline = adapter(320)
    result = run_pareto(_frames(pets, 6), baseline, [parse_argos_config("full+masked")], sizes=[256],
                        skips=[2], build_lower=adapter, warmup=1, progress=False)
    assert result["frames"] == 5
    points = {p["method"]: p for p in result["points"]}
    assert set(points) == {"baseline", "skip", "argos", "resolution"}
    # The full proposer runs the whole frame through the same weights: it must agree exactly.
    assert points["argos"]["agreement"] == 1.0 and points["argos"]["area"] == 1.0
    assert points["argos"]["map50_vs_baseline"] == pytest.approx(1.0)
    # Skip: frames 0, 2, 4 of the 5 counted run; the rest hold boxes. Check against a hand count.
    from argos.data.video import VideoReader

    refs = [baseline.predict([f])[0] for _, f in list(_frames(pets, 6)())[1:]]
    assert points["skip"]["agreement"] == pytest.approx(_recall_by_hand(skip_point(refs, 2), refs))
    assert points["skip"]["agreement"] < 1.0  # PETS people move: held boxes lose some
    assert points["skip"]["area"] == pytest.approx(3 / 5) and points["skip"]["speedup"] > 1.0
    assert points["resolution"]["params"] == {"img_size": 256}
    assert points["resolution"]["area"] == pytest.approx((256 / 320) ** 2)
    assert 0.0 < points["resolution"]["agreement"] <= 1.0

    table = pareto_table(result)
    assert "| argos | full+masked | 1.000 ✓" in table and "Fastest at agreement >= 0.97: argos" in table


def test_run_pareto_refuses_bad_setups(yolov5n_weights):
    from argos.adapters.yolov5 import YOLOv5Adapter

    big = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=64)
    other = YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64)  # 80 classes named "0".."79", not COCO's
    frames = lambda: iter([(0, np.zeros((48, 64, 3), np.uint8))])  # noqa: E731
    with pytest.raises(ValueError, match="classes differ"):
        run_pareto(frames, big, small=other, progress=False)
    with pytest.raises(ValueError, match="build_lower"):
        run_pareto(frames, big, sizes=[32], progress=False)
    with pytest.raises(ValueError, match="no frames after the 2 warm-up"):
        run_pareto(frames, big, skips=[2], warmup=2, progress=False)


def test_write_outputs(tmp_path):
    result = {"frames": 4, "warmup": 1, "baseline_ms_median": 10.0, "points": [
        {"method": "baseline", "params": {"img_size": 640}, "agreement": 1.0, "map50_vs_baseline": 1.0,
         "fps": 100.0, "speedup": 1.0, "area": 1.0, "proposer_ms": 0.0},
        {"method": "skip", "params": {"every": 2}, "agreement": 0.95, "map50_vs_baseline": 0.9,
         "fps": 200.0, "speedup": 2.0, "area": 0.5, "proposer_ms": 0.0}]}
    table = write_outputs(result, str(tmp_path / "sub/p.json"), str(tmp_path / "p.png"), "title")
    assert json.loads((tmp_path / "sub/p.json").read_text()) == result
    assert (tmp_path / "sub/p.md").read_text().startswith("# title")
    assert "No method other than the baseline reaches agreement >= 0.97" in table
    import cv2

    png = cv2.imread(str(tmp_path / "p.png"))
    assert png is not None and png.shape[1] > 400


def test_cli_pareto(pets, yolov5n_weights, tmp_path, capsys):
    from argos.cli import main

    out = tmp_path / "p.json"
    args = ["pareto", str(pets), "--weights", str(yolov5n_weights), "--img-size", "256", "--limit", "4",
            "--warmup", "1", "--argos", "full+masked", "temporal+packed_crops", "--sizes", "192", "--skips", "2",
            "--threads", "1", "--json", str(out), "--plot", str(tmp_path / "p.png"), "--no-progress"]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 3 and r["img_size"] == 256
    labels = [p["params"].get("config") for p in r["points"] if p["method"] == "argos"]
    assert labels == ["full+masked", "temporal+packed_crops"]
    assert "wrote" in capsys.readouterr().out
    assert main(["pareto", str(tmp_path / "missing.mp4"), "--weights", str(yolov5n_weights)]) != 0
    assert "video not found" in capsys.readouterr().err
    assert main(["pareto", str(pets), "--weights", str(yolov5n_weights), "--argos", "temporal"]) != 0
    assert "PROPOSER+EXECUTOR" in capsys.readouterr().err
