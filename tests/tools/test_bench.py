"""tools.bench: the interleaved meter behind ``argos bench``."""
from __future__ import annotations

import pytest


def test_meter_counts_what_a_dynamic_model_executed():
    """DynConv's cost depends on its gates: the baseline GFLOPs are what its last forward ran."""
    import numpy as np
    import torch

    import argos
    from argos.tools.bench import _Meter

    torch.manual_seed(0)
    fast = argos.wrap("dynconv", "full", "masked", depth=18, img_size=128, conf=0.25)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    meter = _Meter(fast)
    for i in range(2):  # both orders of baseline and argos
        meter.step(i, image, None)
        ran = fast.adapter.last_gflops[0]
        batch, _ = fast.adapter.preprocess([image])
        dense = fast.adapter.flops(tuple(batch.shape[-2:]))
        assert meter.gflops["baseline"][i] == pytest.approx(ran)
        assert ran < dense
