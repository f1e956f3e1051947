"""argos calibrate: the choice rule, a real calibration on a short clip, and its use by run and pareto.

References: the choice is recomputed by hand from the points the calibration measured; the
calibrated run's configuration is read back from the wrapped parts and the run summary.
"""
from __future__ import annotations

import json

import cv2
import pytest

from argos.calibration import load_calibration
from argos.cli import main
from argos.tools.calibrate import MIN_FRAMES, choose


def _p(config, agreement, speedup):
    return {"method": "argos", "params": {"config": config}, "agreement": agreement, "speedup": speedup}


def test_choose_fastest_that_reaches_the_target_else_most_faithful():
    pts = [{"method": "skip", "params": {"every": 2}, "agreement": 0.99, "speedup": 2.0},
           _p("a", 0.98, 1.2), _p("b", 0.975, 1.5), _p("c", 0.90, 2.5)]
    assert choose(pts, 0.97)["params"]["config"] == "b"  # skipping is never the choice: it is reported
    assert choose(pts, 0.99)["params"]["config"] == "a"  # none reaches it: the most faithful
    assert choose([_p("x", 0.9, 1.1), _p("y", 0.9, 1.3)], 0.99)["params"]["config"] == "y"  # tie: the faster
    with pytest.raises(ValueError, match="no argos configuration"):
        choose(pts[:1], 0.97)


@pytest.fixture(scope="module")
def clips(assets, tmp_path_factory):
    """The first 36 PETS frames (calibration) and the next 12 (a later video), at 240x320; a short one; a resized one."""
    d = tmp_path_factory.mktemp("cal_clips")
    cap = cv2.VideoCapture(str(assets / "data" / "video" / "pets2009_s2l1_480x360.avi"))
    frames = [cap.read()[1] for _ in range(48)]

    def write(name, fr, size=(320, 240)):
        vw = cv2.VideoWriter(str(d / name), cv2.VideoWriter_fourcc(*"MJPG"), 7, size)
        for f in fr:
            vw.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
        vw.release()
        return d / name

    return {"early": write("early.avi", frames[:36]), "later": write("later.avi", frames[36:]),
            "short": write("short.avi", frames[:10]), "resized": write("resized.avi", frames[36:], (256, 192))}


GRID = ["auto+auto", "temporal+packed_crops:p.max_interval=2,p.hold_score=0.3", "temporal+packed_crops"]
#: what the file must hold for "auto+auto" at conf 0.25 (argos.wrap.AUTO_OPTIONS, written out by hand)
AUTO_KW = {"max_interval": 2, "hold_score": 0.25, "track_score": 0.25, "velocity": True, "newcomers": False}


@pytest.fixture(scope="module")
def calibrated(clips, yolov5n_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "cam.json"
    rc = main(["calibrate", str(clips["early"]), "--weights", str(yolov5n_weights), "--img-size", "256",
               "--grid", *GRID, "--out", str(out), "--no-progress", "--target", "0.9"])
    assert rc == 0
    return out


def test_calibration_file_holds_the_choice_recomputed_from_its_points(calibrated):
    cal = load_calibration(calibrated)
    rep = cal.report
    assert rep["frames"] == 36 - 2 and rep["seconds"] > 0 and cal.frame_size == (240, 320) and cal.img_size == 256
    assert cal.names[0] == "person" and len(cal.names) == 80
    argos_pts = [p for p in rep["points"] if p["method"] == "argos"]
    assert [p["params"]["config"].split(" (")[0] for p in argos_pts] == ["auto+auto"] + ["temporal+packed_crops"] * 2
    good = [p for p in argos_pts if p["agreement"] >= 0.9]
    by_hand = max(good, key=lambda p: p["speedup"]) if good else max(argos_pts, key=lambda p: p["agreement"])
    if by_hand["speedup"] >= 1.0:
        assert rep["argos_pays"] and rep["chosen"] == by_hand
        kw = {k[2:]: v for k, v in by_hand["params"].items() if k.startswith("p.")}
        if by_hand["params"]["config"] == "auto+auto":  # the file names what auto meant, not "auto"
            kw = AUTO_KW
        assert (cal.proposer, cal.executor, cal.proposer_kwargs) == ("temporal", "packed_crops", kw)
    else:  # slower than the detector alone: the unwrapped detector's own output is kept
        assert not rep["argos_pays"] and (cal.proposer, cal.executor) == ("full", "masked")
    skips = {p["params"]["every"] for p in rep["points"] if p["method"] == "skip"}
    assert skips == {2, 3, 4}
    assert calibrated.with_suffix(".md").read_text().startswith("# argos calibrate early.avi")


def test_run_with_the_calibration_uses_its_configuration(calibrated, clips, yolov5n_weights, tmp_path, capsys):
    cal = load_calibration(calibrated)
    summary = tmp_path / "later.json"
    rc = main(["run", str(clips["later"]), "--weights", str(yolov5n_weights), "--calibration", str(calibrated),
               "--json", str(summary), "--compare", "--no-progress"])
    assert rc == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 12 and 0.0 <= s["agreement"] <= 1.0
    expected = {"temporal": "TemporalProposer", "full": "FullProposer"}[cal.proposer]
    assert expected in json.dumps(s["config"])


def test_pareto_adds_the_calibrated_point(calibrated, clips, yolov5n_weights, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(["pareto", str(clips["later"]), "--weights", str(yolov5n_weights), "--img-size", "256", "--sizes",
               "--argos", "--calibration", str(calibrated), "--json", str(out), "--no-progress"])
    assert rc == 0
    labels = [p["params"].get("config", "") for p in json.loads(out.read_text())["points"] if p["method"] == "argos"]
    assert len(labels) == 1 and labels[0].startswith("calibrated: ")


def test_calibration_refuses_other_frames_and_sizes(calibrated, clips, yolov5n_weights, tmp_path, capsys):
    assert main(["run", str(clips["resized"]), "--weights", str(yolov5n_weights), "--calibration", str(calibrated),
                 "--json", str(tmp_path / "r.json"), "--no-progress"]) == 2
    assert "made on 320x240 frames; these are 256x192" in capsys.readouterr().err
    assert main(["run", str(clips["later"]), "--weights", str(yolov5n_weights), "--calibration", str(calibrated),
                 "--img-size", "320", "--no-progress"]) == 2
    assert "input size 256, not 320" in capsys.readouterr().err
    assert main(["pareto", str(clips["resized"]), "--weights", str(yolov5n_weights), "--img-size", "256",
                 "--calibration", str(calibrated), "--no-progress"]) == 2
    assert "made on 320x240 frames" in capsys.readouterr().err


def test_too_short_a_video_is_refused_before_anything_is_written(clips, yolov5n_weights, tmp_path, capsys):
    out = tmp_path / "cam.json"
    assert main(["calibrate", str(clips["short"]), "--weights", str(yolov5n_weights), "--img-size", "256",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"needs at least {MIN_FRAMES + 2}" in err and "has 10 frames" in err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_existing_calibration_is_kept_when_the_new_one_fails(clips, yolov5n_weights, tmp_path, capsys):
    out = tmp_path / "cam.json"
    out.write_text("keep me")
    assert main(["calibrate", str(clips["short"]), "--weights", str(yolov5n_weights), "--out", str(out),
                 "--no-progress"]) == 2
    assert out.read_text() == "keep me"
