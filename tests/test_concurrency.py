"""Threads and repeatability: a Wrapped called from several threads, streams kept apart, and the
same detections from the same input and configuration for every proposer x executor."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

import numpy as np
import pytest
import torch

import argos
from argos.adapters.yolov5 import YOLOv5Adapter
from argos.structures import Detections


def _frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> List[np.ndarray]:
    """A street-like sequence: textured background, a few blocks moving right."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(90, 160, (h, w, 3), dtype=np.uint8)
    out = []
    for k in range(n):
        f = bg.copy()
        for j, (x, y) in enumerate(((8, 20), (60, 50), (90, 10))):
            x0 = x + 4 * k
            f[y : y + 24, x0 : x0 + 12] = (30 + 40 * j, 200 - 50 * j, 90)
        out.append(f)
    return out


def _adapter(seed: int = 0) -> YOLOv5Adapter:
    """A random network whose class biases are raised so it finds hundreds of boxes: any mix-up
    between calls shows."""
    torch.manual_seed(seed)
    adapter = YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=128, conf=0.05)
    for m in adapter.module.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 80 and m.bias is not None:
            m.bias.data.fill_(-2.0)  # the class logits: sigmoid(-2) ~ 0.12, above conf
    return adapter


def _same(a: Detections, b: Detections) -> bool:
    return (a.image_size == b.image_size and torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
            and torch.equal(a.labels, b.labels))


@pytest.mark.parametrize("executor", ["masked", "packed_crops"])
def test_four_threads_on_one_wrapped_match_serial_calls(executor):
    frames = _frames(8)
    fast = argos.wrap(_adapter(), "oracle", executor)
    targets = [{"boxes": [[4, 16, 40, 48], [56, 44, 100, 80]]}] * len(frames)
    serial = [fast(f, targets=t) for f, t in zip(frames, targets)]
    assert sum(len(d) for d in serial) > 0
    # Count the calls inside the network at once: the adapter lock must keep it at one.
    forward, inside, most = fast.adapter.forward, [0], [0]

    def counted(batch):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.01)
        try:
            return forward(batch)
        finally:
            inside[0] -= 1

    fast.adapter.forward = counted
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda ft: fast(ft[0], targets=ft[1]), zip(frames, targets)))
    assert all(_same(a, b) for a, b in zip(serial, threaded))
    assert most[0] == 1


def test_a_stateful_proposer_refuses_a_second_concurrent_stream():
    fast = argos.wrap(_adapter(), "motion", "masked")
    propose = fast.proposer.propose
    inside = threading.Event()

    def slow(images, targets=None):
        inside.set()
        time.sleep(0.5)
        return propose(images, targets)

    fast.proposer.propose = slow
    frames = _frames(2)
    errors: List[BaseException] = []
    first = threading.Thread(target=lambda: fast(frames[0]))
    first.start()
    assert inside.wait(10)
    try:
        fast(frames[1])
    except RuntimeError as err:
        errors.append(err)
    first.join()
    assert len(errors) == 1 and "for_stream()" in str(errors[0]) and "MotionProposer" in str(errors[0])
    fast.proposer.propose = propose
    fast(frames[1])  # once the first call is done, the same thread-free Wrapped works again


def test_for_stream_keeps_two_streams_apart_on_shared_weights():
    a_frames, b_frames = _frames(6, seed=1), _frames(6, seed=2)[::-1]
    adapter = _adapter()
    fast = argos.wrap(adapter, "motion", "packed_crops")
    # Serial references: each stream alone, from a fresh state.
    ref_a = [fast(f) for f in a_frames]
    fast.proposer.reset()
    ref_b = [fast(f) for f in b_frames]
    fast.proposer.reset()
    other = fast.for_stream()
    assert other.adapter is adapter and other.proposer is not fast.proposer and other.executor is not fast.executor

    def play(w, frames):
        return [w(f) for f in frames]

    with ThreadPoolExecutor(2) as pool:
        got_a, got_b = pool.map(play, (fast, other), (a_frames, b_frames))
    assert all(_same(x, y) for x, y in zip(ref_a, got_a))
    assert all(_same(x, y) for x, y in zip(ref_b, got_b))


def _targets(frames):
    return [{"boxes": [[4, 16, 40, 48], [56, 44, 100, 80]]} for _ in frames]


@pytest.mark.parametrize("executor", argos.list_executors())
@pytest.mark.parametrize("proposer", argos.list_proposers())
def test_same_input_same_config_same_detections(proposer, executor):
    frames = _frames(4)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        np.random.seed(0)
        fast = argos.wrap(_adapter(seed=0), proposer, executor)
        targets = _targets(frames) if fast.proposer.needs_targets else [None] * len(frames)
        runs.append([fast(f, targets=t) for f, t in zip(frames, targets)])
    assert sum(len(d) for d in runs[0]) > 0, "the check needs detections to compare"
    for a, b in zip(*runs):
        assert _same(a, b), f"{proposer} x {executor}: detections differ between two identical runs"


def test_wrapped_returns_freed_memory_every_trim_every_calls(monkeypatch):
    import importlib

    wrap_module = importlib.import_module("argos.wrap")

    calls = []
    monkeypatch.setattr(wrap_module, "release_free_memory", lambda: calls.append(1) or True)
    fast = argos.wrap(_adapter(), "full", "masked")
    fast.trim_every = 3
    frame = _frames(1)[0]
    for _ in range(7):
        fast(frame)
    assert len(calls) == 2  # after calls 3 and 6
    fast.trim_every = 0
    for _ in range(6):
        fast(frame)
    assert len(calls) == 2
