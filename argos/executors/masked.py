"""The thesis's setting: blank inactive pixels, run the full detector. Accuracy effect only."""
from __future__ import annotations

import time
from typing import List, Optional, Sequence

import numpy as np

from argos.adapters.base import Adapter
from argos.executors.base import Executor, check_background, is_segmentation, keep_inside
from argos.structures import Detections, RegionProposals

__all__ = ["MaskedExecutor"]


class MaskedExecutor(Executor):
    """Paints inactive pixels with the detector's padding grey, then runs the whole model.

    It saves no compute: it shows what a mask alone does to accuracy.

    Args:
        drop_outside: drop detections whose box centre lies on an inactive pixel.
        background: segmentation adapters: label of the pixels off the mask (always applied);
            ``None``: the adapter's ``ignore_index``. See :attr:`Executor.background`.
    """

    def __init__(self, drop_outside: bool = True, background: Optional[int] = None) -> None:
        super().__init__()
        self.drop_outside = drop_outside
        self.background = check_background(background)

    def run(self, adapter: Adapter, images: Sequence[np.ndarray], proposals: Sequence[RegionProposals]) -> List[Detections]:
        self._check(images, proposals)
        t0 = time.perf_counter()
        active = [i for i, p in enumerate(proposals) if bool(p.mask.any())]
        inputs = []
        for i in active:
            mask = proposals[i].mask.numpy()
            if mask.all():
                inputs.append(images[i])
            else:
                im = images[i].copy()
                im[~mask] = adapter.pad_value
                inputs.append(im)
        prep_ms = (time.perf_counter() - t0) * 1e3

        dets: List[Detections] = [self._empty_output(adapter, im.shape[:2]) for im in images]
        detector_ms, hws = 0.0, []
        if inputs:
            out, detector_ms, hws = self._timed_predict(adapter, inputs)
            for i, d in zip(active, out):
                dets[i] = d
        t1 = time.perf_counter()
        if is_segmentation(adapter):
            dets = [self._fill_outside(adapter, d, p.mask) for d, p in zip(dets, proposals)]
        elif self.drop_outside:
            dets = [keep_inside(d, p.mask) for d, p in zip(dets, proposals)]
        input_hw = hws[0] if hws else (0, 0)
        gflops_of = dict(zip(active, (adapter.flops(hw) for hw in hws)))
        self.last_stats = {
            "detector_ms": detector_ms,
            "overhead_ms": prep_ms + (time.perf_counter() - t1) * 1e3,
            "gflops": [gflops_of.get(i, 0.0) for i in range(len(images))],
            "input_hw": input_hw,
        }
        return dets
