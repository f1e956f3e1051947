"""argos.calibration: the camera file's round trip, its refusals, and ``wrap(..., calibration=)``."""
from __future__ import annotations

import json

import numpy as np
import pytest

import argos
from argos.calibration import Calibration, load_calibration


def _cal(**kw):
    base = dict(proposer="temporal", executor="packed_crops", proposer_kwargs={"max_interval": 3, "hold_score": 0.3},
                executor_kwargs={"gap": 0}, names={0: "person", 1: "bicycle"}, img_size=320, frame_size=(120, 160),
                weights="yolov5n.pt", report={"frames": 40})
    base.update(kw)
    return Calibration(**base)


def test_round_trip(tmp_path):
    path = _cal().save(tmp_path / "cam.json")
    got = load_calibration(path)
    assert (got.proposer, got.executor) == ("temporal", "packed_crops")
    assert got.proposer_kwargs == {"max_interval": 3, "hold_score": 0.3} and got.executor_kwargs == {"gap": 0}
    assert got.names == {0: "person", 1: "bicycle"} and got.img_size == 320 and got.frame_size == (120, 160)
    assert got.report == {"frames": 40} and got.path == str(path)


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("{not json", "not valid JSON"),
    ('{"format": "something-else", "version": 1}', "not an argos calibration"),
    ('{"format": "argos-calibration", "version": 99}', "version 99"),
    ('{"format": "argos-calibration", "version": 1, "detector": {}}', "incomplete or malformed"),
    ('{"format": "argos-calibration", "version": 1, "config": {"proposer": "temporal"}}', "incomplete or malformed"),
])
def test_bad_files_are_refused_with_their_path(tmp_path, text, match):
    path = tmp_path / "cam.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="argos calibrate"):
        load_calibration(tmp_path / "nope.json")


def test_checks_name_both_sides():
    cal = _cal(path="cam.json")
    with pytest.raises(ValueError, match=r"2 classes \(person, bicycle.*this one has 1 \(car"):
        cal.check_detector({0: "car"}, 320)
    with pytest.raises(ValueError, match="input size 320, not 640.*--img-size 320"):
        cal.check_detector({0: "person", 1: "bicycle"}, 640)
    cal.check_detector({0: "person", 1: "bicycle"}, 320)  # the same detector passes
    with pytest.raises(ValueError, match="made on 160x120 frames; these are 192x96"):
        cal.check_frame((96, 192, 3))
    cal.check_frame((120, 160, 3))


@pytest.fixture(scope="module")
def yolo_cal(yolov5n):
    names = dict(yolov5n.names)
    return _cal(names=names)


def test_wrap_takes_the_calibrations_choice(yolov5n_weights, yolo_cal, tmp_path):
    path = yolo_cal.save(tmp_path / "cam.json")
    w = argos.wrap(str(yolov5n_weights), "auto", "auto", calibration=str(path))
    assert type(w.proposer).__name__ == "TemporalProposer" and type(w.executor).__name__ == "PackedCropsExecutor"
    assert w.proposer.max_interval == 3 and w.proposer.hold_score == 0.3 and w.executor.gap == 0
    assert w.adapter.img_size == 320  # from the file, as none was given
    assert w.for_stream().calibration is w.calibration
    w(np.full((120, 160, 3), 120, np.uint8))  # the calibrated frame size runs
    with pytest.raises(ValueError, match="made on 160x120 frames"):
        w(np.full((96, 192, 3), 120, np.uint8))
    # Options given with the calibration override its own.
    w = argos.wrap(str(yolov5n_weights), calibration=yolo_cal, proposer="auto", executor="auto",
                   proposer_kwargs={"max_interval": 5})
    assert w.proposer.max_interval == 5 and w.proposer.hold_score == 0.3


def test_wrap_refuses_named_parts_or_another_detector_with_a_calibration(yolov5n_weights, yolo_cal):
    with pytest.raises(ValueError, match='chooses the proposer; leave proposer="auto"'):
        argos.wrap(str(yolov5n_weights), "full", "auto", calibration=yolo_cal)
    with pytest.raises(ValueError, match="input size 320, not 640"):
        argos.wrap(str(yolov5n_weights), "auto", "auto", calibration=yolo_cal, img_size=640)
    other = _cal()  # two classes: made for another detector
    with pytest.raises(ValueError, match="calibrate again with this detector"):
        argos.wrap(str(yolov5n_weights), "auto", "auto", calibration=other)


def test_file_is_plain_json(tmp_path):
    data = json.loads(_cal().save(tmp_path / "c.json").read_text())
    assert data["format"] == "argos-calibration" and data["config"]["executor_kwargs"] == {"gap": 0}
    assert data["detector"]["names"] == {"0": "person", "1": "bicycle"} and data["frame_size"] == [120, 160]
