"""argos.streams / MultiStream: several cameras through one adapter, one executor call per tick.

References: each stream run alone through its own ``Wrapped`` (the full proposer must give the
same detections exactly), and the streams' own frame counts.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import argos


def _clip(path: Path, n: int, size, seed: int) -> Path:
    """A small synthetic street: a few dark blobs moving over a textured background."""
    rng = np.random.default_rng(seed)
    h, w = size
    bg = rng.integers(90, 160, (h, w, 3), np.uint8)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for k in range(n):
        f = bg.copy()
        for j in range(3):
            x = int((20 + 37 * j + 5 * k) % (w - 30))
            cv2.rectangle(f, (x, 20 + 25 * j), (x + 18, 60 + 25 * j), (30, 30 + 40 * j, 60), -1)
        vw.write(f)
    vw.release()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("streams")
    return [_clip(d / "a.mp4", 6, (120, 160), 0), _clip(d / "b.mp4", 4, (96, 192), 1), _clip(d / "c.mp4", 5, (120, 160), 2)]


@pytest.fixture(scope="module")
def adapter(yolov5n_weights):
    return argos.build_adapter(str(yolov5n_weights), img_size=192, conf=0.05)


def _alone(adapter, clip, proposer, executor, **kw):
    from argos.data.video import VideoReader

    w = argos.wrap(adapter, proposer, executor, **kw)
    return [w(f) for _, f in VideoReader(clip)]


@pytest.mark.parametrize("executor", ["masked", "packed_crops"])
def test_full_proposer_equals_each_stream_alone(adapter, clips, executor):
    ms = argos.streams(clips, argos.wrap(adapter, "full", executor))
    got = {k: [] for k in range(len(clips))}
    for tick in ms:
        for k, (_, _, d) in tick.items():
            got[k].append(d)
    for k, clip in enumerate(clips):
        ref = _alone(adapter, clip, "full", executor)
        assert len(got[k]) == len(ref)
        for a, b in zip(got[k], ref):  # the same detections, up to float rounding of a batched forward
            assert len(a) == len(b) and torch.equal(a.labels, b.labels)
            torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)
    assert sum(len(d) for d in got[0]) > 0


def test_streams_of_different_length_end_independently(adapter, clips):
    counts, ticks = {}, 0
    for tick in argos.streams(clips, argos.wrap(adapter, "temporal", "packed_crops")):
        ticks += 1
        for k, (index, frame, _) in tick.items():
            assert index == counts.get(k, 0)  # frames in order, none skipped or repeated
            counts[k] = index + 1
    assert counts == {0: 6, 1: 4, 2: 5} and ticks == 6


def test_one_proposer_state_per_stream(adapter, clips):
    base = argos.wrap(adapter, "temporal", "packed_crops")
    multi = argos.MultiStream(base, 3)
    proposers = [m.proposer for m in multi.members]
    assert len({id(p) for p in proposers}) == 3
    assert all(m.adapter is adapter and m.executor is base.executor for m in multi.members)
    frame = np.full((120, 160, 3), 120, np.uint8)
    multi.step({0: frame})  # only stream 0 advances
    assert multi.members[0].last_stats.images == 1
    assert multi.members[1].last_stats.images == 0


def test_one_executor_call_packs_every_stream(adapter, clips):
    """Oracle boxes in two streams: one plan (one detector call) holds the crops of both frames."""
    multi = argos.MultiStream(argos.wrap(adapter, "oracle", "packed_crops"), 2)
    a = np.full((120, 160, 3), 120, np.uint8)
    b = np.full((120, 160, 3), 100, np.uint8)
    box = {"boxes": torch.tensor([[70.0, 50.0, 78.0, 60.0]])}
    multi.step({0: a, 1: b}, targets={0: box, 1: box})
    plan = multi.members[0].executor.last_plan
    assert sorted(set(plan.frame_index.tolist())) == [0, 1] and not any(plan.fallback)
    assert plan.n_canvases >= 1
    assert all(len(m.last_proposals) == 1 for m in multi.members)


def test_a_source_that_fails_does_not_stop_the_others(adapter, clips, tmp_path):
    errors = {}
    bad = tmp_path / "missing.mp4"
    seen = set()
    for tick in argos.streams([clips[0], bad], argos.wrap(adapter, "full", "masked"), errors=errors):
        seen |= set(tick)
    assert seen == {0} and 1 in errors and "not found" in errors[1]
    with pytest.raises(FileNotFoundError):
        list(argos.streams([clips[0], bad], argos.wrap(adapter, "full", "masked")))


def test_bad_arguments(adapter):
    with pytest.raises(ValueError, match="at least one stream"):
        argos.MultiStream(argos.wrap(adapter, "full", "masked"), 0)
    with pytest.raises(TypeError, match="Wrapped"):
        argos.MultiStream(adapter, 2)
    multi = argos.MultiStream(argos.wrap(adapter, "full", "masked"), 2)
    with pytest.raises(IndexError, match="stream 5"):
        multi.step({5: np.zeros((32, 32, 3), np.uint8)})


def test_key_frames_of_several_streams_run_in_one_call_and_equal_each_stream_alone(adapter, clips):
    """Temporal streams of one frame size key-frame together: one forward of batch 2 on the first
    tick (the 96x192 stream gets its own call); every stream's detections equal it run alone."""
    calls = []
    forward = adapter.forward

    def spy(batch):
        calls.append(tuple(batch.shape))
        return forward(batch)

    adapter.forward = spy
    try:
        got = {k: [] for k in range(3)}
        first = True
        for tick in argos.streams(clips, argos.wrap(adapter, "temporal", "packed_crops")):
            if first:
                assert sorted(c[0] for c in calls) == [1, 2], calls  # two 120x160 key frames in one call
                first = False
            for k, (_, _, d) in tick.items():
                got[k].append(d)
    finally:
        adapter.forward = forward
    for k, clip in enumerate(clips):
        ref = _alone(adapter, clip, "temporal", "packed_crops")
        assert len(got[k]) == len(ref)
        for a, b in zip(got[k], ref):
            assert len(a) == len(b) and torch.equal(a.labels, b.labels)
            torch.testing.assert_close(a.boxes, b.boxes, atol=1e-2, rtol=1e-4)
