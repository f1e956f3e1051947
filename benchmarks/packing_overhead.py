"""Packing overhead of the ``packed_crops`` executor: ms per frame for 10 / 50 / 200 regions.

Times the executor's own work on a 640x480 frame, without the detector:

- ``plan``: proposal boxes -> margin, grid snap, merge, canvas-shape choice and packing;
- ``canvases``: letterbox the frame and copy the crops onto canvases;
- ``map back``: 300 detections per canvas (what conf 0.001 gives) -> crop assignment, border
  filter, class-aware NMS, original pixels.

Regions are random boxes (8-64 px wide, 16-96 px tall, like people in a street camera) drawn
anew for every run; each figure is the median over ``--runs`` runs after a warm-up. The
full-frame fallback is off (``fallback_ratio=inf``) so that every count is packed, however much
of the frame its regions cover. Run it on a
quiet machine with a fixed thread count; the figures are wall-clock.

    python benchmarks/packing_overhead.py --runs 500
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import numpy as np
import torch

from argos.executors.packed_crops import PackedCropsExecutor
from argos.structures import Detections, RegionProposals


class _ShapeOnlyAdapter:
    """What planning reads from an adapter (a YOLOv5-like one with a native-scale path)."""

    img_size, stride, pad_value, rect, iou, max_det = 640, 32, 114, True, 0.65, 300

    def __init__(self, img_size: int, native: bool) -> None:
        self.img_size = img_size
        if native:
            self.preprocess_native = lambda images: None


def random_regions(rng: np.random.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Tensor[n, 4] xyxy boxes inside an (h, w) frame."""
    bw = rng.integers(8, 65, n)
    bh = rng.integers(16, 97, n)
    x1 = rng.integers(0, w - bw + 1)
    y1 = rng.integers(0, h - bh + 1)
    return torch.tensor(np.stack([x1, y1, x1 + bw, y1 + bh], 1), dtype=torch.float32)


def random_detections(rng: np.random.Generator, hw, n: int = 300, nc: int = 80) -> Detections:
    h, w = hw
    xy = rng.uniform(0, 1, (n, 2)) * (w, h)
    wh = rng.uniform(4, 120, (n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, (w, h))], 1)
    return Detections(boxes, rng.uniform(0.001, 1, n), rng.integers(0, nc, n), hw)


def measure(
    n: int, runs: int, warmup: int, size, img_size: int, native: bool, seed: int, **ex_kwargs
) -> Dict[str, float]:
    """Median ms of each step for ``n`` regions per frame, and what the packing gave."""
    h, w = size
    rng = np.random.default_rng(seed)
    adapter = _ShapeOnlyAdapter(img_size, native)
    ex = PackedCropsExecutor(fallback_ratio=float("inf"), **ex_kwargs)
    frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    times: Dict[str, List[float]] = {"plan": [], "canvas build": [], "map back": []}
    crops, canvases, packed, fallback = [], [], [], 0
    for r in range(warmup + runs):
        boxes = random_regions(rng, n, h, w)
        props = [RegionProposals(torch.zeros(h, w, dtype=torch.bool), boxes)]  # planning reads the boxes only
        t0 = time.perf_counter()
        plan = ex.plan(adapter, [frame], props)
        t1 = time.perf_counter()
        canv = ex._canvases(adapter, [frame], plan) if plan.n_canvases else []
        t2 = time.perf_counter()
        dets = [random_detections(rng, plan.canvas_hw) for _ in canv]
        t3 = time.perf_counter()
        ex._map_back(adapter, plan, dets)
        t4 = time.perf_counter()
        if r < warmup:
            continue
        times["plan"].append((t1 - t0) * 1e3)
        times["canvas build"].append((t2 - t1) * 1e3)
        times["map back"].append((t4 - t3) * 1e3)
        fallback += plan.fallback[0]
        if plan.n_canvases:
            crops.append(len(plan.boxes))
            canvases.append(plan.n_canvases)
            frame_area = plan.geometry[0].input_size[0] * plan.geometry[0].input_size[1]
            packed.append(plan.n_canvases * plan.canvas_hw[0] * plan.canvas_hw[1] / frame_area)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["total"] = statistics.median([a + b + c for a, b, c in zip(*times.values())])
    out["crops"] = float(np.mean(crops)) if crops else 0.0
    out["canvases"] = float(np.mean(canvases)) if canvases else 0.0
    out["packed"] = float(np.mean(packed)) if packed else 1.0
    out["fallback"] = fallback / runs
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regions", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--runs", type=int, default=300, help="timed runs per region count (median)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"), help="frame size")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--strips", action="store_true", help="no native-scale path: canvases with long side img-size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"packed_crops overhead | frame {args.size[0]}x{args.size[1]} @ {args.img_size} | "
          f"{'strip' if args.strips else 'native'} canvases | median of {args.runs} runs | threads={args.threads}")
    print(f"{'regions':>8} {'plan ms':>8} {'canvas ms':>9} {'map ms':>7} {'total ms':>9} "
          f"{'crops':>6} {'canvases':>8} {'packed':>7} {'fallback':>8}")
    for n in args.regions:
        r = measure(n, args.runs, args.warmup, tuple(args.size), args.img_size, not args.strips, args.seed)
        print(f"{n:>8d} {r['plan']:>8.2f} {r['canvas build']:>9.2f} {r['map back']:>7.2f} {r['total']:>9.2f} "
              f"{r['crops']:>6.1f} {r['canvases']:>8.2f} {r['packed']:>7.3f} {r['fallback']:>8.2f}")
    print("plan = margin, snap, merge, canvas choice, packing; packed = canvas area / frame input area "
          "(packed frames); fallback = share of frames run whole")


if __name__ == "__main__":
    main()
