import numpy as np
import pytest
import torch

import argos
from argos.proposers.distill import DistillProposer, KeyFramePolicy, MotionGate, TinyStudent, _mask_loss


def _scene(t, size=(120, 160)):
    """Static textured background with a bright square moving right by 4 px per frame."""
    rng = np.random.default_rng(0)
    frame = rng.integers(60, 90, (*size, 3), dtype=np.uint8)
    x = 10 + 4 * t
    frame[40:70, x : x + 20] = (240, 230, 220)
    return frame, (x, 40, x + 20, 70)


def test_motion_gate_follows_a_moving_square():
    gate = MotionGate(scale=1.0, blur=3, dilate=1)
    assert not gate(_scene(0)[0]).any()  # the first frame only seeds the background
    for t in range(1, 6):
        frame, (x1, y1, x2, y2) = _scene(t)
        m = gate(frame)
        # The blur softens the outermost pixels, so check inside the newly covered strip.
        assert m[y1 + 2 : y2 - 2, x2 - 3 : x2 - 1].all(), "the leading edge has moved: it must be flagged"
        assert not m[:, :5].any() and not m[100:, :].any(), "static background must stay quiet"
    with pytest.raises(ValueError):
        MotionGate(blur=4)


def test_student_loss_falls_on_a_repeated_scene():
    torch.manual_seed(0)
    net = TinyStudent()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    frame, (x1, y1, x2, y2) = _scene(3)
    x = torch.from_numpy(frame).permute(2, 0, 1).float().div(255)[None]
    target = torch.zeros(1, 1, 30, 40)
    target[..., y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = 1
    losses = []
    for _ in range(60):
        loss = _mask_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert net(x).shape == (1, 1, 30, 40)


def test_mask_loss_by_hand():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1
    perfect = torch.where(target > 0, 20.0, -20.0)
    wrong = -perfect
    assert float(_mask_loss(perfect, target)) < 1e-3
    assert float(_mask_loss(wrong, target)) > 10


def test_policy_limits():
    p = KeyFramePolicy(min_interval=2, max_interval=8, start_interval=4, motion_interval=2)
    assert p.due()  # first frame
    p.tick(True)
    for _ in range(3):
        assert not p.due()
        p.tick(False)
    assert p.due()
    for _ in range(10):
        p.update(recall=1.0, loss=0.1)
    assert p.interval == 8  # capped at max_interval
    p.update(recall=0.1, loss=0.1)
    assert p.interval == 2  # a poor student calls the teacher at the minimum gap
    p.update(recall=1.0, loss=0.1)
    p.update(recall=1.0, loss=5.0)  # loss jumps: back to the minimum
    assert p.interval == 2
    p.tick(True)
    assert not p.may_trigger()  # right after a key frame
    p.tick(False)
    assert p.may_trigger()  # min_interval 2: frames k and k+2 may both be key frames
    with pytest.raises(ValueError):
        KeyFramePolicy(min_interval=5, start_interval=2)


def test_distill_needs_a_teacher():
    with pytest.raises(RuntimeError, match="teacher"):
        DistillProposer().propose([_scene(0)[0]])


def test_distill_on_a_clip_with_real_detector(yolov5n, coco128):
    # A person photo that slides across a grey canvas: a moving scene with a real detector.
    person = coco128[0].image
    ph, pw = person.shape[:2]
    person = person[: ph // 2, : pw // 2]
    frames = []
    for t in range(24):
        canvas = np.full((360, 480, 3), 114, np.uint8)
        x = 4 * t
        h, w = min(person.shape[0], 360), min(person.shape[1], 480 - x)
        canvas[:h, x : x + w] = person[:h, :w]
        frames.append(canvas)
    fast = argos.wrap(yolov5n, proposer="distill", executor="masked",
                      proposer_kwargs={"policy": KeyFramePolicy(min_interval=2, max_interval=6, start_interval=3)})
    keys = []
    for f in frames:
        d = fast(f)
        keys.append(fast.last_stats.key_frames)
        assert isinstance(d, argos.Detections)
    p = fast.proposer
    assert keys[0] == 1 and p.frames == 24
    assert 0 < p.teacher_fraction < 1
    assert p.teacher_fraction == pytest.approx(sum(keys) / 24)
    # On a key frame argos returns the teacher's own output.
    fast.proposer.reset()
    first = fast(frames[0])
    (ref,) = yolov5n.predict([frames[0]])
    assert torch.equal(first.labels, ref.labels) and torch.allclose(first.boxes, ref.boxes)
    assert fast.last_stats.detector_ms > 0 and fast.last_stats.gflops > 1
