import numpy as np
import pytest
import torch

import argos
from argos.proposers.temporal import TemporalProposer
from argos.structures import Detections


def _frame(seed=0, size=(120, 160)):
    rng = np.random.default_rng(seed)
    return rng.integers(60, 90, (*size, 3), dtype=np.uint8)


def _dets(boxes, scores, size=(120, 160)):
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.zeros(len(scores), dtype=torch.int64), size)


def test_options_are_checked():
    with pytest.raises(ValueError):
        TemporalProposer(hold_score=0.2, track_score=0.5)
    with pytest.raises(ValueError):
        TemporalProposer(max_interval=0)
    with pytest.raises(ValueError):
        TemporalProposer(max_area=0)
    with pytest.raises(ValueError):
        TemporalProposer(margin=-1)
    assert "temporal" in argos.list_proposers()


def test_needs_its_detector_and_one_frame_per_call():
    p = TemporalProposer()
    with pytest.raises(RuntimeError, match="needs the detector"):
        p.propose([_frame()])
    with pytest.raises(ValueError, match="one frame per call"):
        p.propose([_frame(), _frame()])


def test_holds_sure_detections_and_proposes_unsure_ones():
    """Between key frames: scores >= hold_score are carried, [track_score, hold_score) are looked at again."""
    p = TemporalProposer(hold_score=0.5, track_score=0.1, margin=4, max_interval=8)
    frame = _frame()
    p.motion(frame)  # seed the motion gate's background, as a first frame would
    p.since_key = 0
    p.previous = _dets([[10, 10, 30, 40], [100, 60, 120, 90], [60, 10, 70, 20], [0, 0, 5, 5]], [0.9, 0.3, 0.05, 0.6])
    (props,) = p.propose([frame])
    assert props.detections is None and p.last_reason is None
    # Only the 0.3 detection is proposed, grown by the margin; the 0.05 one is below track_score.
    assert props.boxes.tolist() == [[96.0, 56.0, 124.0, 94.0]]
    assert props.mask[56:94, 96:124].all() and props.mask.sum() == 28 * 38
    # Both sure detections are held unchanged; none lies in the proposed region.
    assert sorted(props.held.scores.tolist()) == pytest.approx([0.6, 0.9])
    assert props.held.boxes.tolist()[0] in ([10, 10, 30, 40], [0, 0, 5, 5])


def test_a_held_detection_inside_a_proposed_region_gives_way():
    p = TemporalProposer(hold_score=0.5, track_score=0.1, margin=10)
    frame = _frame()
    p.motion(frame)
    p.since_key = 0
    # The sure box's centre (45, 45) is inside the unsure box grown by 10 px.
    p.previous = _dets([[40, 40, 50, 50], [30, 30, 60, 60]], [0.9, 0.2])
    (props,) = p.propose([frame])
    assert len(props.held) == 0
    assert props.mask[45, 45]


def test_key_frames_by_interval_and_scene_change(yolov5n):
    fast = argos.wrap(yolov5n, proposer=TemporalProposer(max_interval=3), executor="packed_crops")
    frame = _frame(1, (96, 128))
    reasons = []
    for _ in range(7):
        fast(frame)
        reasons.append(fast.proposer.last_reason)
    assert reasons == ["start", None, None, "interval", None, None, "interval"]
    fast(255 - frame)  # everything changes: a cut
    assert fast.proposer.last_reason == "scene"
    assert fast.proposer.key_frames == 4 and fast.proposer.frames == 8


def _pets(assets, n):
    from argos.data.video import VideoReader

    path = assets / "data/video/pets2009_s2l1_480x360.avi"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return [f for _, f in VideoReader(path, limit=n)]


def test_every_frame_a_key_frame_equals_the_unwrapped_detector(assets, yolov5n_weights):
    """max_interval=1: the detector runs whole on every frame, so the output is the unwrapped model's."""
    from argos.adapters.yolov5 import YOLOv5Adapter

    adapter = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=320, conf=0.25)
    fast = argos.wrap(adapter, proposer=TemporalProposer(max_interval=1), executor="packed_crops")
    for frame in _pets(assets, 3):
        got = fast(frame)
        (ref,) = adapter.predict([frame])
        assert torch.equal(got.boxes, ref.boxes) and torch.equal(got.scores, ref.scores)
        assert torch.equal(got.labels, ref.labels)
        assert fast.last_stats.key_frames == 1


