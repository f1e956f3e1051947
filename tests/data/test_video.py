import json

import cv2
import numpy as np
import pytest
import torch

from argos.data.video import VideoReader, load_frame_boxes


def _write_video(path, n=20, size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR: must come out as red in RGB
        cv2.rectangle(frame, (i * 3, 10), (i * 3 + 10, 30), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()


def test_reads_file_with_stride_and_limit(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    r = VideoReader(path)
    assert r.frame_count == 20 and len(r) == 20
    frames = list(r)
    assert [i for i, _ in frames] == list(range(20))
    assert frames[0][1].shape == (64, 96, 3) and frames[0][1][40, 80, 0] > 150  # RGB order
    assert [i for i, _ in VideoReader(path, stride=7)] == [0, 7, 14]
    assert [i for i, _ in VideoReader(path, stride=4, start=5)] == [5, 9, 13, 17] and len(VideoReader(path, stride=4, start=5)) == 4
    assert len(list(VideoReader(path, stride=2, limit=3))) == 3 and len(VideoReader(path, stride=2, limit=3)) == 3
    assert not r.stopped_early and r.error is None


def test_truncated_file_keeps_what_decoded(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, n=30)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    r = VideoReader(cut)
    frames = list(r)
    assert 0 < len(frames) < 30
    if r.frame_count and r.frame_count > len(frames):
        assert r.stopped_early and f"frame {len(frames)}" in r.error


def test_image_folder(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), np.full((8, 8, 3), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    got = list(VideoReader(tmp_path))
    assert [i for i, _ in got] == [0, 1, 2] and got[2][1][0, 0, 0] == 100


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        VideoReader(tmp_path / "missing.avi")
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        VideoReader(tmp_path / "empty.avi")
    (tmp_path / "junk.avi").write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match="cannot open"):
        list(VideoReader(tmp_path / "junk.avi"))
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        VideoReader(tmp_path / "d")
    with pytest.raises(ValueError, match="stride"):
        VideoReader(tmp_path / "junk.avi", stride=0)


def test_load_frame_boxes_formats(tmp_path):
    lst = tmp_path / "l.json"
    lst.write_text(json.dumps([[[0, 0, 10, 10, 0.9], [5, 5, 8, 8, 0.1]], []]))
    out = load_frame_boxes(lst, scale=0.5, min_score=0.5)
    assert len(out) == 2 and out[0].tolist() == [[0, 0, 5, 5, pytest.approx(0.9)]] and out[1].shape == (0, 5)
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"idxs": [1, 0], "bboxes": [[[2, 2, 4, 4]], [[1, 1, 3, 3]]], "scores": [[0.8], [0.7]]}))
    out = load_frame_boxes(d)
    assert out[0][0, :4].tolist() == [1, 1, 3, 3] and out[1][0, :4].tolist() == [2, 2, 4, 4]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_frame_boxes(bad)
    bad.write_text(json.dumps({"boxes": []}))
    with pytest.raises(ValueError, match="bboxes"):
        load_frame_boxes(bad)


def test_pets_teacher_file(assets):
    path = assets / "data/video/pets2009_s2l1_teacher_dets_768x576.json"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    boxes = load_frame_boxes(path, scale=0.625, min_score=0.5)
    assert len(boxes) == 795
    allb = torch.cat(boxes)
    assert float(allb[:, 2].max()) <= 480.5 and float(allb[:, 3].max()) <= 360.5
