"""count_gflops against hand-counted MACs, and the bookkeeping time that timers leave out."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

import argos
from argos.metrics.flops import count_gflops, counting_ms


def test_count_gflops_hand_counted():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2))
    # conv1: 8 x 16 x 16 outputs x 3*3*3 MACs; conv2: 4 x 8 x 8 outputs x 8 MACs.
    macs = 8 * 16 * 16 * 27 + 4 * 8 * 8 * 8
    assert count_gflops(net, (1, 3, 16, 16)) == pytest.approx(2 * macs / 1e9)


def test_counting_time_is_recorded():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    before = counting_ms()
    t0 = time.perf_counter()
    count_gflops(net, (1, 3, 64, 64))
    wall = (time.perf_counter() - t0) * 1e3
    assert 0 < counting_ms() - before <= wall + 1e-6


def test_wrapped_times_leave_out_flop_counting():
    """A new input shape makes the executor's stats count FLOPs (a forward): not in total_ms."""
    torch.manual_seed(0)
    fast = argos.wrap("yolov5", "full", "masked", cfg="yolov5nu.yaml", img_size=128)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    before = counting_ms()
    t0 = time.perf_counter()
    fast(image)
    wall = (time.perf_counter() - t0) * 1e3
    counted = counting_ms() - before
    assert counted > 0, "first call at a new shape counts FLOPs"
    assert fast.last_stats.total_ms <= wall - counted + 1e-6