def test_runs_the_detector_below_its_threshold_and_returns_only_above(assets, yolov5n_weights):
    from argos.adapters.yolov5 import YOLOv5Adapter

    adapter = YOLOv5Adapter(weights=str(yolov5n_weights), img_size=320, conf=0.25)
    seen = []
    prop = TemporalProposer(hold_score=0.3, track_score=0.05, margin=4, max_interval=4)
    observe = prop.observe
    prop.observe = lambda dets: (seen.append(dets[-1]), observe(dets))
    fast = argos.wrap(adapter, proposer=prop, executor="packed_crops")
    frames = _pets(assets, 4)
    outs, held = [], []
    for f in frames:
        outs.append(fast(f))
        h = fast.last_proposals[0].held
        held.append(-1 if h is None else len(h))
    assert adapter.conf == 0.25, "the adapter's own threshold must be restored"
    # The proposer saw low-score detections; the caller gets only those at the adapter's conf.
    assert float(seen[0].scores.min()) < 0.25 <= float(outs[0].scores.min())
    (ref,) = adapter.predict([frames[0]])
    assert torch.allclose(outs[0].boxes, ref.boxes) and torch.allclose(outs[0].scores, ref.scores)
    for d in outs[1:]:
        assert len(d) == 0 or float(d.scores.min()) >= 0.25
    # Between key frames only part of the frame runs, and held detections come back with the executor's.
    assert fast.last_stats.key_frames == 0 and 0.0 < fast.last_stats.area_processed < 1.0
    assert held[0] == -1 and max(held[1:]) > 0


def _scripted(p, truth):
    """Drive ``p`` over len(truth) frames; key frames 'detect' truth[t]; returns each frame's output boxes."""
    frame = _frame()
    t = {"now": 0}
    p.bind(object())
    p.detect_whole = lambda image: (_dets([truth[t["now"]]], [0.9]), 1.0, 0.0)
    out = []
    for now in range(len(truth)):
        t["now"] = now
        (props,) = p.propose([frame])
        d = props.detections if props.detections is not None else props.held
        p.observe([d])
        out.append(d.boxes.tolist())
    return out


def test_velocity_moves_held_detections_to_where_they_are():
    """An object moving 6 px a frame, key frames every other frame: with velocity the held box on
    the frames between is where the object is (computed by hand); without, it stays behind."""
    truth = [[10.0 + 6 * t, 30.0, 50.0 + 6 * t, 70.0] for t in range(6)]
    opts = dict(hold_score=0.25, track_score=0.25, max_interval=2, newcomers=False)
    moved = _scripted(TemporalProposer(velocity=True, **opts), truth)
    still = _scripted(TemporalProposer(velocity=False, **opts), truth)
    assert moved[0] == [truth[0]] and moved[2] == [truth[2]] and moved[4] == [truth[4]]  # key frames
    assert moved[1] == [truth[0]]  # no velocity measured yet after one observation
    assert moved[3] == [truth[3]] and moved[5] == [truth[5]]  # (22 - 10) / 2 frames = 6 px a frame
    assert still[3] == [truth[2]] and still[5] == [truth[4]]  # frame skipping's stale boxes


def test_velocity_is_not_taken_from_a_far_box():
    p = TemporalProposer(velocity=True, hold_score=0.25, track_score=0.25, max_interval=2, newcomers=False)
    truth = [[10.0, 30.0, 50.0, 70.0], None, [100.0, 30.0, 140.0, 70.0], None]
    frame = _frame()
    p.bind(object())
    step = {"now": 0}
    p.detect_whole = lambda image: (_dets([truth[step["now"]]], [0.9]), 1.0, 0.0)
    for now in range(4):
        step["now"] = now
        (props,) = p.propose([frame])
        d = props.detections if props.detections is not None else props.held
        p.observe([d])
        if now == 3:  # the far box was not matched: no velocity, held where it was seen
            assert d.boxes.tolist() == [truth[2]]
            assert p.motion_xy.abs().sum() == 0
    with pytest.raises(ValueError, match="velocity_iou"):
        TemporalProposer(velocity_iou=0)


