"""``argos run ... --ray``: streams on Ray workers write what the single-process runner writes.

Reference: :func:`argos.tools.streams.run_streams` in this process over the same sources. With
the full proposer every frame's detections depend on that frame alone, so the per-stream JSONL
must match line for line, also after a worker is killed (SIGKILL) mid-run and its streams are
restarted. Tests share one local Ray instance (``num_cpus=2``).
"""
from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray")

import argos  # noqa: E402
from argos.cli import main  # noqa: E402
from argos.tools.ray_streams import looks_like_ray_address, run_streams_ray  # noqa: E402
from argos.tools.streams import run_streams  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(assets, tmp_path_factory):
    """Four short street clips (PETS at offset starts, two frame sizes, two lengths)."""
    d = tmp_path_factory.mktemp("ray_clips")
    cap = cv2.VideoCapture(str(assets / "data" / "video" / "pets2009_s2l1_480x360.avi"))
    frames = []
    while len(frames) < 60:
        ok, f = cap.read()
        assert ok
        frames.append(f)
    out = []
    for j, (start, n, size) in enumerate([(0, 9, (320, 240)), (15, 7, (320, 240)), (30, 9, (256, 192)), (45, 5, (320, 240))]):
        path = d / f"cam{j}.mp4"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
        for f in frames[start:start + n]:
            vw.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
        vw.release()
        out.append(path)
    return out


def _build(weights):
    return dict(detector=str(weights), proposer="full", executor="packed_crops", img_size=256)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_lines(got, ref):
    assert [r["frame"] for r in got] == [r["frame"] for r in ref]  # none lost, none twice, in order
    for a, b in zip(got, ref):
        assert a["labels"] == b["labels"] and a["names"] == b["names"]
        np.testing.assert_allclose(np.array(a["boxes"]).reshape(-1, 4), np.array(b["boxes"]).reshape(-1, 4), atol=0.05)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=2e-4)


@pytest.fixture(scope="module")
def reference(clips, yolov5n_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray_ref")
    run_streams(argos.wrap(**_build(yolov5n_weights)), [str(c) for c in clips], out, progress=False)
    lines = {c.stem: _read(out / f"{c.stem}.jsonl") for c in clips}
    assert sum(len(r["boxes"]) for v in lines.values() for r in v) > 20  # real people were found
    return lines


def test_ray_run_writes_the_single_process_jsonl(local_ray, clips, yolov5n_weights, reference, tmp_path):
    s = run_streams_ray(_build(yolov5n_weights), [str(c) for c in clips], tmp_path, workers=2, chunk=2,
                        progress=False)
    assert s["workers"] == 2 and s["restarts"] == 0 and s["frames"] == 30 and not s["errors"]
    for c in clips:
        _same_lines(_read(tmp_path / f"{c.stem}.jsonl"), reference[c.stem])
        assert json.loads((tmp_path / f"{c.stem}.json").read_text())["frames"] == len(reference[c.stem])
    assert json.loads((tmp_path / "summary.json").read_text())["fps_total"] > 0


def test_a_killed_worker_loses_and_repeats_no_frame(local_ray, clips, yolov5n_weights, reference, tmp_path):
    killed = []

    def kill_first_worker(share, actor, chunks):
        if share == 0 and chunks == 1 and not killed:
            pid = ray.get(actor.pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    s = run_streams_ray(_build(yolov5n_weights), [str(c) for c in clips], tmp_path, workers=2, chunk=2,
                        progress=False, on_chunk=kill_first_worker)
    assert killed and s["restarts"] == 1 and s["frames"] == 30 and not s["errors"]
    for c in clips:
        _same_lines(_read(tmp_path / f"{c.stem}.jsonl"), reference[c.stem])


def test_a_share_that_keeps_dying_is_reported_and_the_others_finish(local_ray, clips, yolov5n_weights, tmp_path):
    def kill_share_0(share, actor, chunks):
        if share == 0:
            os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)

    s = run_streams_ray(_build(yolov5n_weights), [str(c) for c in clips], tmp_path, workers=2, chunk=2,
                        progress=False, on_chunk=kill_share_0, max_restarts=1)
    lost = {str(clips[0]), str(clips[2])}  # share 0 holds streams 0 and 2
    assert set(s["errors"]) == lost and all("worker died 2 times" in m for m in s["errors"].values())
    for k in (1, 3):
        assert s["per_stream"][str(clips[k])]["frames"] == [9, 7, 9, 5][k]
    # What did come back before the worker died stays written, each frame once.
    frames = [r["frame"] for r in _read(tmp_path / "cam0.jsonl")]
    assert frames == list(range(len(frames))) and 0 < len(frames) < 9


def test_bad_source_is_reported_per_stream(local_ray, clips, yolov5n_weights, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    s = run_streams_ray(_build(yolov5n_weights), [str(clips[3]), str(bad)], tmp_path / "out", workers=2,
                        progress=False)
    assert str(bad) in s["errors"] and s["per_stream"][str(clips[3])]["frames"] == 5


def test_cli_ray_flag_takes_a_source_after_it(local_ray, clips, yolov5n_weights, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["run", "--ray", str(clips[0]), str(clips[3]), "--weights", str(yolov5n_weights), "--img-size", "256",
               "--proposer", "full", "--executor", "masked", "--out-dir", str(out), "--limit", "3", "--no-progress",
               "--compare"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Ray: 2 workers, 0 restarts" in text and "speedup" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 6 and s["speedup"] > 0
    assert all(json.loads((out / f"{c.stem}.json").read_text())["agreement"] == 1.0 for c in (clips[0], clips[3]))


def test_cli_ray_needs_out_dir_and_no_video(clips, yolov5n_weights, tmp_path, capsys):
    assert main(["run", str(clips[0]), "--ray", "--weights", str(yolov5n_weights)]) == 2
    assert "--out-dir" in capsys.readouterr().err
    assert main(["run", str(clips[0]), "--ray", "--out-dir", str(tmp_path), "--out", "x.mp4",
                 "--weights", str(yolov5n_weights)]) == 2
    assert "writes no videos" in capsys.readouterr().err


@pytest.mark.parametrize("text,address", [("auto", True), ("ray://10.0.0.1:10001", True), ("head:6379", True),
                                          ("local", True), ("cam.mp4", False), ("0", False), ("videos/a.avi", False)])
def test_ray_address_or_source(text, address):
    assert looks_like_ray_address(text) is address