def test_without_newcomers_a_scene_change_still_makes_a_key_frame():
    p = TemporalProposer(velocity=True, hold_score=0.25, track_score=0.25, max_interval=8, newcomers=False)
    p.bind(object())
    p.detect_whole = lambda image: (_dets([[10.0, 30.0, 50.0, 70.0]], [0.9]), 1.0, 0.0)
    reasons = []
    for frame in (_frame(0), _frame(0), np.full((120, 160, 3), 250, np.uint8), np.full((120, 160, 3), 250, np.uint8)):
        (props,) = p.propose([frame])
        p.observe([props.detections if props.detections is not None else props.held])
        reasons.append(p.last_reason)
        if props.detections is None:
            assert not props.mask.any()  # nothing is proposed between key frames: no detector runs
    assert reasons == ["start", None, "scene", None]


def _moving_patch(xs, y=50, size=(160, 240), side=40, seed=3):
    """Frames of a smooth textured square at x = xs[t] on a flat background, and its boxes."""
    import cv2

    rng = np.random.default_rng(seed)
    patch = cv2.GaussianBlur(rng.integers(0, 255, (side, side), dtype=np.uint8), (0, 0), 1.5)
    frames, boxes = [], []
    for x in xs:
        grey = np.full(size, 120, np.uint8)
        grey[y:y + side, x:x + side] = patch
        frames.append(np.repeat(grey[:, :, None], 3, axis=2))
        boxes.append([float(x), float(y), float(x + side), float(y + side)])
    return frames, boxes


def _run_frames(p, frames, key_boxes):
    """Drive ``p`` over ``frames``; a key frame 'detects' key_boxes[t]; returns each frame's output boxes."""
    t = {"now": 0}
    p.bind(object())
    p.detect_whole = lambda image: (_dets([key_boxes[t["now"]]], [0.9], image.shape[:2]), 1.0, 0.0)
    out = []
    for now, frame in enumerate(frames):
        t["now"] = now
        (props,) = p.propose([frame])
        d = props.detections if props.detections is not None else props.held
        p.observe([d])
        out.append(d.boxes.tolist()[0])
    return out


def test_flow_follows_an_object_whose_speed_changes():
    """Shifts of 4, 9, 2 and 11 px between frames, one key frame: the held box goes where the
    patch went (its true box), which a constant velocity cannot do."""
    xs = [20, 24, 33, 35, 46]
    frames, truth = _moving_patch(xs)
    opts = dict(hold_score=0.25, track_score=0.25, max_interval=10, newcomers=False)
    got = _run_frames(TemporalProposer(flow=True, **opts), frames, truth)
    for t in range(1, len(xs)):
        assert got[t] == pytest.approx(truth[t], abs=0.5)
    still = _run_frames(TemporalProposer(**opts), frames, truth)
    assert still[-1] == truth[0]  # without flow or velocity the box never moves


def test_flow_measures_in_frame_pixels_on_a_scaled_down_frame():
    """flow_width below the frame's width: the shift is measured small and returned at frame scale."""
    xs = [40, 48, 56]
    frames, truth = _moving_patch(xs, size=(200, 400), side=60)
    p = TemporalProposer(flow=True, flow_width=200, hold_score=0.25, track_score=0.25, max_interval=10,
                         newcomers=False)
    got = _run_frames(p, frames, truth)
    assert p.flow_tracked == 1
    assert got[1] == pytest.approx(truth[1], abs=1.0) and got[2] == pytest.approx(truth[2], abs=1.0)


def test_flow_falls_back_to_velocity_where_nothing_can_be_tracked():
    """A box over flat grey has no texture: no point tracks, so the box moves by its velocity."""
    flat = [np.full((160, 240, 3), 120, np.uint8)] * 4
    truth = [[20.0, 50.0, 60.0, 90.0], None, [32.0, 50.0, 72.0, 90.0], None]
    p = TemporalProposer(flow=True, velocity=True, hold_score=0.25, track_score=0.25, max_interval=2,
                         newcomers=False)
    got = _run_frames(p, flat, truth)
    assert p.flow_tracked == 0
    assert got[3] == [38.0, 50.0, 78.0, 90.0]  # (32 - 20) / 2 frames = 6 px a frame, by velocity
    with pytest.raises(ValueError, match="flow_points"):
        TemporalProposer(flow_points=1)
